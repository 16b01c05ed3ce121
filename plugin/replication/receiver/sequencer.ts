/**
 * One operation per key at a time, in arrival order (vscode's SequencerByKey): a protection's
 * cycles and its retention merges take turns in the receiver instead of failing each other with
 * REPLICA_BUSY. Other protections are not held up.
 */
export class SequencerByKey {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Resolves once everything queued so far has settled (a daemon's shutdown waits for it). */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.all(this.tails.values());
  }
}
