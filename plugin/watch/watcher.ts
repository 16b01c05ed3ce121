/**
 * The heartbeats `vmdr serve` runs on its DR site's watched sources. Protections sharing a source
 * site and an interval are beaten together: one ask of the source site per round (through its
 * endpoint when it is another host, its hypervisor when it is this one), then each protection's
 * TCP check from here. Each beat is bounded by the interval, so rounds never pile up behind a
 * source that hangs: a beat with no answer in time is a missed one.
 *
 * Each change of state is recorded (state/watch-events.ts), told to `onEvent` (the daemon's log)
 * and to the webhooks (`watch-<state>`). Policy notify does nothing more; confirm and automatic
 * fail over when a source goes down (act.ts).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config } from '../config/schema.js';
import { tcpConnect } from '../failover/health.js';
import type { NotificationEvent } from '../notifications/webhook.js';
import type { SiteConnections } from '../sites/connections.js';
import { KeptPeers } from '../sites/kept-peers.js';
import type { SourceBeat, SourceNotice } from '../sites/source-site.js';
import { sourceSiteFor } from '../sites/source-site-for.js';
import type { StateStore } from '../state/store.js';
import { roleOf } from '../state/roles.js';
import { lastWatchEvent, recordWatchEvent, type WatchEvent } from '../state/watch-events.js';
import { WatchActor } from './act.js';
import { BeatTimedOut } from './errors.js';
import { WatchMachine, type BeatOutcome, type WatchTransition } from './machine.js';
import type { Watched } from './watched.js';

/** The longest one beat waits for its answers, whatever the interval: a site this slow is not answering. */
const MAX_BEAT_MS = 30_000;

export interface WatchNotification extends NotificationEvent {
  protection: string;
  tenant: string | null;
  plan: string | null;
  site: string;
  state: WatchEvent['state'];
  detail: string | null;
  policy: string;
}

export interface WatcherDeps {
  config: Config;
  file: string;
  sites: SiteConnections;
  state: StateStore;
  notifier?: { tell(subject: string, event: NotificationEvent): void };
  onEvent?: (event: WatchEvent, watched: Watched) => void;
  onWarning?: (err: unknown) => void;
  /** The clock (tests); Date.now by default. */
  now?: () => number;
}

interface Member {
  watched: Watched;
  machine: WatchMachine;
  /** The watch's entry as it was set: a reloaded config that changes it starts the count afresh. */
  entry: string;
}

interface Group {
  site: string;
  intervalMs: number;
  members: Member[];
  stop: AbortController;
  done: Promise<void>;
  /** The ask of the source site still unanswered, and since when: a hung site or hypervisor is asked once, not once per beat. */
  pending?: { since: number; answer: Promise<SourceBeat> };
  /** The source site's notices are held for this group (until its stop). */
  listening?: boolean;
}

export class SourceWatcher {
  #groups = new Map<string, Group>();
  #members = new Map<string, Member>();
  readonly #now: () => number;
  readonly #actor: WatchActor;
  /** The source sites' endpoints, each over one kept TLS connection: read afresh at each set(). */
  #peers: KeptPeers;

  constructor(private readonly deps: WatcherDeps) {
    this.#now = deps.now ?? Date.now;
    this.#peers = new KeptPeers(deps.config, deps.file);
    this.#actor = new WatchActor({ ...deps, note: (name, state, detail) => this.#note(name, state, detail), ...(deps.onWarning ? { onWarning: deps.onWarning } : {}) });
  }

  /** Stops watching and ends the failovers the watch started (the daemon stops). */
  async close(): Promise<void> {
    await this.stop();
    this.#peers.close();
    await this.#actor.close();
  }

  /** A state a failover of the watch brought: failing-over and fenced are recorded each time, the others when they change the state. */
  #note(protection: string, state: WatchEvent['state'], detail: string): void {
    const m = this.#members.get(protection);
    if (!m) return;
    const change = m.machine.settle(state, detail, this.#now());
    if (change || state === 'failing-over' || state === 'fenced') this.record(m.watched, state, detail, this.#now());
  }

  /** Watches exactly `watched` from now on (a reloaded config): a protection whose watch did not change keeps its count. */
  async set(watched: Watched[]): Promise<void> {
    await this.stop();
    // A reloaded config may name other endpoints or credentials (a site re-paired).
    this.#peers.close();
    this.#peers = new KeptPeers(this.deps.config, this.deps.file);
    const members = new Map<string, Member>();
    for (const w of watched) {
      const entry = JSON.stringify([w.watch, w.protection.source]);
      const kept = this.#members.get(w.protection.name);
      const last = lastWatchEvent(this.deps.state, w.protection.name)?.state;
      const machine = kept && kept.entry === entry ? kept.machine : new WatchMachine(w.watch, this.#now(), last);
      members.set(w.protection.name, { watched: w, machine, entry });
    }
    this.#members = members;
    const byKey = new Map<string, Member[]>();
    for (const m of members.values()) {
      const key = `${m.watched.protection.source.site}\n${m.watched.watch.interval}`;
      byKey.set(key, [...(byKey.get(key) ?? []), m]);
    }
    for (const [key, group] of byKey) {
      const stop = new AbortController();
      const g: Group = { site: group[0]!.watched.protection.source.site, intervalMs: group[0]!.watched.watch.interval, members: group, stop, done: Promise.resolve() };
      g.done = this.#run(g);
      this.#groups.set(key, g);
    }
  }

  /** Ends every round (a beat in flight is left to its bound) and waits for them. */
  async stop(): Promise<void> {
    const groups = [...this.#groups.values()];
    this.#groups.clear();
    for (const g of groups) g.stop.abort();
    await Promise.allSettled(groups.map((g) => g.done));
  }

  /** Rounds every interval, each starting an interval after the one before it started (never before it ended). */
  async #run(g: Group): Promise<void> {
    const signal = g.stop.signal;
    // Each round's time is when it was due, not when its timer fired (a timer may fire a millisecond early).
    let started = this.#now();
    while (!signal.aborted) {
      try {
        await this.round(g, started);
      } catch (err) {
        this.deps.onWarning?.(err);
      }
      const now = this.#now();
      started = Math.max(started + g.intervalMs, now);
      // timers/promises removes its listener from the long-lived signal: a round leaves nothing behind.
      await delay(started - now, undefined, { signal }).catch(() => undefined);
    }
  }

  /**
   * One beat of every member of the group. The machines count time in rounds' starts, which the
   * schedule keeps an interval apart: how long each beat took to answer never moves the threshold by a beat.
   */
  private async round(g: Group, started: number): Promise<void> {
    this.#listen(g);
    const beaten = g.members.filter((m) => this.#beatable(m, started));
    if (beaten.length === 0) return;
    const boundMs = Math.min(g.intervalMs, MAX_BEAT_MS);
    // The beat's own bound, aborted by the watch's stop too; its listener on the stop signal goes with the beat.
    const bound = new AbortController();
    const timer = setTimeout(() => bound.abort(), boundMs);
    const onStop = () => bound.abort();
    g.stop.signal.addEventListener('abort', onStop, { once: true });
    let outcomes: Map<string, BeatOutcome>;
    try {
      outcomes = await this.beat(g, beaten, boundMs, bound.signal);
    } finally {
      clearTimeout(timer);
      g.stop.signal.removeEventListener('abort', onStop);
    }
    if (g.stop.signal.aborted) return;
    const now = this.#now();
    for (const m of beaten) {
      const outcome = outcomes.get(m.watched.protection.name)!;
      if (this.#actor.waiting(m.watched.protection.name)) {
        // A prepared failover waits for its approval: only its sources all answering again changes anything (it is withdrawn).
        const withdrawn = this.#actor.sourceBeat(m.watched.protection.name, outcome.ok);
        if (withdrawn) for (const name of withdrawn.protections) this.#note(name, 'healthy', withdrawn.detail);
        continue;
      }
      this.#apply(m, m.machine.beat(outcome, started), now);
    }
  }

  /**
   * Whether a member's source is beaten (or told of) now. A protection failed over (its role in
   * this DR host's state file) has its source off on purpose: settled failed-over, not beaten; one
   * failing over by the watch's own run is left to that run, which records what becomes of it.
   */
  #beatable(m: Member, at: number): boolean {
    const p = m.watched.protection;
    if (this.#actor.busy(p.name)) return false;
    const role = this.deps.sites.holdsStorage(p.target.site) ? roleOf(this.deps.state.db, p.name) : undefined;
    if (role?.role !== 'failed-over') return true;
    const change = m.machine.settle('failed-over', role.failover ? `failover ${role.failover}: the source is not watched until failback` : null, at);
    if (change) this.record(m.watched, change.state, change.detail, this.#now());
    return false;
  }

  /** Records a change a beat or a notice made; a down says in the same event what its policy does about it (the run's own events follow). */
  #apply(m: Member, change: WatchTransition | undefined, now: number): void {
    if (!change) return;
    const acts = change.state === 'down' ? this.#actor.onDown(m.watched) : undefined;
    this.record(m.watched, change.state, acts ? `${change.detail}; ${acts}` : change.detail, now);
  }

  /**
   * The source site's notices (its hypervisor telling at once that a VM stopped, or that its
   * connection closed), held for the group from its first round: through the adapter when the
   * site is this host, through the site's endpoint otherwise. Asked again an interval after they
   * end (the site or its hypervisor went away); not at all where the hypervisor has no events.
   * Never waits: the round's beat goes on meanwhile.
   */
  #listen(g: Group): void {
    if (g.listening) return;
    g.listening = true;
    const source = sourceSiteFor({ ...this.deps, peers: this.#peers }, g.members[0]!.watched.protection);
    const protections = g.members.map((m) => m.watched.protection);
    const signal = g.stop.signal;
    void (async () => {
      while (!signal.aborted) {
        const events = await source.notices(protections, (notice) => this.#notice(g, notice), signal).catch(() => true);
        if (!events) return;
        await delay(g.intervalMs, undefined, { signal }).catch(() => undefined);
      }
    })();
  }

  /** A notice is a missed beat of the sources it concerns, now (machine.ts: the threshold still holds). */
  #notice(g: Group, notice: SourceNotice): void {
    if (g.stop.signal.aborted) return;
    const now = this.#now();
    for (const m of g.members) {
      const { protection: p } = m.watched;
      if (notice.protection !== undefined && notice.protection !== p.name) continue;
      // A prepared failover waiting for its approval: only beats that answer change anything.
      if (this.#actor.waiting(p.name) || !this.#beatable(m, now)) continue;
      const miss: Extract<BeatOutcome, { ok: false }> =
        notice.state === 'closed'
          ? { ok: false, check: 'hypervisor', detail: `the connection to site ${g.site}'s hypervisor closed (${notice.why})` }
          : { ok: false, check: 'vm', detail: `source VM ${p.source.vm} is ${notice.state} (${notice.why}), told by its hypervisor` };
      this.#apply(m, m.machine.notice(miss, now), now);
    }
  }

  private async beat(g: Group, members: Member[], boundMs: number, signal: AbortSignal): Promise<Map<string, BeatOutcome>> {
    const source = sourceSiteFor({ ...this.deps, peers: this.#peers }, members[0]!.watched.protection);
    const asks = members.map((m) => ({ protection: m.watched.protection, agent: m.watched.watch.guest?.agent ?? false }));
    let beat: SourceBeat;
    try {
      // Still waiting for an earlier beat's answer: this beat is missed at once, and asks nothing more.
      if (g.pending) throw new BeatTimedOut(g.site, this.#now() - g.pending.since);
      const pending = { since: this.#now(), answer: source.heartbeat(asks, g.stop.signal) };
      g.pending = pending;
      void pending.answer.catch(() => undefined).finally(() => g.pending === pending && delete g.pending);
      beat = await bounded(pending.answer, signal, () => new BeatTimedOut(g.site, this.#now() - pending.since));
    } catch (err) {
      // Whose silence it was: the source site's endpoint, or the hypervisor (asked here or by the site).
      const unreachableSite = source.remote && (!(err instanceof VmdrError) || err.code === 'SOURCE_SITE_UNREACHABLE' || err.code === 'BEAT_TIMEOUT');
      const miss: BeatOutcome = { ok: false, check: unreachableSite ? 'site' : 'hypervisor', detail: err instanceof Error ? err.message : String(err) };
      return new Map(members.map((m) => [m.watched.protection.name, miss]));
    }
    const outcomes = await Promise.all(
      members.map(async (m): Promise<[string, BeatOutcome]> => {
        const { protection: p, watch } = m.watched;
        const vm = beat.vms[p.name];
        if (!vm || vm.state === 'missing') return [p.name, { ok: false, check: 'vm', detail: `source VM ${p.source.vm} is missing on site ${p.source.site}` }];
        if (vm.state !== 'running') return [p.name, { ok: false, check: 'vm', detail: `source VM ${p.source.vm} is ${vm.state}` }];
        if (vm.agent && !vm.agent.ok) return [p.name, { ok: false, check: 'agent', detail: vm.agent.detail ?? 'the guest agent did not answer' }];
        const tcp = watch.guest?.tcp;
        if (tcp) {
          const colon = tcp.lastIndexOf(':');
          const answer = await tcpConnect(tcp.slice(0, colon), Number(tcp.slice(colon + 1)), boundMs, signal);
          if (!answer.ok) return [p.name, { ok: false, check: `tcp ${tcp}`, detail: answer.why }];
        }
        return [p.name, { ok: true }];
      }),
    );
    return new Map(outcomes);
  }

  private record(w: Watched, state: WatchEvent['state'], detail: string | null, now: number): void {
    const p = w.protection;
    const event = recordWatchEvent(this.deps.state, { at: new Date(now), protection: p.name, site: p.source.site, state, detail });
    this.deps.onEvent?.(event, w);
    const told: WatchNotification = {
      event: `watch-${state}`,
      at: event.at.toISOString(),
      protection: p.name,
      tenant: p.tenant ?? null,
      plan: w.plan ?? null,
      site: p.source.site,
      state,
      detail,
      policy: w.watch.policy,
    };
    this.deps.notifier?.tell(p.name, told);
  }
}

/** The beat's answer, or `timedOut()` once `signal` aborts (its bound passed, or the watch stopped). */
function bounded<T>(work: Promise<T>, signal: AbortSignal, timedOut: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(timedOut());
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}
