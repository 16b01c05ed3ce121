/** The watch's lines in a `vmdr serve --json` log (startServe's events), and waiting for one of them. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServeProcess } from './vmdr-serve.js';

export interface WatchLine {
  event: 'watch';
  protection: string;
  state: string;
  detail: string | null;
  at: string;
}

/** The watch lines the daemon logged from its event `from` on. */
export function watchLines(serve: ServeProcess, from: number): WatchLine[] {
  return serve.events.slice(from).filter((e) => e.event === 'watch') as unknown as WatchLine[];
}

/** The first watch line in state `state` from event `from` on, within `timeoutMs`. */
export async function waitForWatchLine(serve: ServeProcess, from: number, state: string, timeoutMs: number): Promise<WatchLine> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(20)) {
    const e = watchLines(serve, from).find((x) => x.state === state);
    if (e) return e;
    assert.ok(Date.now() < deadline, `no watch ${state} within ${timeoutMs} ms: ${JSON.stringify(watchLines(serve, from))}`);
  }
}
