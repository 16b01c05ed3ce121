/**
 * The source site's own guard against two live copies, run by its `vmdr serve` whatever else it
 * runs (replication or not): for each protection whose source is on this host, it asks the DR
 * site on a short loop whether the protection is failed over (the answer the DR site gives with
 * its newest point). A protection whose DR site is this very host is not its business: the
 * failover runner reaches the source's hypervisor and fences it itself.
 *
 * - Failed over: the source is fenced (fence.ts, shared with the replication loop through
 *   SourceFences) at the first moment both that answer and the local hypervisor are there. While
 *   the hypervisor is down (libvirtd stopped: its QEMU may still run) it tries again every
 *   FAST_MS, so that the hypervisor's return is met within about a second.
 * - Start leases: a protection the watch may fail over by itself (policy automatic or confirm)
 *   can be failed over while this host does not hear of it (cut off, rebooting). Its source VM is labelled `source-of` and starts only while it holds a lease
 *   (scripts/hooks/libvirt-qemu), granted at each answer "not failed over" for the watch's `after`
 *   from the moment the question was asked (the DR site fails over only after that long without an
 *   answer from here) and taken back at once when the answer is "failed over". After a reboot (no
 *   lease in /run) an autostart is refused until the DR site answers; then the VM is started here
 *   (with vmdr's start token), or fenced.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { HypervisorAdapter, StartLeases, VmInfo } from '../../hypervisors/types.js';
import type { Config, Protection } from '../config/schema.js';
import { receiverFor } from '../replication/sender/connect.js';
import type { ReceiverClient } from '../replication/sender/receiver-client.js';
import { LABEL_SOURCE_OF } from '../targets/labels.js';
import { watchOf } from '../watch/watched.js';
import { isLocalSite, type SiteConnections } from './connections.js';
import { fenceOf } from './fence.js';
import type { FenceReport, SourceFences } from './source-fences.js';

/** How often the DR site is asked while all is well. */
const ROUND_MS = 2_000;
/** How often while a failed-over source is still to be fenced (its hypervisor down). */
const FAST_MS = 500;
/** A question the DR site has not answered in this long is given up; the next round asks again. */
const ASK_TIMEOUT_MS = 5_000;

export interface GuardReport extends FenceReport {
  /** Said once per kind (code) of failure: the DR site could not be asked, or the lease not kept. */
  failed?: { what: 'ask-dr' | 'lease'; site: string; error: unknown };
  /** The first time a source starts only with a start lease (this daemon's run). */
  guarded?: { vm: string; policy: string; leaseMs: number };
  /** The DR site said failed over: the source's start lease was taken back. */
  revoked?: { vm: string; failover: string | null };
  /** A start the hook held back (an autostart) was done once the DR site said not failed over. */
  started?: { vm: string };
}

type Standing = { role: 'replicating' | 'failed-over'; failover: string | null };

export interface SourceGuardDeps {
  config: Config;
  file: string;
  sites: SiteConnections;
  fences: SourceFences;
  onReport: (p: Protection, r: GuardReport) => void;
}

export class SourceGuard {
  #protections: Protection[] = [];
  readonly #receivers = new Map<string, Promise<ReceiverClient>>();
  /** Per protection: the code of its last failure of each kind, said once. */
  readonly #problems = new Map<string, string>();
  /** Source VMs labelled by this daemon, and the domain name each was last seen under. */
  readonly #guarded = new Map<string, string>();
  #wake: (() => void) | undefined;
  /** This host's sites whose VMs may carry a `source-of` label no protection wants any more. */
  #untidy: string[] = [];
  #tidying: Promise<void> | undefined;
  readonly #leases = new Map<string, Promise<StartLeases | undefined>>();

  constructor(private readonly deps: SourceGuardDeps) {}

  /**
   * Takes the protections of the config as it is now (at start, at a reload): those whose source
   * is on this host (`site`, or every local one) and whose DR site is another host. One that holds
   * the DR site's state file fails over with this host knowing: its runner fences the source itself.
   */
  set(site: string | undefined): void {
    const { config, sites } = this.deps;
    const here = (name: string) => (site ? name === site : isLocalSite(config, name));
    const protections = config.protections.filter((p) => here(p.source.site) && !sites.holdsStorage(p.target.site));
    this.#protections = protections;
    this.#untidy = config.sites.filter((s) => here(s.name)).map((s) => s.name);
    this.#leases.clear();
    // A DR site's endpoint may have changed with the config: asked afresh at the next round.
    for (const name of [...this.#receivers.keys()]) this.#dropReceiver(name);
    this.#wake?.();
  }

  /** Asks and acts until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      // Beside the rounds, not in their way: a hung libvirtd must not hold back the DR site's answers.
      this.#tidying ??= this.#tidy()
        .catch(() => undefined)
        .finally(() => (this.#tidying = undefined));
      const outcomes = await Promise.all(this.#protections.map((p) => this.#look(p, signal).catch(() => 'fast' as const)));
      const ms = outcomes.includes('fast') ? FAST_MS : ROUND_MS;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#wake = undefined;
          signal.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        this.#wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
    }
    await this.#tidying;
    for (const name of [...this.#receivers.keys()]) this.#dropReceiver(name);
  }

  /** One protection, one round: 'fast' when its source is still to be fenced. */
  async #look(p: Protection, signal: AbortSignal): Promise<'fast' | 'normal'> {
    const asked = Date.now();
    let standing: Standing;
    try {
      standing = await this.#ask(p, signal);
      this.#solved(p, 'ask-dr');
    } catch (error) {
      if (signal.aborted) return 'normal';
      this.#dropReceiver(p.name);
      this.#failed(p, 'ask-dr', p.target.site, error);
      return 'normal';
    }
    const lease = this.#leaseMs(p);
    const leases = lease === undefined ? undefined : await this.#leasesOf(p.source.site);
    if (standing.role === 'failed-over') {
      // Taken back before anything else: this needs no hypervisor, which may be coming back now.
      if (leases) await this.#revoke(p, leases, standing.failover);
      const fenced = await this.deps.fences.fence(p, standing.failover, () => this.#recorded(p), (r) => !signal.aborted && this.deps.onReport(p, r));
      return fenced ? 'normal' : 'fast';
    }
    if (leases && lease !== undefined) {
      try {
        await this.#keepLease(p, leases, new Date(asked + lease), lease);
        this.#solved(p, 'lease');
      } catch (error) {
        if (!signal.aborted) this.#failed(p, 'lease', p.source.site, error);
      }
    }
    return 'normal';
  }

  /**
   * The guard lifted from VMs whose label names a protection of this site that no longer wants it
   * (removed, or its watch now notify): the hook would hold them back at the next boot. Tried at
   * each round until this host's hypervisor answered once after a (re)load of the config.
   */
  async #tidy(): Promise<void> {
    const { config, sites } = this.deps;
    for (const name of [...this.#untidy]) {
      const leases = await this.#leasesOf(name);
      if (leases) {
        const source = await sites.adapter(name);
        for (const vm of await source.listVms()) {
          const of = vm.labels[LABEL_SOURCE_OF];
          if (of === undefined || fenceOf(vm)) continue;
          const p = config.protections.find((x) => x.name === of);
          if (p && (p.source.site !== name || this.#leaseMs(p) !== undefined)) continue;
          const { [LABEL_SOURCE_OF]: _, ...rest } = vm.labels;
          await source.setLabels(vm.name, rest);
          await leases.revoke(vm.name);
          this.#guarded.delete(of);
        }
      }
      this.#untidy = this.#untidy.filter((n) => n !== name);
    }
  }

  #leasesOf(site: string): Promise<StartLeases | undefined> {
    let l = this.#leases.get(site);
    if (!l) this.#leases.set(site, (l = this.deps.sites.startLeases(site)));
    return l;
  }

  /** How long a lease lasts, for a protection the watch may fail over by itself. */
  #leaseMs(p: Protection): number | undefined {
    const w = watchOf(this.deps.config, p)?.watch;
    return w && (w.policy === 'automatic' || w.policy === 'confirm') ? w.after : undefined;
  }

  async #keepLease(p: Protection, leases: StartLeases, until: Date, leaseMs: number): Promise<void> {
    const source = await this.deps.sites.adapter(p.source.site);
    const vm = await source.getVm(p.source.vm);
    // A fence says more than a lease: the hook refuses a fenced VM whatever its lease.
    if (fenceOf(vm)) return;
    await leases.grant(vm.name, until);
    if (vm.labels[LABEL_SOURCE_OF] !== p.name) {
      await source.setLabels(vm.name, { ...vm.labels, [LABEL_SOURCE_OF]: p.name });
    }
    if (this.#guarded.get(p.name) === undefined) {
      const policy = watchOf(this.deps.config, p)?.watch.policy ?? 'automatic';
      this.deps.onReport(p, { protection: p.name, guarded: { vm: vm.name, policy, leaseMs } });
    }
    this.#guarded.set(p.name, vm.name);
    await this.#startHeld(p, source, leases, vm);
  }

  /** A start the hook refused for want of a lease: done now if it was the VM's autostart. */
  async #startHeld(p: Protection, source: HypervisorAdapter, leases: StartLeases, vm: VmInfo): Promise<void> {
    if (!(await leases.refused()).includes(vm.name)) return;
    // One refused by hand (autostart off), or started since: the mark has done its job.
    if (vm.powerState === 'shutoff' && vm.autostart === true) {
      await source.start(vm.name);
      this.deps.onReport(p, { protection: p.name, started: { vm: vm.name } });
    }
    await leases.clearRefused(vm.name);
  }

  async #revoke(p: Protection, leases: StartLeases, failover: string | null): Promise<void> {
    for (const vm of new Set([this.#guarded.get(p.name), p.source.vm])) {
      if (vm === undefined || (await leases.until(vm)) === undefined) continue;
      await leases.revoke(vm);
      this.deps.onReport(p, { protection: p.name, revoked: { vm, failover } });
    }
  }

  async #ask(p: Protection, signal: AbortSignal): Promise<Standing> {
    const receiver = await this.#receiver(p);
    return receiver.role(p.name, AbortSignal.any([signal, AbortSignal.timeout(ASK_TIMEOUT_MS)]));
  }

  /** The DR site's record of the source's identity: the VM fenced is the one the points are of. */
  async #recorded(p: Protection): Promise<{ uuid: string } | undefined> {
    return (await this.#receiver(p)).recordedSource(p.name);
  }

  #receiver(p: Protection): Promise<ReceiverClient> {
    let r = this.#receivers.get(p.name);
    if (!r) {
      r = receiverFor(this.deps.config, this.deps.file, p);
      this.#receivers.set(p.name, r);
      r.catch(() => this.#receivers.get(p.name) === r && this.#receivers.delete(p.name));
    }
    return r;
  }

  #dropReceiver(name: string): void {
    const r = this.#receivers.get(name);
    this.#receivers.delete(name);
    void r?.then((c) => c.close(), () => undefined);
  }

  #failed(p: Protection, what: 'ask-dr' | 'lease', site: string, error: unknown): void {
    const key = `${p.name}\0${what}`;
    const kind = error instanceof VmdrError ? error.code : 'INTERNAL';
    if (this.#problems.get(key) === kind) return;
    this.#problems.set(key, kind);
    this.deps.onReport(p, { protection: p.name, failed: { what, site, error } });
  }

  #solved(p: Protection, what: 'ask-dr' | 'lease'): void {
    this.#problems.delete(`${p.name}\0${what}`);
  }
}
