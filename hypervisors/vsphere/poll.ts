/**
 * The one deadline loop of the vSphere adapter: asks `check` at a short interval until it gives a
 * value, the deadline passes or the signal aborts. vSphere has no event vmdr listens to for what
 * it waits on here (a guest's shutdown, Tools starting, vCenter's Network object for a new port
 * group), so it asks.
 */
const DEFAULT_INTERVAL_MS = 500;

/** The first value `check` gives that is not undefined, or undefined at the deadline; an abort rejects with the signal's reason. */
export async function poll<T>(check: () => Promise<T | undefined>, options: { deadline: number; signal?: AbortSignal; intervalMs?: number }): Promise<T | undefined> {
  const { deadline, signal } = options;
  for (;;) {
    signal?.throwIfAborted();
    const value = await check();
    if (value !== undefined) return value;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await sleep(Math.min(options.intervalMs ?? DEFAULT_INTERVAL_MS, left), signal);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
