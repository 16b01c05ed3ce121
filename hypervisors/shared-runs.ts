/**
 * Calls that ask for the same thing at once share one run: a plan's VMs making their one bubble
 * network together would otherwise race to create it twice. The run is forgotten once it settles,
 * so a later call does the work again (and finds it done).
 */
export class SharedRuns<T> {
  readonly #running = new Map<string, Promise<T>>();

  run(key: string, work: () => Promise<T>): Promise<T> {
    const pending = this.#running.get(key);
    if (pending) return pending;
    const started = work().finally(() => this.#running.delete(key));
    this.#running.set(key, started);
    return started;
  }
}
