/**
 * A drill's VM on vSphere: a linked clone of the pre-staged target (VmSpec.cloneOf), so it has
 * the target's very hardware. The clone is made from the target's snapshot `vmdr-drill-base`
 * (taken once, when the first drill needs it, and kept for every later one: a linked clone's
 * disks are children of the snapshot's) with diskMoveType createNewChildDiskBacking, in vmdr's
 * folder; the clone spec puts its NICs on the drill's networks, then its disks are pointed at the
 * drill's boot disks (its own child disks deleted) and its labels set. The target itself is only
 * read and snapshotted.
 *
 * The clone is marked in its extraConfig (`vmdr.clone-of`), so that undefining it destroys it
 * with its files (Destroy_Task): its folder and the disks it runs on, the drill's throwaway boot
 * disks (releaseBootDisks then finds nothing left, which is fine). A target, or any VM not so
 * marked, is only unregistered, its files left: its disks are the replica's boot disks or
 * placeholders, which only releaseBootDisks removes.
 */
import { CleanupFailed, DefinitionRejected } from '../errors.js';
import type { TaskOptions, VmSpec } from '../types.js';
import { diskNameOptions, isDatastorePath, nicEditSpec, type NetworkBacking } from './devices.js';
import type { CustomFields } from './labels.js';
import type { VsphereNetworks } from './network.js';
import type { Placement } from './placement.js';
import { items } from './property-values.js';
import { retrieve } from './property-collector.js';
import type { MoRef } from './soap.js';
import { CLONE_OF, extraOption, type VmRecord, type VsphereVms } from './vm.js';

export const DRILL_BASE_SNAPSHOT = 'vmdr-drill-base';

interface SnapshotTree {
  name: string;
  snapshot: MoRef;
  childSnapshotList?: unknown;
}

export class VsphereClones {
  constructor(
    private readonly vms: VsphereVms,
    private readonly networks: VsphereNetworks,
    private readonly fields: CustomFields,
    private readonly place: Placement,
    private readonly uri: string,
  ) {}

  /** Makes `spec.name` as a linked clone of `spec.cloneOf`, with the spec's NICs, disks and labels. */
  async clone(spec: VmSpec & { cloneOf: string }, task: TaskOptions = {}): Promise<MoRef> {
    const target = await this.vms.read(spec.cloneOf);
    const reject = (detail: string) => new DefinitionRejected(`VM ${JSON.stringify(spec.name)} (a clone of ${JSON.stringify(spec.cloneOf)})`, this.uri, detail, { vm: spec.name });
    if (spec.nics.length !== target.hardware.nics.length) throw reject(`it asks for ${spec.nics.length} NICs; the VM it copies has ${target.hardware.nics.length}`);
    for (const d of spec.disks) {
      if (!isDatastorePath(d.path)) throw reject(`its disk ${d.target ?? d.path} is not a datastore file`);
      if (!target.hardware.disks.some((t) => t.target === d.target)) throw reject(`the VM it copies has no disk ${d.target}`);
    }
    const nicEdits: object[] = [];
    for (const [i, nic] of spec.nics.entries()) {
      const network: NetworkBacking = await this.networks.resolve(nic.network);
      nicEdits.push(nicEditSpec(target.hardware.nics[i]!, { network, ...(nic.mac ? { mac: nic.mac } : {}) }));
    }
    const snapshot = await this.baseSnapshot(target, task);
    // The disks' names restated: a clone's extraConfig is its source's on vCenter, not on the simulator.
    const names = Object.fromEntries(target.hardware.disks.filter((d) => d.target !== d.slot).map((d) => [d.slot, d.target]));
    const cloneSpec = {
      location: { datastore: this.place.datastore.ref, diskMoveType: 'createNewChildDiskBacking', pool: this.place.pool },
      template: false,
      config: { deviceChange: nicEdits, extraConfig: [...diskNameOptions(names), extraOption(CLONE_OF, target.info.name)] },
      powerOn: false,
      snapshot,
    };
    const ref = (await this.vms.withRef(spec.cloneOf, (source) => this.vms.task('CloneVM_Task', source, { folder: this.place.folder, name: spec.name, spec: cloneSpec }, 'clone', spec.name, task))) as MoRef;
    try {
      // Its own child disks go: the drill runs on the point's disks, and nothing else uses them.
      await this.vms.setDiskFiles(spec.name, spec.disks.map((d) => ({ target: d.target!, path: d.path })), { destroyReplaced: true });
      await this.fields.replaceLabels(ref, 'VirtualMachine', undefined, spec.labels ?? {});
    } catch (err) {
      // A half-made clone must not be found by a resumed drill and booted as it is.
      await this.vms.destroy(spec.name).catch((cleanup: unknown) => Promise.reject(new CleanupFailed(err, `destroy the clone ${spec.name}`, cleanup)));
      throw err;
    }
    return ref;
  }

  /** The target's `vmdr-drill-base` snapshot, taken now if it has none. */
  private async baseSnapshot(target: VmRecord, task: TaskOptions): Promise<MoRef> {
    const [found] = await retrieve(this.vms.session, { type: 'VirtualMachine', paths: ['snapshot'], objects: [target.ref] });
    const existing = findSnapshot(items<SnapshotTree>((found?.props.snapshot as { rootSnapshotList?: unknown } | undefined)?.rootSnapshotList), DRILL_BASE_SNAPSHOT);
    if (existing) return existing;
    const args = { name: DRILL_BASE_SNAPSHOT, description: 'vmdr: what drills of this target are linked clones of; keep it while drills run', memory: false, quiesce: false };
    return (await this.vms.task('CreateSnapshot_Task', target.ref, args, 'snapshot', target.info.name, task)) as MoRef;
  }
}

function findSnapshot(trees: SnapshotTree[], name: string): MoRef | undefined {
  for (const t of trees) {
    if (t.name === name) return t.snapshot;
    const inner = findSnapshot(items<SnapshotTree>(t.childSnapshotList), name);
    if (inner) return inner;
  }
  return undefined;
}
