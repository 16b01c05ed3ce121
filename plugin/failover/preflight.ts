/**
 * Everything a failover can check before it changes anything, for every VM of the run: the
 * protection is not already failed over, its target exists, is vmdr's and is off, the DR networks
 * exist, no running VM already has one of its MACs, a recovery point can be chosen, the source is
 * in a state this kind of failover accepts (and not fenced for another copy's failover) and, when it will be stopped or fenced, is the VM the
 * points are of, and the target has exactly the disks it will boot: the point's, or for a
 * planned failover the source's own (its final sync may bring a disk the newest point lacks). A plan whose fifth VM would fail stops here, before its first VM was
 * touched. A drill boots a VM of its own made from the point's disks, so it needs no target.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { HypervisorAdapter, PowerState, VmInfo } from '../../hypervisors/types.js';
import { NetworkNotFound } from '../../hypervisors/errors.js';
import { fenceOf } from '../sites/fence.js';
import { sourceSiteFor, sourceVmLookup } from '../sites/source-site-for.js';
import type { SourceSite } from '../sites/source-site.js';
import type { Protection } from '../config/schema.js';
import { resolveSource } from '../protections/source-identity.js';
import { roleOf } from '../state/roles.js';
import { recordedSource } from '../state/sources.js';
import { dataDisks } from '../targets/drift.js';
import { LABEL_PROTECTION, LABEL_ROLE } from '../targets/labels.js';
import { drAdapter, replicasOf, type RunContext } from './context.js';
import { AlreadyFailedOver, MacInUse, NoRecoveryPoint, OtherCopyFailedOver, SourceStillRunning, TargetNotReady } from './errors.js';
import { choosePointFor } from './recovery-point.js';

export interface Preflight {
  /** The source as seen now; 'unreachable' when its site does not answer (the site is lost). */
  source: PowerState | 'unreachable' | 'missing';
  /** The point that would be booted now (planned: the final sync makes a newer one). */
  point: string;
}

export async function preflight(ctx: RunContext, p: Protection): Promise<Preflight> {
  const role = roleOf(ctx.state.db, p.name);
  if (role.role === 'failed-over') throw new AlreadyFailedOver(p.name, role.failover);
  const kind = ctx.request.kind;
  const point = choosePointFor(ctx, p, replicasOf(ctx, p), { point: ctx.request.point, at: ctx.request.at ? new Date(ctx.request.at) : undefined });
  const dr = await drAdapter(ctx, p);
  if (kind !== 'test') await checkTarget(ctx, dr, p);
  const site = sourceSiteFor(ctx, p);
  const source = await sourceState(site, p);
  if (kind === 'unplanned' && source === 'running' && !ctx.request.force) throw new SourceStillRunning(p.name, p.source.vm, site.remote ? `site "${p.source.site}"` : ctx.sites.site(p.source.site).uri);
  if (kind === 'planned' && (source === 'unreachable' || source === 'missing')) {
    const which = source === 'unreachable' && site.remote ? `its source site "${p.source.site}", which does not answer` : `its source VM "${p.source.vm}", which is ${source}`;
    throw new VmdrError('SOURCE_UNAVAILABLE', `a planned failover of "${p.name}" needs ${which}`, {
      subject: { protection: p.name, vm: p.source.vm, site: p.source.site },
      remedy: `fail over unplanned (without --planned; add --force should the source still run) from recovery point ${point.id} or another`,
    });
  }
  // Fan-out: a source fenced for another protection's failover has its live copy on that one's DR site.
  if (kind !== 'test' && source === 'shutoff' && !ctx.request.force) {
    const fence = fenceOf((await sourceVm(ctx, site, p).catch(() => undefined)) ?? { labels: {} });
    if (fence && fence.protection !== p.name) throw new OtherCopyFailedOver(p.name, p.source.vm, fence);
  }
  if (kind === 'planned' && ctx.request.point) throw new NoRecoveryPoint(p.name, 'cannot take --point on a planned failover: it boots the final sync');
  // Stopping or fencing the source must not hit another VM that took its name (SOURCE_IDENTITY_CHANGED).
  const recorded = recordedSource(ctx.state.db, p.name);
  const fenced = kind === 'unplanned' && (source === 'running' || (ctx.request.watch !== undefined && source !== 'unreachable' && source !== 'missing'));
  if (recorded && (kind === 'planned' || fenced)) {
    await resolveSource(sourceVmLookup(ctx, p), p.name, p.source.vm, { uuid: recorded.vmUuid });
  }
  if (kind !== 'test') await checkTargetDisks(ctx, p, dr, point, site);
  return { source, point: point.id };
}

/**
 * The failover points each disk it boots at the target's disk of that name, and leaves the
 * target's other disks on their images. So the target must have every disk of what it boots (the
 * point's; planned: the source's, which the final sync brings), or `prepare-disks` stops the run
 * after a planned one stopped the source; and no other disk, which would boot on the replica's
 * base image and write into the replica (a disk added after the point, one the source lost).
 */
async function checkTargetDisks(ctx: RunContext, p: Protection, dr: HypervisorAdapter, point: { id: string; disks: { disk: string }[] }, site: SourceSite): Promise<void> {
  const target = (await targetOf(ctx, p, dr))!;
  const has = dataDisks(target).map((d) => d.target);
  const refuse = (detail: string, remedy: string) => {
    throw new TargetNotReady(p.name, target.name, dr.uri, detail, remedy);
  };
  const named = (disks: string[]) => `disk${disks.length > 1 ? 's' : ''} ${disks.join(', ')}`;
  const provision = `bring it up to date with \`vmdr target provision ${p.name}\``;
  const pointDisks = point.disks.map((d) => d.disk);
  let boots = { disks: pointDisks, what: `recovery point ${point.id}` };
  if (ctx.request.kind === 'planned') {
    const source = await sourceVm(ctx, site, p).catch((err: unknown) => {
      if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return undefined;
      throw err;
    });
    if (source) boots = { disks: dataDisks(source).map((d) => d.target), what: `its source VM "${p.source.vm}"` };
  }
  const lacking = boots.disks.filter((d) => !has.includes(d));
  if (lacking.length) {
    const who = lacking.every((d) => pointDisks.includes(d)) ? `recovery point ${point.id} has` : `${boots.what} has and the final sync would bring`;
    refuse(`has no ${named(lacking)}, which ${who}`, provision);
  }
  const extra = has.filter((d) => !boots.disks.includes(d));
  if (extra.length) {
    const [they, them] = extra.length > 1 ? ['they', 'them'] : ['it', 'it'];
    const orPoint = ctx.request.kind === 'planned' ? '' : `, or fail over to a point that has ${them}`;
    refuse(`has ${named(extra)}, which ${boots.what} does not have: booted, ${they} would write into the replica`, `remove ${them} from the target VM first${orPoint}`);
  }
}

/**
 * What a host has, read once per run and site: a plan of six VMs would otherwise read the same
 * VMs and networks six times over (a libvirt call per network), time off its RTO.
 */
const perRun = new WeakMap<RunContext, Map<string, Promise<unknown>>>();
function once<T>(ctx: RunContext, key: string, read: () => Promise<T>): Promise<T> {
  let cache = perRun.get(ctx);
  if (!cache) perRun.set(ctx, (cache = new Map()));
  if (!cache.has(key)) cache.set(key, read());
  return cache.get(key) as Promise<T>;
}

/**
 * The protection's target as its DR host has it now (undefined: it has none). The targets of the
 * run's protections on that site are read together, by name: a DR host holds many VMs, and the
 * preflight's reads follow the plan, not the host.
 */
async function targetOf(ctx: RunContext, p: Protection, dr: HypervisorAdapter): Promise<VmInfo | undefined> {
  const site = p.target.site;
  const inRun = new Set(ctx.request.protections);
  const targets = ctx.config.protections.filter((x) => inRun.has(x.name) && x.target.site === site).map((x) => x.target.vm);
  const read = targets.includes(p.target.vm)
    ? once(ctx, `targets ${site}`, () => dr.listVms({ names: targets }))
    : once(ctx, `target ${site} ${p.target.vm}`, () => dr.listVms({ names: [p.target.vm] }));
  return (await read).find((v) => v.name === p.target.vm);
}

/** The source VM without its disks' sizes (a read per disk): the preflight wants its labels and disk names. */
function sourceVm(ctx: RunContext, site: SourceSite, p: Protection): Promise<VmInfo> {
  return once(ctx, `source ${p.name}`, () => site.vm(p, { sizes: false }));
}

async function checkTarget(ctx: RunContext, dr: HypervisorAdapter, p: Protection): Promise<void> {
  const site = p.target.site;
  const wanted = p.target.nics.map((n) => n.mac).filter((m): m is string => m !== undefined);
  // The VMs that run there matter only for MACs the config gives.
  const [vm, networks, running] = await Promise.all([
    targetOf(ctx, p, dr),
    once(ctx, `networks ${site}`, async () => new Set((await dr.listNetworks()).map((n) => n.name))),
    wanted.length > 0 ? once(ctx, `running ${site}`, () => dr.listVms({ running: true })) : [],
  ]);
  if (!vm) throw new TargetNotReady(p.name, p.target.vm, dr.uri, 'does not exist', 'pre-stage it with `vmdr target provision`');
  if (vm.labels[LABEL_PROTECTION] !== p.name) throw new TargetNotReady(p.name, vm.name, dr.uri, 'was not made by vmdr for this protection');
  if (vm.powerState !== 'shutoff') {
    throw new TargetNotReady(p.name, vm.name, dr.uri, `is ${vm.powerState}`, 'a target runs only after a failover; if it was started by hand, stop it first');
  }
  for (const nic of p.target.nics) if (!networks.has(nic.network)) throw new NetworkNotFound(nic.network, dr.uri);
  const twice = wanted.find((m, i) => wanted.indexOf(m) !== i);
  if (twice) throw new MacInUse(p.name, twice, vm.name, dr.uri);
  for (const other of running) {
    if (!isRival(other, p)) continue;
    const clash = other.nics.find((n) => wanted.includes(n.mac.toLowerCase()));
    if (clash) throw new MacInUse(p.name, clash.mac, other.name, dr.uri);
  }
}

/**
 * A running VM whose MAC would clash on the DR networks. The protection's own drill VMs sit on a
 * bubble network of their own, and its source is stopped (fenced) before the target starts.
 */
function isRival(vm: VmInfo, p: Protection): boolean {
  if (vm.powerState !== 'running' || vm.name === p.target.vm || vm.name === p.source.vm) return false;
  return !(vm.labels[LABEL_ROLE] === 'drill' && vm.labels[LABEL_PROTECTION] === p.name);
}

async function sourceState(site: SourceSite, p: Protection): Promise<Preflight['source']> {
  try {
    return await site.powerState(p);
  } catch (err) {
    if (err instanceof VmdrError && (err.code === 'HYPERVISOR_UNREACHABLE' || err.code === 'SOURCE_SITE_UNREACHABLE')) return 'unreachable';
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return 'missing';
    throw err;
  }
}

