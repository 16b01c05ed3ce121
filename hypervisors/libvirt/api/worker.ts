/**
 * A thread that runs libvirt procedures for pool.ts, one at a time: a blocking libvirt call
 * (starting a VM, beginning a backup, waiting for an agent) holds this thread, never the event
 * loop of the process.
 */
import { parentPort } from 'node:worker_threads';
import { procedures, ProcedureFailed, type FailureDetail } from './procedures.js';

export interface Request {
  id: number;
  name: keyof typeof procedures;
  args: unknown[];
}

export type Reply = { id: number; value: unknown } | { id: number; failure: FailureDetail };
/** What the thread posts: once `ready` when it has loaded, then a Reply to each Request. */
export type ThreadMessage = Reply | { ready: true };

parentPort!.on('message', (request: Request) => {
  let reply: Reply;
  try {
    const fn = procedures[request.name] as (...args: unknown[]) => unknown;
    reply = { id: request.id, value: fn(...request.args) };
  } catch (err) {
    reply = {
      id: request.id,
      failure: err instanceof ProcedureFailed ? err.detail : { call: request.name, code: -1, domain: 0, message: err instanceof Error ? err.message : String(err) },
    };
  }
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ ready: true } satisfies ThreadMessage);
