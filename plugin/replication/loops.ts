/**
 * The daemon's replication loops, kept in step with the config it reloads: one per protection
 * replicated from this host, except a consistency group's members, which have none of their own:
 * their group has one (keyed `group:NAME`), run by the daemon of the group's coordinating site
 * (config/consistency-groups.ts coordinatorSite). A loop added gets started, one removed stopped
 * (its cycle in flight is aborted: the replica stays at its newest committed point), one whose
 * entry changed (a member's entry changes its group's) is stopped and started again. A loop whose
 * entry did not change goes on as it was; nor does a change of `bandwidth` alone stop it: its
 * cycles read the limit from the live config (plugin/replication/bandwidth/gate.ts), and a long
 * cycle in flight is not thrown away for it.
 *
 * Every stopped loop ends before any new one starts: a protection moved into a group loses its own
 * loop before its group's loop captures it, so two loops never capture one VM at once.
 */
import { coordinatorSite } from '../config/consistency-groups.js';
import type { Config, ConsistencyGroup, Protection } from '../config/schema.js';
import { isLocalSite } from '../sites/connections.js';

/** What one loop replicates: one protection, or a consistency group's members. */
export interface LoopUnit {
  /** The protection's name, or `group:NAME`. */
  key: string;
  protections: Protection[];
  group?: ConsistencyGroup;
}

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
const entryOf = (u: LoopUnit) => JSON.stringify({ group: u.group, protections: u.protections.map((p) => ({ ...p, bandwidth: undefined })) });

/**
 * The loops of this host: `replicated` (the protections whose source is here) each in its own
 * loop unless it is a group's member, and a loop per group whose coordinating site is `site`
 * (every group when `site` is undefined: the daemon serves every site).
 */
export function loopUnits(config: Config, replicated: readonly Protection[], site: string | undefined): LoopUnit[] {
  const members = new Set(config.consistencyGroups.flatMap((g) => g.protections));
  const byName = new Map(config.protections.map((p) => [p.name, p]));
  return [
    ...replicated.filter((p) => !members.has(p.name)).map((p) => ({ key: p.name, protections: [p] })),
    ...config.consistencyGroups
      // A group's loop runs on its coordinating site only (group-cycle.ts refuses elsewhere).
      .filter((g) => {
        const coordinator = coordinatorSite(g, config.protections);
        return (site === undefined || coordinator === site) && isLocalSite(config, coordinator);
      })
      .map((g) => ({ key: `group:${g.name}`, group: g, protections: g.protections.map((m) => byName.get(m)!) })),
  ];
}

export class ReplicationLoops {
  readonly #loops = new Map<string, Loop>();

  /** `run` replicates one unit until its signal aborts; a loop that fails is told to `onFailed` and stays ended. */
  constructor(
    private readonly run: (u: LoopUnit, signal: AbortSignal) => Promise<void>,
    private readonly onFailed: (u: LoopUnit, err: unknown) => void,
  ) {}

  /** Makes the running loops those of `units`; resolves once the stopped ones ended. */
  async set(units: readonly LoopUnit[]): Promise<LoopChanges> {
    const wanted = new Map(units.map((u) => [u.key, u]));
    const changes: LoopChanges = { started: [], stopped: [], restarted: [] };
    const ending: Promise<void>[] = [];
    for (const [key, loop] of this.#loops) {
      const u = wanted.get(key);
      if (u && entryOf(u) === loop.entry) continue;
      loop.stop.abort();
      ending.push(loop.done);
      this.#loops.delete(key);
      (u ? changes.restarted : changes.stopped).push(key);
    }
    // A new or restarted loop starts only once the stopped ones ended: two loops of one VM never overlap.
    await Promise.allSettled(ending);
    for (const u of units) {
      if (this.#loops.has(u.key)) continue;
      const stop = new AbortController();
      this.#loops.set(u.key, { entry: entryOf(u), stop, done: this.run(u, stop.signal).catch((err: unknown) => this.onFailed(u, err)) });
      if (!changes.restarted.includes(u.key)) changes.started.push(u.key);
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
