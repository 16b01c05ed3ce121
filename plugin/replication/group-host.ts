/**
 * One source host's members in one consistency group cycle (group-cycle.ts drives every host's):
 * each member's own cycle (sync.ts) runs up to the moment it would begin its backup and waits at
 * `capture`; then, each step asked by the group's coordinating site, the host pauses (freezes)
 * its members, begins their backups, and resumes (thaws) them; each then ships as its own cycle
 * does. The same object runs on the coordinating host for its own members and, in a peer site's
 * `vmdr serve`, for that site's members (plugin/sites/group-routes.ts).
 *
 * Whatever the coordinator does, a hold here ends by itself `pauseTimeout` after it began (the
 * coordinator may have died mid-window): the members are resumed, and those not yet captured
 * fail, so their instant never becomes a group point. So does a member whose hold another vmdr
 * process released first (this process overran the hold's deadline: GroupHoldBroken): it may
 * have been captured after it ran again.
 */
import type { BackupSession, QuiesceResult } from '../../hypervisors/types.js';
import { Unsupported, VmdrError } from '../../hypervisors/errors.js';
import type { ConsistencyGroup, Protection } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { releaseHoldsBeforeCycle } from './left-holds.js';
import type { ReceiverClient } from './sender/receiver-client.js';
import { syncProtection, type SyncOptions, type SyncResult } from './sync.js';

/** A member that is not running, and why (said with its site when the group spans several). */
export interface MemberDown {
  protection: string;
  why: string;
}

/** How a member's cycle ended: its result, or its error. */
export interface MemberOutcome {
  protection: string;
  result?: SyncResult;
  error?: { code: string; message: string };
}

/**
 * One host's members in a group cycle, as the coordinator drives them: here (HostMembers) or
 * through the host's endpoint (plugin/sites/group-client.ts). Each step resolves when done.
 */
export interface GroupHost {
  readonly site: string;
  readonly members: readonly Protection[];
  /** The members not running now (onMemberDown), a host that does not answer counting as all down. */
  down(): Promise<MemberDown[]>;
  /** Starts the members' cycles; resolves once every one waits at its capture, rejects when one fails before. */
  arrive(): Promise<void>;
  /** Pauses (freezes) the members; resolves with those it did not take. */
  hold(): Promise<MemberDown[]>;
  /** Begins every member's backup (each member's failure is its own outcome). */
  begin(): Promise<void>;
  /** Resumes (thaws) the members; resolves with what went wrong without failing the cycle. */
  release(): Promise<string[]>;
  /** The members still waiting are let go uncaptured (and a hold ended). */
  abort(why: Error): void;
  /** Every member's outcome, once each shipped or failed. */
  outcomes(): Promise<MemberOutcome[]>;
}

/** A member waiting in the window was let go uncaptured: another could not come, or the window closed. */
export class GroupWindowAborted extends VmdrError {
  constructor(group: string, why: string) {
    super('GROUP_WINDOW_ABORTED', `consistency group "${group}": not captured: ${why}`, { subject: { group } });
  }
}

/** A member's pause (freeze) was released by another vmdr process before its capture was known to be inside it. */
export class GroupHoldBroken extends VmdrError {
  constructor(group: string, protection: string, why: string) {
    super('GROUP_HOLD_BROKEN', `consistency group "${group}": member "${protection}" not captured at the group's instant: ${why}`, {
      subject: { group, protection },
      remedy: "the member's next cycle ships from its last point; a hold overruns its deadline when the hypervisor is slow to answer (a stalled libvirtd, a loaded host)",
    });
  }
}

export interface HostDeps {
  sites: SiteConnections;
  state: StateStore;
  /** The member's receiver client (its DR site's). */
  receiverOf(p: Protection): ReceiverClient;
}

type Arrival = { protection: Protection; begin: () => Promise<BackupSession>; resolve: (s: BackupSession) => void; reject: (e: unknown) => void };
type Begun = { ok: true; s: BackupSession } | { ok: false; e: unknown };
type Hold = { held: Set<string>; refused?: ReadonlyMap<string, string>; close: () => Promise<Map<string, QuiesceResult | { pausedMs: number; error?: string; broken?: string }>> };

/** Why a member's hold was not this process's any more at its release, if it was not. */
function brokenHold(q: QuiesceResult | { pausedMs: number; broken?: string } | undefined): string | undefined {
  if (!q) return undefined;
  return 'consistency' in q ? (q.issue?.code === 'hold-broken' ? q.issue.message : undefined) : q.broken;
}

export class HostMembers implements GroupHost {
  readonly #arrivals: Arrival[] = [];
  #runs: Promise<SyncResult>[] | undefined;
  #allArrived!: () => void;
  readonly #arrived = new Promise<void>((resolve) => (this.#allArrived = resolve));
  /** Set once the members may no longer be captured: a later arrival or begin is refused with it. */
  #over: Error | undefined;
  #hold: Hold | undefined;
  #closed: ReturnType<Hold['close']> | undefined;
  #begun: Map<Arrival, Begun> | undefined;
  #expiry: NodeJS.Timeout | undefined;
  /** What releasing left holds on this host said, once per cycle; reported with the release's warnings. */
  #released: string[] | undefined;

  constructor(
    readonly group: ConsistencyGroup,
    readonly site: string,
    readonly members: readonly Protection[],
    private readonly deps: HostDeps,
    private readonly instant: string,
    private readonly options: Pick<SyncOptions, 'signal' | 'onProgress'> = {},
    /** Said in a member's failure when this host closed the window by itself. */
    private readonly label = `site "${site}"`,
  ) {}

  async down(): Promise<MemberDown[]> {
    // A member a dead vmdr process left paused or frozen runs again before the group looks at it (left-holds.ts).
    if (!this.#released) {
      const tracker = (await this.deps.sites.adapter(this.site)).changeTracker;
      this.#released = tracker ? await releaseHoldsBeforeCycle(tracker) : [];
    }
    return membersDown(this.deps.sites, this.site, this.members);
  }

  arrive(): Promise<void> {
    const capture = (protection: Protection) => (begin: () => Promise<BackupSession>) =>
      new Promise<BackupSession>((resolve, reject) => {
        if (this.#over) return reject(this.#over);
        this.#arrivals.push({ protection, begin, resolve, reject });
        if (this.#arrivals.length === this.members.length) this.#allArrived();
      });
    this.#runs ??= this.members.map((p) =>
      syncProtection(p, { sites: this.deps.sites, state: this.deps.state, receiver: this.deps.receiverOf(p) }, { ...this.options, group: { instant: this.instant, capture: capture(p) } }),
    );
    // A member that fails before it reaches the window fails the arrival.
    const firstFailure = Promise.race(this.#runs.map((r) => r.then(() => new Promise<never>(() => undefined))));
    return Promise.race([this.#arrived, firstFailure]);
  }

  async hold(): Promise<MemberDown[]> {
    if (this.#over) throw this.#over;
    const tracker = (await this.deps.sites.adapter(this.site)).changeTracker;
    if (!tracker) throw new Unsupported('changed-block tracking', this.site);
    const vms = this.members.map((p) => p.source.vm);
    const bound = { timeoutMs: this.group.pauseTimeout };
    const hold: Hold =
      this.group.consistency === 'application'
        ? await tracker.freezeGuests(vms, bound).then((f) => ({ held: new Set(f.frozen), close: () => f.thaw() }))
        : await tracker.pauseVms(vms, bound).then((p) => ({ held: new Set(p.paused), refused: p.refused, close: () => p.resume() }));
    // Bounded here: a coordinator that never asks for the release (it died) does not keep the VMs held.
    this.#expiry = setTimeout(() => this.#end(new GroupWindowAborted(this.group.name, `${this.label} ended the window by itself after ${this.group.pauseTimeout} ms (pauseTimeout): the coordinating site did not close it`)), this.group.pauseTimeout);
    this.#hold = hold;
    if (this.#over) await this.#release();
    const held = this.group.consistency === 'application' ? 'frozen' : 'paused';
    return this.members
      .filter((p) => !hold.held.has(p.source.vm))
      .map((p) => ({ protection: p.name, why: `VM ${JSON.stringify(p.source.vm)} was not ${held}${hold.refused?.get(p.source.vm) ? ` (${hold.refused.get(p.source.vm)})` : ''}` }));
  }

  async begin(): Promise<void> {
    if (this.#over) throw this.#over;
    const begun = new Map<Arrival, Begun>();
    this.#begun = begun;
    await Promise.all(
      this.#arrivals.map((a) =>
        a.begin().then(
          (s) => {
            // Begun after the window closed: outside the instant, ended at once.
            if (this.#over || this.#closed) return void this.#drop(a, s);
            begun.set(a, { ok: true, s });
          },
          (e: unknown) => void begun.set(a, { ok: false, e }),
        ),
      ),
    );
  }

  async release(): Promise<string[]> {
    const closed = await this.#release();
    const warnings: string[] = [...(this.#released ?? [])];
    for (const c of closed.values()) if ('error' in c && c.error) warnings.push(c.error);
    return warnings;
  }

  abort(why: Error): void {
    this.#end(why);
  }

  async outcomes(): Promise<MemberOutcome[]> {
    const settled = await Promise.allSettled(this.#runs ?? []);
    return settled.map((s, i) => (s.status === 'fulfilled' ? { protection: this.members[i]!.name, result: s.value } : { protection: this.members[i]!.name, error: errorOf(s.reason) }));
  }

  /** The window closes: the hold ends, each member captured goes on with its session, the others fail. */
  async #release(): Promise<Awaited<ReturnType<Hold['close']>>> {
    clearTimeout(this.#expiry);
    if (!this.#hold) return new Map();
    // Once: a member captured ships on, whatever happens to the coordinator after the window.
    if (this.#closed) return this.#closed;
    this.#closed = this.#hold.close();
    const closed = await this.#closed;
    for (const a of this.#arrivals) {
      const r = this.#begun?.get(a);
      if (!r) a.reject(this.#over ?? new GroupWindowAborted(this.group.name, `${this.label}: the window closed before the member's backup began`));
      else if (!r.ok) a.reject(r.e);
      else if (this.#over) this.#drop(a, r.s);
      else if (brokenHold(closed.get(a.protection.source.vm))) {
        void r.s.end().catch(() => undefined);
        a.reject(new GroupHoldBroken(this.group.name, a.protection.name, brokenHold(closed.get(a.protection.source.vm))!));
      } else {
        const q = closed.get(a.protection.source.vm);
        a.resolve(q && 'consistency' in q ? { ...r.s, quiesce: q } : r.s);
      }
    }
    return closed;
  }

  #end(why: Error): void {
    this.#over ??= why;
    for (const a of this.#arrivals) if (!this.#begun?.has(a)) a.reject(this.#over);
    void this.#release().catch(() => undefined);
  }

  #drop(a: Arrival, s: BackupSession): void {
    void s.end().catch(() => undefined);
    a.reject(this.#over ?? new GroupWindowAborted(this.group.name, `${this.label}: the member's backup began after the window closed`));
  }
}

/** The members (all of `site`, this host's) whose VM is not running, and why. */
export async function membersDown(sites: SiteConnections, site: string, members: readonly Protection[]): Promise<MemberDown[]> {
  const source = await sites.adapter(site).catch((err: unknown) => err as Error);
  const down = await Promise.all(
    members.map(async (p) => {
      const state = source instanceof Error ? `unreachable (${source.message})` : await source.powerState(p.source.vm).catch((err: unknown) => `unreachable (${(err as Error).message})`);
      return state === 'running' ? [] : [{ protection: p.name, why: `VM ${JSON.stringify(p.source.vm)} is ${state}` }];
    }),
  );
  return down.flat();
}

export function errorOf(err: unknown): { code: string; message: string } {
  return err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: String((err as Error)?.message ?? err) };
}
