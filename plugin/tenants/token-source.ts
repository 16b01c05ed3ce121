/**
 * Where a client (the CLI driving a daemon, a script) takes its token from: the environment
 * (VMDR_TOKEN) or a file only its owner can read (VMDR_TOKEN_FILE, or --token-file). Never from a
 * flag's value: argv is readable by every user of the host (ps, /proc/PID/cmdline) and lands in
 * shell histories.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { TokenSourceRefused } from './token-errors.js';
import { parseToken } from './tokens.js';

/** A token is 61 characters; a file much larger holds something else. */
const MAX_TOKEN_FILE_BYTES = 4096;

/**
 * The token to send, or undefined when none is configured. `tokenFile` (the --token-file option)
 * wins over the environment; VMDR_TOKEN and VMDR_TOKEN_FILE both set is refused rather than
 * guessed between. What is refused is said in one line that never holds the token.
 */
export async function readTokenFromEnvironment(options: { tokenFile?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string | undefined> {
  const env = options.env ?? process.env;
  if (options.tokenFile !== undefined) return readTokenFile(options.tokenFile, '--token-file');
  const inline = env.VMDR_TOKEN;
  const file = env.VMDR_TOKEN_FILE;
  if (inline && file) {
    throw new TokenSourceRefused('TOKEN_SOURCE_AMBIGUOUS', 'both VMDR_TOKEN and VMDR_TOKEN_FILE are set: which token is meant?', {}, 'unset one of them');
  }
  if (file) return readTokenFile(file, 'VMDR_TOKEN_FILE');
  if (inline) return checked(inline.trim(), 'VMDR_TOKEN');
  return undefined;
}

async function readTokenFile(file: string, from: string): Promise<string> {
  let text: string;
  try {
    // The mode is read from the file that was opened, not from its path a moment earlier.
    const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new TokenSourceRefused('TOKEN_FILE_UNREADABLE', `token file ${file} (${from}) is not a regular file`, { file });
      if (st.mode & 0o077) {
        throw new TokenSourceRefused(
          'TOKEN_FILE_UNSAFE',
          `token file ${file} (${from}) has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: only its owner may have access to it, so it is not used`,
          { file },
          `chmod 600 ${file}, and make a new token if others may have read this one`,
        );
      }
      if (st.size > MAX_TOKEN_FILE_BYTES) throw new TokenSourceRefused('TOKEN_SOURCE_INVALID', `token file ${file} (${from}) is larger than a token`, { file });
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof TokenSourceRefused) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new TokenSourceRefused('TOKEN_FILE_UNREADABLE', `token file ${file} (${from}): ${why}`, { file });
  }
  return checked(text.trim(), `token file ${file} (${from})`, { file });
}

/** Refuses what is not a vmdr token here, before it is sent anywhere; the message never holds it. */
function checked(token: string, source: string, subject: { file?: string } = {}): string {
  if (!parseToken(token)) {
    throw new TokenSourceRefused('TOKEN_SOURCE_INVALID', `${source} does not hold a vmdr token (vmdr_<id>_<secret>, as \`vmdr token create\` printed it)`, subject);
  }
  return token;
}
