/**
 * Waiting for a vSphere task (what every *_Task method returns): its progress through the
 * project's one Progress shape, its result, or its error as vmdr's typed error; an aborted wait
 * asks the server to cancel the task.
 */
import type { Progress, ProgressSubject } from '../types.js';
import { errorOfFault } from './faults.js';
import { retrieve } from './property-collector.js';
import type { VsphereSession } from './session.js';
import { faultOfTaskError, type MoRef } from './soap.js';

export interface WaitForTaskOptions {
  signal?: AbortSignal;
  onProgress?: (progress: Progress) => void;
  /** The progress events' phase (`power on`, `reconfigure`). */
  phase: string;
  subject?: ProgressSubject;
  /** First poll interval; it grows to 1 s. Default 100 ms. */
  intervalMs?: number;
}

interface TaskInfo {
  state: 'queued' | 'running' | 'success' | 'error';
  progress?: string;
  result?: unknown;
  error?: unknown;
  name?: string;
  descriptionId?: string;
  entityName?: string;
}

const MAX_INTERVAL_MS = 1000;

/** The task's result (`info.result`, parsed) once it succeeded. */
export async function waitForTask(session: VsphereSession, task: MoRef, options: WaitForTaskOptions): Promise<unknown> {
  const { signal, onProgress, phase, subject } = options;
  const report = (done: number) => onProgress?.({ phase, unit: 'steps', done, total: 100, ...(subject ? { subject } : {}) });
  let interval = options.intervalMs ?? 100;
  let reported = -1;
  for (;;) {
    if (signal?.aborted) await cancel(session, task, signal.reason);
    const [found] = await retrieve(session, { type: 'Task', paths: ['info'], objects: [task] });
    const info = found?.props.info as TaskInfo | undefined;
    if (!info) throw new Error(`task ${task.value} has no info`);
    if (info.state === 'success') {
      report(100);
      return info.result;
    }
    if (info.state === 'error') {
      const operation = info.name ?? info.descriptionId ?? phase;
      throw errorOfFault(faultOfTaskError(info.error), {
        host: session.endpoint.host,
        operation,
        ...(subject?.vm ?? info.entityName ? { vm: subject?.vm ?? info.entityName } : {}),
      });
    }
    const progress = Math.min(99, Math.max(0, Number(info.progress ?? 0) || 0));
    if (progress !== reported) {
      reported = progress;
      report(progress);
    }
    await sleep(interval, signal);
    interval = Math.min(MAX_INTERVAL_MS, interval * 2);
  }
}

/** Asks the server to cancel (a task that cannot be cancelled any more runs to its end there), then rethrows the abort. */
async function cancel(session: VsphereSession, task: MoRef, reason: unknown): Promise<never> {
  await session.call('CancelTask', task, {}, { timeoutMs: 10_000 }).catch(() => undefined);
  throw reason;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
