/** Which config file a command line names, before yargs has parsed it (warm-up.ts). */

/** The config file a command reads when none is named. */
export const DEFAULT_CONFIG_FILE = './vmdr.yaml';

/** The --config the command line gives, or the default. */
export function configArgument(argv: readonly string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' && argv[i + 1] !== undefined) return argv[i + 1]!;
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return DEFAULT_CONFIG_FILE;
}
