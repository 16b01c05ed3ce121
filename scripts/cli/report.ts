/**
 * How the CLI speaks: results on stdout (a table, or JSON with --json), problems on stderr as one
 * line that says what was wrong and where, with a non-zero exit. A stack trace (and the causes) is
 * printed only with --debug or VMDR_DEBUG=1, whatever the error: an operator mid-incident reads the
 * line, a developer asks for the rest.
 */
import { VmdrError } from '../../hypervisors/errors.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface OutputOptions {
  json?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Aligned columns for a terminal; every cell is already a string. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

/** Set by --debug (or by the operator): print stack traces and causes. */
export const debugging = (): boolean => !['', '0', undefined].includes(process.env.VMDR_DEBUG);

export function reportError(err: unknown, options: OutputOptions): number {
  if (err instanceof VmdrError) {
    if (options.json) {
      process.stderr.write(`${JSON.stringify({ error: err.toJSON() })}\n`);
    } else {
      const remedy = err.remedy ? ` (${err.remedy})` : '';
      process.stderr.write(`vmdr: ${err.message}${remedy}\n`);
    }
  } else {
    // Not one of vmdr's errors: a bug. Say so in one line, and how to see where it happened.
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    if (options.json) process.stderr.write(`${JSON.stringify({ error: { code: 'INTERNAL', message } })}\n`);
    else process.stderr.write(`vmdr: internal error: ${message}${debugging() ? '' : ' (a bug in vmdr; --debug shows where)'}\n`);
  }
  if (debugging()) process.stderr.write(`${err instanceof Error ? `${err.stack}\n${causeChain(err)}` : ''}`);
  return EXIT_FAILURE;
}

function causeChain(err: Error): string {
  let text = '';
  for (let cause = err.cause; cause instanceof Error; cause = cause.cause) text += `caused by: ${cause.stack}\n`;
  return text;
}

/** Runs a command handler, turning what it throws into one line and an exit code. */
export async function run(options: OutputOptions, handler: () => Promise<void>): Promise<void> {
  try {
    await handler();
  } catch (err) {
    process.exitCode = reportError(err, options);
  }
}
