/**
 * A pause that something can end early: a health wait sleeps until the thing it watches says it
 * changed (the console file was written, the hypervisor reported the VM) or, failing such news,
 * until its next look is due anyway. Why: looking every few tens of milliseconds at six booting
 * guests costs the CPU those guests boot on (docs/benchmarks.md, issue 11's failover section).
 */
export class Wakeup {
  private pending = false;
  private wake: (() => void) | undefined;

  /** Something changed: the current pause ends now, or the next one does not begin. */
  notify(): void {
    this.pending = true;
    this.wake?.();
  }

  /**
   * Resolves after `ms` at the latest, at once when notified since the last pause; rejects with the
   * signal's reason when it aborts.
   */
  pause(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.pending || signal?.aborted) {
      this.pending = false;
      return signal?.aborted ? Promise.reject(signal.reason) : Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const end = (err?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.wake = undefined;
        this.pending = false;
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = () => end(signal!.reason);
      const timer = setTimeout(end, Math.max(0, ms));
      this.wake = end;
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
