/**
 * QEMU's changed-block tracking through libvirt: checkpoints (persistent dirty bitmaps in the
 * qcow2 images) and pull-mode backups that export every disk of the VM, frozen at one instant,
 * over NBD with a `qemu:dirty-bitmap:*` context of what changed since an earlier checkpoint.
 * Every call goes over the adapter's one connection. vmdr deletes only the
 * checkpoints it named (prefix `vmdr-`). A shut-off VM has no QEMU to back up: its images are
 * exported read-only by qemu-nbd instead (offline-export.ts), with the bitmap of `since`. A job
 * a session left behind is found and ended by backup-jobs.ts. Raw disks, which libvirt cannot
 * checkpoint, are tracked by transient bitmaps (transient-bitmaps.ts); a disk without a bitmap of
 * `since` is read whole or by hashes, alone (incremental-disks.ts). With `quiesce`, the guest's
 * filesystems are frozen for the backup's begin, the instant of the checkpoint (guest-freeze.ts).
 * Every pause and freeze is recorded first (hold-records.ts): a VM whose holder died is released
 * by the next vmdr process that looks (left-holds.ts).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackupExport, BackupOptions, BackupSession, Checkpoint, ChangeTracker, EndedBackupJob, GuestFreeze, Hold, QuiesceOptions, QuiesceResult, ReleasedHold, VmPause } from '../types.js';
import { CheckpointBitmapBroken, HypervisorOperationFailed, NotManagedByVmdr, VmdrError } from '../errors.js';
import { VIR_DOMAIN_BACKUP_BEGIN, VIR_ERR } from './api/codes.js';
import { abortJob, endLeftoverBackup, markInUse, SCRATCH_DIR_PREFIX, scratchFileName } from './backup-jobs.js';
import type { LibvirtConnection } from './connection.js';
import { libvirtCode } from './errors.js';
import { checkpointDisks, readsFrom, type BackupDisk, type DiskRead } from './incremental-disks.js';
import { freezeGuests } from './guest-freeze.js';
import { HoldRecords } from './hold-records.js';
import { releaseLeftHolds } from './left-holds.js';
import { pauseVms } from './vm-pause.js';
import { exportImagesOffline, hasUsableBitmap } from './offline-export.js';
import { makeScratchImages } from './scratch-images.js';
import { exportChanges, rawDiskNodes, removeBitmaps, removeCopies, removeLeftovers, startBitmaps, unexportChanges, type ChangesExport, type RawDiskNode } from './transient-bitmaps.js';
import { at, buildXml, childElements, element, parseLibvirtXml, textElement, textOf } from './xml.js';

export const CHECKPOINT_PREFIX = 'vmdr-';

/** libvirt's code for a checkpoint whose bitmap QEMU cannot use (missing, broken, not in the backing chain). */
function bitmapBroken(err: unknown): boolean {
  return libvirtCode((err as { cause?: unknown }).cause ?? err) === VIR_ERR.CHECKPOINT_INCONSISTENT;
}

export class LibvirtChangeTracker implements ChangeTracker {
  /** The test driver's VMs live and die with this process: nothing outlives a hold there. */
  private readonly records: HoldRecords | undefined;

  constructor(private readonly conn: LibvirtConnection) {
    this.records = conn.uri.startsWith('test:') ? undefined : new HoldRecords(conn.uri);
  }

  private get uri(): string {
    return this.conn.uri;
  }

  async checkpointNames(vm: string): Promise<string[]> {
    return this.conn.call({ operation: 'list checkpoints', vm }, 'listCheckpointNames', vm);
  }

  async listCheckpoints(vm: string): Promise<Checkpoint[]> {
    const checkpoints = await this.conn.call({ operation: 'list checkpoints', vm }, 'listCheckpoints', vm);
    return Promise.all(
      checkpoints.map(async ({ name, xml: text }) => {
        const xml = parseLibvirtXml(text, 'checkpoint XML');
        const parent = textOf(at(xml, 'parent', 'name'));
        return {
          name,
          ...(parent ? { parent } : {}),
          createdAt: new Date(Number(textOf(at(xml, 'creationTime')) ?? 0) * 1000),
          disks: childElements(at(xml, 'disks') ?? element('disks'), 'disk')
            .filter((d) => d.attrs.checkpoint === 'bitmap')
            .map((d) => d.attrs.name ?? ''),
        };
      }),
    );
  }

  async beginBackup(vm: string, options: BackupOptions): Promise<BackupSession> {
    const all = await this.backupDisks(vm);
    const disks = options.disks ?? all.map((d) => d.target);
    // While the export lives, QEMU copies blocks the guest overwrites into a scratch image first.
    const scratch = options.scratchDir ?? (await mkdtemp(SCRATCH_DIR_PREFIX));
    // The scratch images hold the guest's blocks as they were: QEMU (another user) opens them by
    // name, so it needs to pass through the directory, and nobody needs to list it.
    await chmod(scratch, 0o711);
    const scratchFiles = disks.map((d) => join(scratch, scratchFileName(vm, d)));
    const backedUp = all.filter((d) => disks.includes(d.target));
    // A shut-off VM has no QEMU to ask: the offline path below takes it.
    const raw = await rawDiskNodes(this.conn, vm, backedUp.filter((d) => d.format === 'raw')).catch((err: unknown) => {
      if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return undefined;
      throw err;
    });
    const reads: DiskRead[] = options.since && raw ? readsFrom(backedUp, options.since, checkpointDisks(await this.conn.call({ operation: 'read checkpoint', vm }, 'checkpointXml', vm, options.since)), raw) : backedUp.map((disk) => ({ disk }));
    const readOf = (d: string) => reads.find((r) => r.disk.target === d);
    const byBitmap = (d: string) => options.since !== undefined && !readOf(d)?.untracked;
    const removeScratch = () => (options.scratchDir ? Promise.all(scratchFiles.map((f) => rm(f, { force: true }))) : rm(scratch, { recursive: true, force: true }));
    const server =
      options.listen.transport === 'tcp'
        ? element('server', { transport: 'tcp', name: options.listen.host, port: String(options.listen.port) })
        : element('server', { transport: 'unix', socket: options.listen.socket });
    const backup = element('domainbackup', { mode: 'pull' }, [
      ...(options.since ? [textElement('incremental', options.since)] : []),
      server,
      element(
        'disks',
        {},
        // Export and bitmap names are set here, not left to libvirt's defaults, so the session is
        // known without asking libvirt for the backup XML again each cycle.
        disks.map((d, i) => {
          // libvirt's own bitmap (qcow2), else the whole disk: a raw disk's changes are exported apart.
          const libvirtBitmap = byBitmap(d) && !readOf(d)?.transient;
          const mode: Record<string, string> = options.since && !libvirtBitmap ? { backupmode: 'full' } : {};
          return element('disk', { name: d, backup: 'yes', ...mode, type: 'file', exportname: d, ...(libvirtBitmap ? { exportbitmap: `backup-${d}` } : {}) }, [
            element('scratch', { file: scratchFiles[i]! }),
          ]);
        }),
      ),
    ]);
    const checkpoint = element('domaincheckpoint', {}, [
      textElement('name', options.checkpoint),
      element('disks', {}, disks.map((d) => element('disk', { name: d, checkpoint: readOf(d)?.disk.format === 'raw' ? 'no' : 'bitmap' }))),
    ]);
    // In use before the job exists: a leftover sweep of another session must never see it unclaimed.
    markInUse(scratchFiles, true);
    let quiesce: QuiesceResult | undefined;
    try {
      if (raw) {
        // Only a bitmap besides `since` can be a leftover: a steady cycle asks libvirt nothing more.
        if (raw.some((r) => [...r.bitmaps].some((b) => b !== options.since))) await removeLeftovers(this.conn, vm, raw, await this.checkpointNames(vm));
        // Recording before the backup's instant: nothing written after it escapes the next cycle.
        await startBitmaps(this.conn, vm, raw, options.checkpoint);
      }
      const made = await makeScratchImages(all, disks, scratchFiles);
      // Frozen only around the call that fixes the checkpoint's instant: the scratch images are made before.
      const freeze = options.quiesce && (await this.freezeGuests([vm], options.quiesce));
      try {
        await this.conn.call({ operation: 'begin backup', vm, requires: 'running' }, 'beginBackup', vm, buildXml(backup), buildXml(checkpoint), made ? VIR_DOMAIN_BACKUP_BEGIN.REUSE_EXTERNAL : 0);
      } finally {
        quiesce = (await freeze?.thaw())?.get(vm);
      }
    } catch (err) {
      markInUse(scratchFiles, false);
      await removeScratch();
      if (raw) await removeBitmaps(this.conn, vm, raw, options.checkpoint).catch(() => undefined);
      if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') {
        const session = await this.beginOfflineBackup(vm, disks, options);
        return quiesce ? { ...session, quiesce } : session;
      }
      if (options.since && bitmapBroken(err)) throw new CheckpointBitmapBroken(vm, this.uri, options.since, (err as Error).message, { cause: err });
      throw err;
    }
    const tracked = (raw ?? []).filter((r) => readOf(r.target)?.transient);
    let changes = new Map<string, ChangesExport>();
    let ending: Promise<void> | undefined;
    // A pull backup has no natural end: aborting the job is how libvirt stops the exports. Once
    // end() is called the session is given up, so a job an abort failed to end is a leftover.
    const end = () =>
      (ending ??= (async () => {
        markInUse(scratchFiles, false);
        await unexportChanges(this.conn, vm, [...changes.keys()]);
        // The scratch images are vmdr's, and libvirt leaves them: they go even when the abort
        // fails (the VM is gone, or a leftover job the next cycle ends no longer needs them).
        await abortJob(this.conn, vm).finally(removeScratch);
        // A copy that stays (the VM stopped) costs memory only; the next cycle removes it.
        if (tracked.length > 0) await removeCopies(this.conn, vm, tracked, options.checkpoint).catch(() => undefined);
      })().catch((err: unknown) => {
        ending = undefined;
        throw err;
      }));
    if (options.since && tracked.length > 0) {
      try {
        changes = await exportChanges(this.conn, vm, tracked, options.since, options.checkpoint);
      } catch (err) {
        await end().catch(() => undefined);
        throw err;
      }
    }
    const exports: BackupExport[] = disks.map((d) => {
      const untracked = readOf(d)?.untracked;
      const apart = changes.get(d);
      return {
        disk: d,
        exportName: d,
        ...(untracked ? { untracked } : {}),
        ...(apart ? { dirtyContext: apart.context, dirtyExportName: apart.exportName } : byBitmap(d) ? { dirtyContext: `qemu:dirty-bitmap:backup-${d}` } : {}),
      };
    });
    return {
      checkpoint: options.checkpoint,
      stateOf: options.checkpoint,
      ...(options.since ? { since: options.since } : {}),
      ...(quiesce ? { quiesce } : {}),
      listen: options.listen,
      exports,
      end,
    };
  }

  freezeGuests(vms: string[], options: QuiesceOptions): Promise<GuestFreeze> {
    return freezeGuests(this.conn, vms, options, this.records);
  }

  pauseVms(vms: string[], options: QuiesceOptions): Promise<VmPause> {
    return pauseVms(this.conn, vms, options, this.records);
  }

  async holds(): Promise<Hold[]> {
    return ((await this.records?.list()) ?? []).map(({ file: _, ...hold }) => hold);
  }

  async releaseLeftHolds(vms?: string[]): Promise<ReleasedHold[]> {
    return this.records ? releaseLeftHolds(this.conn, this.records, vms) : [];
  }

  /**
   * The VM is shut off: each disk's image read by its own qemu-nbd, with the persistent bitmap of
   * `since` that QEMU saved at shutdown. No checkpoint is created; the data is the state of `since`
   * plus the writes up to the shutdown, so `since` is what the session says it is the state of.
   */
  private async beginOfflineBackup(vm: string, targets: string[], options: BackupOptions): Promise<BackupSession> {
    const disks = (await this.backupDisks(vm)).filter((d) => targets.includes(d.target));
    const { since } = options;
    if (since) {
      for (const d of disks) {
        const usable = d.format === 'qcow2' && (await hasUsableBitmap(d.image, since).catch((err: unknown) => {
          throw new HypervisorOperationFailed('read image info', this.uri, (err as Error).message, { vm, cause: err });
        }));
        if (!usable) {
          throw new CheckpointBitmapBroken(vm, this.uri, since, `missing or broken bitmap '${since}' in ${d.image} (disk '${d.target}' of shut-off VM ${JSON.stringify(vm)})`, { disk: d.target });
        }
      }
    }
    const served = await exportImagesOffline(disks.map((d) => ({ ...d, ...(since ? { bitmap: since } : {}) }))).catch((err: unknown) => {
      throw new HypervisorOperationFailed('export shut-off disks', this.uri, (err as Error).message, { vm, cause: err });
    });
    return {
      checkpoint: options.checkpoint,
      ...(since ? { since, stateOf: since } : {}),
      offline: true,
      listen: options.listen,
      exports: disks.map((d) => ({
        disk: d.target,
        exportName: d.target,
        listen: served.servers.get(d.target)!.listen,
        ...(since ? { dirtyContext: `qemu:dirty-bitmap:${since}` } : {}),
      })),
      end: served.stop,
    };
  }

  endLeftoverBackup(vm: string, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<EndedBackupJob | undefined> {
    return endLeftoverBackup(this.conn, vm, options);
  }

  async deleteCheckpoint(vm: string, name: string): Promise<void> {
    if (!name.startsWith(CHECKPOINT_PREFIX)) throw new NotManagedByVmdr('checkpoint', name, this.uri, { vm });
    await this.conn.call({ operation: 'delete checkpoint', vm }, 'deleteCheckpoint', vm, name, false).catch(async (err: unknown) => {
      // After QEMU died without saving its bitmaps (host crash, kill -9), the checkpoint's bitmap
      // is broken or gone and libvirt cannot merge it; its metadata is all that is left to remove.
      if (!bitmapBroken(err) && !(libvirtCode((err as { cause?: unknown }).cause ?? err) === VIR_ERR.INTERNAL_ERROR && (await this.bitmapLost(vm, name)))) throw err;
      await this.conn.call({ operation: 'delete checkpoint', vm }, 'deleteCheckpoint', vm, name, true);
    });
    await this.removeTransientBitmaps(vm, name);
  }

  /** The raw disks' bitmaps of a deleted checkpoint; a VM that is not running has none. */
  private async removeTransientBitmaps(vm: string, name: string): Promise<void> {
    const raw = (await this.backupDisks(vm)).filter((d) => d.format === 'raw');
    if (raw.length === 0) return;
    const nodes = await rawDiskNodes(this.conn, vm, raw).catch((err: unknown) => {
      if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return [] as RawDiskNode[];
      throw err;
    });
    await removeBitmaps(this.conn, vm, nodes, name);
  }

  /**
   * Whether an image of the checkpoint's disks has no usable bitmap of it. Deleting such a
   * checkpoint of a running VM fails with VIR_ERR_INTERNAL_ERROR ("bitmap not found in backing
   * chain", libvirt 9 on the lab), not CHECKPOINT_INCONSISTENT; the image itself tells.
   */
  private async bitmapLost(vm: string, name: string): Promise<boolean> {
    const checkpoint = (await this.listCheckpoints(vm)).find((c) => c.name === name);
    if (!checkpoint) return false;
    const images = (await this.backupDisks(vm)).filter((d) => d.format === 'qcow2' && checkpoint.disks.includes(d.target));
    const usable = await Promise.all(images.map((d) => hasUsableBitmap(d.image, name).catch(() => true)));
    return usable.includes(false);
  }

  /** Every writable disk of the VM: the seed and CD-ROMs carry nothing to replicate. */
  private async backupDisks(vm: string): Promise<BackupDisk[]> {
    const xml = parseLibvirtXml(await this.conn.call({ operation: 'read VM', vm }, 'domainXml', vm, 0), 'domain XML');
    return childElements(at(xml, 'devices') ?? element('devices'), 'disk')
      .filter((d) => d.attrs.device === 'disk' && !at(d, 'readonly'))
      .map((d) => ({
        target: at(d, 'target')?.attrs.dev ?? '',
        image: at(d, 'source')?.attrs.file ?? at(d, 'source')?.attrs.dev ?? '',
        format: at(d, 'driver')?.attrs.type === 'raw' ? ('raw' as const) : ('qcow2' as const),
        ...(at(d, 'source')?.attrs.index ? { index: at(d, 'source')!.attrs.index } : {}),
      }))
      .filter((d) => d.target);
  }
}
