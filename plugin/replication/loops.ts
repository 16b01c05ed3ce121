/**
 * The daemon's replication loops, one per protection replicated from this host, kept in step with
 * the config it reloads: a protection added gets its loop, one removed loses it (its cycle in
 * flight is aborted: the replica stays at its newest committed point), one whose entry changed is
 * stopped and started again with the new entry. A loop whose entry did not change goes on as it was;
 * nor does a change of `bandwidth` alone stop it: its cycles read the limit from the live config
 * (plugin/replication/bandwidth/gate.ts), and a long cycle in flight is not thrown away for it.
 */
import type { Protection } from '../config/schema.js';

interface Loop {
  entry: string;
  stop: AbortController;
  done: Promise<void>;
}

export interface LoopChanges {
  started: string[];
  stopped: string[];
  restarted: string[];
}

/** What restarts a loop when it changes. */
const entryOf = (p: Protection) => JSON.stringify({ ...p, bandwidth: undefined });

export class ReplicationLoops {
  readonly #loops = new Map<string, Loop>();

  /** `run` replicates one protection until its signal aborts; a loop that fails is told to `onFailed` and stays ended. */
  constructor(
    private readonly run: (p: Protection, signal: AbortSignal) => Promise<void>,
    private readonly onFailed: (p: Protection, err: unknown) => void,
  ) {}

  /** Makes the running loops those of `protections`; resolves once the stopped ones ended. */
  async set(protections: readonly Protection[]): Promise<LoopChanges> {
    const wanted = new Map(protections.map((p) => [p.name, p]));
    const changes: LoopChanges = { started: [], stopped: [], restarted: [] };
    const ending: Promise<void>[] = [];
    for (const [name, loop] of this.#loops) {
      const p = wanted.get(name);
      if (p && entryOf(p) === loop.entry) continue;
      loop.stop.abort();
      ending.push(loop.done);
      this.#loops.delete(name);
      (p ? changes.restarted : changes.stopped).push(name);
    }
    // A restarted loop starts only once its old one ended: two loops of one protection never overlap.
    await Promise.allSettled(ending);
    for (const p of protections) {
      if (this.#loops.has(p.name)) continue;
      const stop = new AbortController();
      this.#loops.set(p.name, { entry: entryOf(p), stop, done: this.run(p, stop.signal).catch((err: unknown) => this.onFailed(p, err)) });
      if (!changes.restarted.includes(p.name)) changes.started.push(p.name);
    }
    return changes;
  }

  /** Stops every loop and waits for them to end. */
  async stopAll(): Promise<void> {
    const ending = [...this.#loops.values()].map((l) => (l.stop.abort(), l.done));
    this.#loops.clear();
    await Promise.allSettled(ending);
  }
}
