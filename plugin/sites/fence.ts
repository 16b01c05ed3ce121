/**
 * A fenced source stays fenced. After a failover the source VM must not run beside its DR twin
 * (two live copies, the same MAC and addresses twice, writes lost at failback). Powering it off is
 * not enough: anyone could `virsh start` it, and libvirt's autostart would start it when its host
 * comes back. So a fence is three things on the source's own hypervisor: the VM off, vmdr's labels
 * on it (role=fenced, the protection and the failover, and what to put back: its autostart and the
 * labels it had), and its autostart off. scripts/hooks/libvirt-qemu refuses to start a VM labelled
 * role=fenced unless vmdr's start token is there (hypervisors/libvirt/start-token.ts), which only a
 * start by vmdr writes: failback and revert lift the fence, then start (startUnfenced).
 *
 * These run on the adapter of the source's own site (local on that host): the failover runner on one
 * host, the source site's `vmdr serve` across two (its source guard, source-guard.ts, and its
 * replication loop, continuous.ts, fence when the DR site answers that the protection is failed over).
 */
import type { HypervisorAdapter, PowerState, VmInfo } from '../../hypervisors/types.js';
import { LABEL_FAILOVER, LABEL_PROTECTION, LABEL_ROLE, ROLE_FENCED } from '../targets/labels.js';
import type { SourceFence } from './source-site.js';

/** When the fence went up (ISO). */
const LABEL_FENCED_AT = 'fenced-at';
/** The autostart the VM had before the fence ("on" / "off"), put back when it is lifted. */
const LABEL_AUTOSTART = 'autostart';
/** The labels the VM had before the fence (JSON), when it had any: a VM vmdr made keeps its own. */
const LABEL_BEFORE = 'labels-before-fence';

export interface FenceMark {
  protection: string;
  failover: string;
  fencedAt: string;
  /** The autostart the VM had; it is put back when the fence is lifted. */
  autostart: boolean;
  /** The labels the VM had before, put back when the fence is lifted. */
  before: Record<string, string>;
}

/** The fence a VM carries, read from its labels; undefined when it is not fenced. */
export function fenceOf(vm: Pick<VmInfo, 'labels'>): FenceMark | undefined {
  const l = vm.labels;
  if (l[LABEL_ROLE] !== ROLE_FENCED) return undefined;
  return {
    protection: l[LABEL_PROTECTION] ?? '',
    failover: l[LABEL_FAILOVER] ?? '',
    fencedAt: l[LABEL_FENCED_AT] ?? '',
    autostart: l[LABEL_AUTOSTART] === 'on',
    before: parseBefore(l[LABEL_BEFORE]),
  };
}

export interface FenceResult extends SourceFence {
  /** The VM was fenced and off already: nothing changed. */
  already: boolean;
}

/**
 * Fences source VM `vm`: labelled, autostart off, powered off (forced) when it runs. Idempotent: a
 * VM fenced before keeps its first fence's time and the autostart and labels it had before it;
 * only the failover is the newest. A step that failed half way is completed by the next call.
 */
export async function fenceSource(adapter: HypervisorAdapter, vm: string, by: { protection: string; failover: string }): Promise<FenceResult> {
  const info = await adapter.getVm(vm);
  const was: PowerState = info.powerState;
  const earlier = fenceOf(info);
  const mark: FenceMark = earlier
    ? { ...earlier, protection: by.protection, failover: by.failover }
    : { ...by, fencedAt: new Date().toISOString(), autostart: info.autostart ?? false, before: info.labels };
  // Marked first, then off: there is no moment when the VM is off and a plain start would be let
  // through. The mark keeps the autostart the VM had, so a fence half done is completed right.
  const labels = fenceLabels(mark);
  const relabel = !sameLabels(labels, info.labels);
  if (relabel) await adapter.setLabels(vm, labels);
  // Undefined: the hypervisor cannot tell (libvirt's test driver), and has no autostart to turn off.
  if (info.autostart) await adapter.setAutostart(vm, false);
  if (was !== 'shutoff') await adapter.stop(vm, { mode: 'force' });
  return { fencedAt: mark.fencedAt, was, already: was === 'shutoff' && !relabel && !info.autostart };
}

/**
 * Lifts the fence: the autostart the VM had comes back, then the labels it had (none on a VM vmdr
 * did not make). Resolves with the fence lifted; undefined when the VM was not fenced, or with
 * `only` not by that protection before that moment.
 */
export async function unfenceSource(adapter: HypervisorAdapter, vm: string, only?: { protection: string; fencedBefore: Date }): Promise<FenceMark | undefined> {
  const info = await adapter.getVm(vm);
  const mark = fenceOf(info);
  if (!mark) return undefined;
  if (only && (mark.protection !== only.protection || !(Date.parse(mark.fencedAt) < only.fencedBefore.getTime()))) return undefined;
  // Autostart first: with the labels gone, a second call could no longer tell what to put back.
  if (mark.autostart && info.autostart === false) await adapter.setAutostart(vm, true);
  await adapter.setLabels(vm, mark.before);
  return mark;
}

/** How vmdr starts a source it may have fenced (failback, revert): the fence lifted, then a start with vmdr's token. */
export async function startUnfenced(adapter: HypervisorAdapter, vm: string): Promise<void> {
  await unfenceSource(adapter, vm);
  await adapter.start(vm);
}

function fenceLabels(mark: FenceMark): Record<string, string> {
  return {
    ...mark.before,
    [LABEL_ROLE]: ROLE_FENCED,
    [LABEL_PROTECTION]: mark.protection,
    [LABEL_FAILOVER]: mark.failover,
    [LABEL_FENCED_AT]: mark.fencedAt,
    [LABEL_AUTOSTART]: mark.autostart ? 'on' : 'off',
    ...(Object.keys(mark.before).length ? { [LABEL_BEFORE]: JSON.stringify(mark.before) } : {}),
  };
}

function parseBefore(json: string | undefined): Record<string, string> {
  if (!json) return {};
  try {
    const parsed: unknown = JSON.parse(json);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      return Object.fromEntries(Object.entries(parsed).filter((e): e is [string, string] => typeof e[1] === 'string'));
    }
  } catch {
    // Edited by hand into something else: the fence is still lifted, with no labels put back.
  }
  return {};
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => b[k] === a[k]);
}
