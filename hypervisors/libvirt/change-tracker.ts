/**
 * QEMU's changed-block tracking through libvirt: checkpoints (persistent dirty bitmaps in the
 * qcow2 images) and pull-mode backups that export every disk of the VM, frozen at one instant,
 * over NBD with a `qemu:dirty-bitmap:*` context of what changed since an earlier checkpoint.
 * The binding has no checkpoint or backup calls, so this speaks virsh. vmdr deletes only the
 * checkpoints it named (prefix `vmdr-`). A shut-off VM has no QEMU to back up: its images are
 * exported read-only by qemu-nbd instead (offline-export.ts), with the bitmap of `since`. A job
 * a session left behind is found and ended by backup-jobs.ts.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackupExport, BackupOptions, BackupSession, Checkpoint, ChangeTracker, EndedBackupJob } from '../types.js';
import { CheckpointBitmapBroken, HypervisorOperationFailed, NotManagedByVmdr, VmdrError } from '../errors.js';
import { abortJob, endLeftoverBackup, markInUse, SCRATCH_DIR_PREFIX, scratchFileName } from './backup-jobs.js';
import { exportImagesOffline, hasUsableBitmap } from './offline-export.js';
import { virsh } from './virsh.js';
import { at, buildXml, childElements, element, parseLibvirtXml, textElement, textOf } from './xml.js';

export const CHECKPOINT_PREFIX = 'vmdr-';
/** libvirt's words for a checkpoint whose bitmap QEMU cannot use: "missing or broken bitmap", "not found in backing chain". */
const BROKEN_BITMAP = /bitmap .*not found in backing chain|missing or broken bitmap|bitmap.*(inconsistent|in.use)/i;

export class LibvirtChangeTracker implements ChangeTracker {
  constructor(
    private readonly uri: string,
    /** The VM's live XML from the adapter's open connection: cheaper than a virsh process per cycle. */
    private readonly domainXml: (vm: string) => Promise<string>,
  ) {}

  async checkpointNames(vm: string): Promise<string[]> {
    return (await virsh(this.uri, ['checkpoint-list', vm, '--name', '--topological'], { operation: 'list checkpoints', vm }))
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  }

  async listCheckpoints(vm: string): Promise<Checkpoint[]> {
    const names = await this.checkpointNames(vm);
    return Promise.all(
      names.map(async (name) => {
        const xml = parseLibvirtXml(await virsh(this.uri, ['checkpoint-dumpxml', vm, name], { operation: 'read checkpoint', vm }), 'checkpoint XML');
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
    const disks = options.disks ?? (await this.backupDisks(vm)).map((d) => d.target);
    // While the export lives, QEMU copies blocks the guest overwrites into a scratch image first.
    const scratch = options.scratchDir ?? (await mkdtemp(SCRATCH_DIR_PREFIX));
    await chmod(scratch, 0o755);
    const scratchFiles = disks.map((d) => join(scratch, scratchFileName(vm, d)));
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
        // known without asking libvirt again (a virsh backup-dumpxml per cycle).
        disks.map((d, i) =>
          element('disk', { name: d, backup: 'yes', type: 'file', exportname: d, ...(options.since ? { exportbitmap: `backup-${d}` } : {}) }, [
            element('scratch', { file: scratchFiles[i]! }),
          ]),
        ),
      ),
    ]);
    const checkpoint = element('domaincheckpoint', {}, [
      textElement('name', options.checkpoint),
      element('disks', {}, disks.map((d) => element('disk', { name: d, checkpoint: 'bitmap' }))),
    ]);
    const dir = await mkdtemp(join(tmpdir(), 'vmdr-backup-'));
    // In use before the job exists: a leftover sweep of another session must never see it unclaimed.
    markInUse(scratchFiles, true);
    try {
      await writeFile(join(dir, 'backup.xml'), buildXml(backup));
      await writeFile(join(dir, 'checkpoint.xml'), buildXml(checkpoint));
      await virsh(this.uri, ['backup-begin', vm, join(dir, 'backup.xml'), join(dir, 'checkpoint.xml')], { operation: 'begin backup', vm });
    } catch (err) {
      markInUse(scratchFiles, false);
      if (!options.scratchDir) await rm(scratch, { recursive: true, force: true });
      if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return await this.beginOfflineBackup(vm, disks, options);
      // Translated here, once: libvirt (through virsh) gives only words for it.
      if (options.since && err instanceof Error && BROKEN_BITMAP.test(err.message)) {
        throw new CheckpointBitmapBroken(vm, this.uri, options.since, err.message, { cause: err });
      }
      throw err;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    let ending: Promise<void> | undefined;
    // A pull backup has no natural end: aborting the job is how libvirt stops the exports. Once
    // end() is called the session is given up, so a job an abort failed to end is a leftover.
    const end = () =>
      (ending ??= (async () => {
        markInUse(scratchFiles, false);
        await abortJob(this.uri, vm);
        if (!options.scratchDir) await rm(scratch, { recursive: true, force: true });
      })().catch((err: unknown) => {
        ending = undefined;
        throw err;
      }));
    const exports: BackupExport[] = disks.map((d) => ({
      disk: d,
      exportName: d,
      ...(options.since ? { dirtyContext: `qemu:dirty-bitmap:backup-${d}` } : {}),
    }));
    return {
      checkpoint: options.checkpoint,
      stateOf: options.checkpoint,
      ...(options.since ? { since: options.since } : {}),
      listen: options.listen,
      exports,
      end,
    };
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
    return endLeftoverBackup(this.uri, vm, options);
  }

  async deleteCheckpoint(vm: string, name: string): Promise<void> {
    if (!name.startsWith(CHECKPOINT_PREFIX)) throw new NotManagedByVmdr('checkpoint', name, this.uri, { vm });
    await virsh(this.uri, ['checkpoint-delete', vm, name], { operation: 'delete checkpoint', vm }).catch(async (err: unknown) => {
      // After QEMU died without saving its bitmaps (host crash, kill -9), the checkpoint's bitmap
      // is broken or gone and libvirt cannot merge it; its metadata is all that is left to remove.
      if (!BROKEN_BITMAP.test((err as Error).message)) throw err;
      await virsh(this.uri, ['checkpoint-delete', vm, name, '--metadata'], { operation: 'delete checkpoint', vm });
    });
  }

  /** Every writable disk of the VM: the seed and CD-ROMs carry nothing to replicate. */
  private async backupDisks(vm: string): Promise<{ target: string; image: string; format: 'qcow2' | 'raw' }[]> {
    const xml = parseLibvirtXml(await this.domainXml(vm), 'domain XML');
    return childElements(at(xml, 'devices') ?? element('devices'), 'disk')
      .filter((d) => d.attrs.device === 'disk' && !at(d, 'readonly'))
      .map((d) => ({
        target: at(d, 'target')?.attrs.dev ?? '',
        image: at(d, 'source')?.attrs.file ?? at(d, 'source')?.attrs.dev ?? '',
        format: at(d, 'driver')?.attrs.type === 'raw' ? ('raw' as const) : ('qcow2' as const),
      }))
      .filter((d) => d.target);
  }
}
