/**
 * A long operation's answer over HTTP, both ends: NDJSON, a `{progress}` line now and then (a
 * heartbeat while the work says nothing, so idle timeouts on the way keep the connection), then
 * one `{result}` or `{error, userError}` line. One shape for a site's endpoint (source-site routes)
 * and for a host's own control socket (`vmdr sync` handed to `vmdr serve`); and any answer read
 * whole within a bound (readAll), here so the hand-over loads no HTTPS client.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';

export const NDJSON = 'application/x-ndjson';
/** A line every so often while an operation says nothing, well inside an endpoint's 60 s. */
const HEARTBEAT_MS = 15_000;

/** `notice`: something the work tells as it happens, before its result (the watch's notices). */
export type AnswerLine<T = unknown> = { progress?: Progress; notice?: unknown; result?: T; error?: { code: string; message: string; [k: string]: unknown }; userError?: boolean };

export interface StreamedWork<T> {
  /** The heartbeat's progress line. */
  waiting: () => Progress;
  /** Why the work is aborted when the caller closes the connection. */
  gone: () => Error;
  /** The answer's last line for a failure. */
  errorLine: (err: unknown) => AnswerLine;
  work: (tools: { signal: AbortSignal; onProgress: (progress: Progress) => void; onNotice: (notice: unknown) => void }) => Promise<T>;
}

/** Runs `work`, answering on `res` as it goes; never rejects (a failure is the answer's last line). */
export async function answerStreamed<T>(res: ServerResponse, streamed: StreamedWork<T>): Promise<void> {
  res.writeHead(200, { 'content-type': NDJSON });
  const line = (value: AnswerLine) => res.write(`${JSON.stringify(value)}\n`);
  const gone = new AbortController();
  // The caller gave up (or its host went away): what it asked for stops.
  res.on('close', () => gone.abort(streamed.gone()));
  let last = Date.now();
  const onProgress = (progress: Progress) => {
    last = Date.now();
    line({ progress });
  };
  const onNotice = (notice: unknown) => {
    last = Date.now();
    line({ notice });
  };
  const heartbeat = setInterval(() => {
    if (Date.now() - last >= HEARTBEAT_MS) onProgress(streamed.waiting());
  }, HEARTBEAT_MS / 3);
  try {
    line({ result: await streamed.work({ signal: gone.signal, onProgress, onNotice }) });
  } catch (err) {
    line(streamed.errorLine(err));
  } finally {
    clearInterval(heartbeat);
    res.end();
  }
}

/**
 * The answer's lines, each parsed, as they arrive. A line longer than `maxLineBytes`, or one that
 * is not JSON, is `invalid(reason)`: a bounded reader, whoever sends.
 */
export async function* readLines(res: IncomingMessage, maxLineBytes: number, invalid: (reason: string, cause?: unknown) => Error): AsyncGenerator<unknown> {
  const parse = (text: string) => {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw invalid('something that is not JSON', err);
    }
  };
  let rest = '';
  for await (const chunk of res) {
    rest += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line) yield parse(line);
    }
    if (rest.length > maxLineBytes) {
      res.destroy();
      throw invalid(`a line longer than ${maxLineBytes} bytes`);
    }
  }
  if (rest.trim()) yield parse(rest);
}

/** The result of an answer read by `readLines`: progress goes to `onProgress`, notices to `onNotice`, an error line is thrown as the typed error it was. */
export async function resultOf<T>(lines: AsyncIterable<unknown>, onProgress: ((progress: Progress) => void) | undefined, ended: () => Error, onNotice?: (notice: unknown) => void): Promise<T> {
  for await (const raw of lines) {
    const line = raw as AnswerLine<T>;
    if (line.progress) onProgress?.(line.progress);
    else if (line.notice !== undefined) onNotice?.(line.notice);
    else if (line.error) throw rebuildError(line.error, line.userError ?? true);
    else if ('result' in line) return line.result as T;
  }
  throw ended();
}

/** An error sent as JSON ({code, message, remedy, libvirt: {...}, ...subject}) as the typed error it was, same code. */
export function rebuildError(error: { code: unknown; message: unknown; [k: string]: unknown }, userError: boolean): VmdrError {
  const { code, message, remedy, libvirt, ...subject } = error;
  if (typeof code !== 'string' || typeof message !== 'string') throw new Error('no error');
  // The library's own numbers, kept (VmdrError takes them from its cause).
  const failure = libvirt as { code?: unknown; domain?: unknown } | undefined;
  const cause = typeof failure?.code === 'number' && typeof failure.domain === 'number' ? { libraryFailure: { library: 'libvirt', code: failure.code, domain: failure.domain } } : undefined;
  return new VmdrError(code, message, { subject: subject as Record<string, string>, ...(typeof remedy === 'string' ? { remedy } : {}), userError, ...(cause ? { cause } : {}) });
}

/** The whole answer, refused beyond `limit` bytes. */
export async function readAll(res: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.destroy();
      throw new VmdrError('PEER_ANSWER_INVALID', `an answer from ${res.url ?? 'a peer'} is larger than ${limit} bytes`, { userError: false });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
