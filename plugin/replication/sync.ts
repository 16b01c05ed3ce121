/**
 * One sync cycle of one protection, on its source host: ask the receiver which recovery point the
 * replica is at, export the VM's disks frozen at a new checkpoint, ship what changed since the
 * replica's checkpoint (or everything, or what block hashes say differs when no bitmap can be
 * trusted), and on the receiver's acknowledgement drop the checkpoints no longer needed. A cycle
 * that fails changes nothing the next cycle depends on: it starts again from the same checkpoint.
 * A shut-off VM's disks are read from their images (an offline session): see recordedCheckpoint.
 */
import { randomUUID } from 'node:crypto';
import type { BackupSession, HypervisorAdapter, Progress, TaskOptions } from '../../hypervisors/types.js';
import { Unsupported, VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { checkSource } from '../protections/source-identity.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { recordSyncEnd, recordSyncStart } from '../state/sync-runs.js';
import { HASH_BLOCK, blockHashes, differingRanges } from './capture/block-hashes.js';
import { deltaStreamBody, type DiskToShip } from './capture/delta-body.js';
import { ALLOCATION_CONTEXT, opBytes, planFull, planIncremental, planRanges, type ShipOp } from './capture/extents.js';
import { NbdClient, STATE_DIRTY } from './nbd/client.js';
import { NbdError } from './nbd/errors.js';
import { fenceOf } from '../sites/fence.js';
import { BackupExportLost, SourceFencedForOtherCopy } from './errors.js';
import type { RecoveryPoint } from './replica/store.js';
import { DeltaStreamEncoder } from './stream/encode.js';
import { startPackWorkersFor } from './stream/pack-pool.js';
import type { StreamHeader } from './stream/format.js';
import { failpoint } from './replica/failpoints.js';
import { releaseHoldsBeforeCycle } from './left-holds.js';
import { newCheckpointName, pruneCheckpoints } from './sender/checkpoints.js';
import { holdSource, sourceKey } from './source-lock.js';
import { freeLoopbackPort } from './sender/nbd-port.js';
import type { ReceiverClient } from './sender/receiver-client.js';

export type SyncKind = StreamHeader['kind'];

export interface SyncOptions extends TaskOptions {
  /** Ship every byte even when an incremental is possible. */
  full?: boolean;
  /**
   * The last cycle of a loop that has run without a hitch since: the replica is at its point and
   * its checkpoint is the only one of ours, so neither the receiver nor libvirt is asked again.
   * Should either have changed behind the loop's back, the receiver refuses the stream's base (or
   * backup-begin the checkpoint), the cycle fails, and the next one asks.
   */
  previous?: SyncResult;
  /**
   * This cycle is a consistency group member's (group-cycle.ts): its backup begins through
   * `capture`, inside the group's pause or freeze window, and its point carries `instant`.
   */
  group?: GroupCapture;
}

export interface GroupCapture {
  instant: string;
  /** Runs `begin` inside the group's window; the session says how the group's freeze went (application). */
  capture(begin: () => Promise<BackupSession>): Promise<BackupSession>;
}

export interface SyncResult {
  protection: string;
  kind: SyncKind;
  /** Why this kind: "first sync", "checkpoint … is gone", ... */
  reason: string;
  point: RecoveryPoint;
  checkpoint: string;
  since: string | null;
  /** Bytes of disk the cycle covered (data read plus zero ranges). */
  bytesCovered: number;
  /** Bytes of the delta stream on the wire (after compression, with framing). */
  bytesShipped: number;
  durationMs: number;
  /** What went wrong without failing the cycle (an old checkpoint that would not go). */
  warnings: string[];
  /** The VM was shut off: its disks were read from their images, no checkpoint was made. */
  offline?: true;
  /** The source VM synced: its name now (it may have been renamed) and its identity. */
  source: { vm: string; uuid: string };
}

interface Choice {
  kind: SyncKind;
  since?: string;
  reason: string;
}

export async function syncProtection(
  protection: Protection,
  deps: { sites: SiteConnections; state: StateStore; receiver: ReceiverClient },
  options: SyncOptions = {},
): Promise<SyncResult> {
  const started = Date.now();
  const { signal } = options;
  const subject = { protection: protection.name, vm: protection.source.vm };
  const onProgress = options.onProgress && ((p: Progress) => options.onProgress!({ ...p, subject }));
  const source = await deps.sites.adapter(protection.source.site);
  const tracker = source.changeTracker;
  if (!tracker) throw new Unsupported('changed-block tracking', source.uri);

  onProgress?.({ phase: 'prepare', unit: 'steps', done: 0, total: 1, detail: 'checkpoint and backup job' });
  // After an offline cycle the VM may have started: ask again.
  const previous = options.previous?.warnings.length === 0 && !options.previous.offline && !options.full ? options.previous : undefined;
  // VMs a dead vmdr process left paused or frozen run again before this cycle holds any (left-holds.ts).
  const warnings: string[] = previous ? [] : await releaseHoldsBeforeCycle(tracker);
  // Another VM under the source's name is refused here, before anything is captured. A loop's
  // next cycle needs no new look: a replaced VM lacks the checkpoint, and that cycle fails.
  const [latest, sourceVm] = previous
    ? [previous.point, previous.source]
    : await Promise.all([
        deps.receiver.latestPoint(protection.name),
        checkSource(source, protection, deps.receiver).then(({ source: s, notes }) => (warnings.push(...notes), { vm: s.vm, uuid: s.uuid })),
      ]);
  const vm = sourceVm.vm;
  // Another protection of this VM (fan-out) captures one at a time with this one (source-lock.ts).
  const key = sourceKey(protection.source.site, sourceVm.uuid);
  const release = await holdSource(key, signal);
  try {
    // A backup job an earlier cycle left (its process died, or libvirtd restarted under its end)
    // would block this cycle's own; a cycle that ended cleanly left none. Awaited before the prune.
    const leftover = previous ? undefined : tracker.endLeftoverBackup(vm, { signal });
    // Should libvirt fail first, this rejection must not go unhandled.
    leftover?.catch(() => undefined);
    const names = previous ? [previous.checkpoint] : await tracker.checkpointNames(vm);
    let choice = choose(names, latest, options.full);
    const checkpoint = newCheckpointName(protection.name);
    // A cycle that could not even start (VM off, libvirt down, a job in the way) is history `vmdr status` shows too.
    const notStarted = (err: unknown) => {
      recordFailure(deps.state, recordSyncStart(deps.state, runStart(protection, choice, checkpoint)), err);
      return err;
    };
    try {
      const ended = await leftover;
      if (ended) warnings.push(`ended the ${ended.job} left on VM ${JSON.stringify(vm)} by ${ended.leftBy}`);
    } catch (err) {
      throw notStarted(err);
    }
    // Leftovers of failed cycles; the checkpoint the replica is at stays. One that cannot go is
    // reported, not fatal: replication matters more than a tidy checkpoint list.
    await pruneCheckpoints(tracker, vm, protection.name, names, choice.since).catch((err: unknown) => {
      warnings.push(`could not delete an old checkpoint: ${(err as Error).message}`);
    });

    const createdAt = new Date();
    let session: BackupSession;
    const group = options.group;
    // A group member is frozen (or paused) by its group, all members at once: not by its own cycle.
    const quiesce = protection.consistency === 'application' && !group ? { quiesce: { timeoutMs: protection.freezeTimeout } } : {};
    failpoint('sync-before-backup');
    try {
      try {
        const listen = await loopback();
        const begin = () => tracker.beginBackup(vm, { checkpoint, ...(choice.since ? { since: choice.since } : {}), listen, ...quiesce });
        session = group ? await group.capture(begin) : await begin();
      } catch (err) {
        if (!(choice.kind === 'incremental' && err instanceof VmdrError && err.code === 'CHECKPOINT_BITMAP_BROKEN')) throw err;
        // A resync begun now would fall outside the group's window: the checkpoint goes, and the
        // member's next cycle (solo or the group's) resyncs.
        if (group) {
          await tracker.deleteCheckpoint(vm, choice.since!).catch(() => undefined);
          throw err;
        }
        // The loop's fast path did not look: a VM replaced since lacks the bitmap too, and must not be resynced.
        if (previous) await checkSource(source, protection, deps.receiver);
        const broken = choice.since!;
        choice = { kind: 'resync', reason: `the bitmap of checkpoint ${broken} cannot be used (${err.message})` };
        // A broken checkpoint may refuse deletion too; the resync does not need it gone, and the
        // prune after the next acknowledgement tries again.
        await tracker.deleteCheckpoint(vm, broken).catch((e: unknown) => warnings.push(`could not delete checkpoint ${broken}: ${(e as Error).message}`));
        session = await tracker.beginBackup(vm, { checkpoint, listen: await loopback(), ...quiesce });
      }
    } catch (err) {
      throw notStarted(err);
    }

    onProgress?.({ phase: 'prepare', unit: 'steps', done: 1, total: 1, detail: session.offline ? 'VM is shut off: reading its images' : `checkpoint ${checkpoint}` });
    // A fenced source is off: only its offline sessions need the look.
    if (session.offline) {
      const fence = fenceOf(await source.getVm(vm).catch(() => ({ labels: {} })));
      if (fence && fence.protection !== protection.name) {
        await session.end().catch(() => undefined);
        throw notStarted(new SourceFencedForOtherCopy(protection.name, vm, fence));
      }
    }
    const recorded = recordedCheckpoint(session, protection.name);
    if (session.offline) choice = { ...choice, reason: `${choice.reason}; VM is shut off: its disks were read from their images` };
    choice = withUntrackedDisks(choice, session);
    const run = recordSyncStart(deps.state, runStart(protection, choice, recorded));
    const clients: NbdClient[] = [];
    try {
      const disks: DiskToShip[] = [];
      const header: StreamHeader = {
        session: randomUUID(),
        protection: protection.name,
        checkpoint: recorded,
        since: choice.since ?? null,
        base: latest?.id ?? null,
        kind: choice.kind,
        disks: [],
        createdAt: createdAt.toISOString(),
      // Only when asked: a receiver older than the fields refuses them.
      // A group member's consistency is its group's: frozen by the group (application) or paused (crash, no fields).
      ...((group ? session.quiesce : protection.consistency === 'application') ? consistencyFields(session) : {}),
      ...(group ? { groupInstant: group.instant } : {}),
      };
      for (const [index, exp] of session.exports.entries()) {
        const byBitmap = choice.kind !== 'full' && !exp.untracked && exp.dirtyContext !== undefined;
        const contexts = [ALLOCATION_CONTEXT, ...(byBitmap && !exp.dirtyExportName ? [exp.dirtyContext!] : [])];
        const client = await NbdClient.connect(exp.listen ?? session.listen, { exportName: exp.exportName, metaContexts: contexts, signal });
        clients.push(client);
        header.disks.push({ name: exp.disk, sizeBytes: client.size });
        // Planning counts disks; only the ship phase knows its bytes.
        const phase = choice.kind === 'resync' ? 'compare' : 'plan';
        const count = session.exports.length;
        onProgress?.({ phase, unit: 'steps', done: index, total: count, detail: exp.disk });
        // A raw disk's changes are exported apart from its data (transient bitmaps): read, then closed.
        const changes = byBitmap && exp.dirtyExportName ? await NbdClient.connect(exp.listen ?? session.listen, { exportName: exp.dirtyExportName, metaContexts: [exp.dirtyContext!], signal }) : undefined;
        if (changes) clients.push(changes);
        const kind = exp.untracked?.plan ?? (choice.kind === 'resync' && byBitmap ? 'incremental' : choice.kind);
        disks.push({ index, client, ops: await plan(kind, client, byBitmap ? { client: changes ?? client, context: exp.dirtyContext! } : undefined, latest, exp.disk, deps.receiver, protection.name, signal) });
        if (changes) await changes.close().finally(() => clients.splice(clients.indexOf(changes), 1));
        onProgress?.({ phase, unit: 'steps', done: index + 1, total: count, detail: exp.disk });
      }

      // The cycle's size, before its first frame: the DR site refuses a cycle its tenant's storage quota cannot take.
      header.dataBytes = disks.reduce((sum, d) => sum + opBytes(d.ops, 'data'), 0);
      const zeroTotal = disks.reduce((sum, d) => sum + opBytes(d.ops, 'zero'), 0);
      const total = header.dataBytes + zeroTotal;
      // Zero ranges are said apart in the progress: a mostly empty disk's initial sync is mostly
      // zeroes, shipped in milliseconds (a frame header per 2 GiB), and a time left that counted them
      // as bytes to ship would be far too long (scripts/cli/progress.ts, secondsLeft).
      const zeroes = (zeroDone: number) => (zeroTotal ? { zeroes: { done: zeroDone, total: zeroTotal } } : {});
      // zstd's threads load while the first frames are read and packed here.
      if (protection.compression !== 'off') startPackWorkersFor(header.dataBytes);
      let done = 0;
      let zeroDone = 0;
      const encoder = new DeltaStreamEncoder(header, { compressionLevel: protection.compression === 'off' ? 0 : 1 });
      // The backup job ends as soon as the last read returns, while the receiver is still flushing
      // and committing: the next cycle cannot begin its own job before this one has ended.
      let captureEnded: Promise<void> | undefined;
      // The VM is free for another protection's capture once the job has ended, before the commit.
      const endCapture = () => (captureEnded ??= closeAll(clients).then(() => session.end()).finally(release));
      // The request a failed read of the export breaks only says its stream was cut: the read's failure is the cycle's.
      let exportFailed: NbdError | undefined;
      const body = noting((err) => err instanceof NbdError && (exportFailed ??= err), deltaStreamBody(
        encoder,
        disks,
        (bytes, zero) => {
          done += bytes;
          if (zero) zeroDone += bytes;
          const limit = deps.receiver.limit();
          onProgress?.({ phase: 'ship', unit: 'bytes', done: Math.min(done, total), total, ...(limit ? { limit } : {}), ...zeroes(zeroDone) });
        },
        signal,
        () => void endCapture().catch(() => undefined),
      ));
      failpoint('sync-backup-running');
      const point = await deps.receiver.sendCycle(protection.name, body, signal).catch(async (err: unknown) => {
        throw exportFailed ? await exportLost(source, vm, exportFailed) : err;
      });
      onProgress?.({ phase: 'ship', unit: 'bytes', done: total, total, detail: `committed ${point.id}`, ...zeroes(zeroTotal) });
      recordSyncEnd(deps.state, run, { outcome: 'committed', point: point.id, bytesShipped: encoder.wireBytes, dataBytes: point.dataBytes });
      // The point is safe whatever happens to the job; one that will not end (libvirtd is away) is
      // said, and the next cycle ends it before it begins its own.
      await endCapture()
        .catch(() => session.end())
        .catch((err: unknown) => warnings.push(`the backup job on VM ${JSON.stringify(vm)} did not end (${(err as Error).message}); the next cycle ends it first`));
      // Acknowledged: the replica is at `recorded` now; the one it was at is dead weight (a failure
      // here only leaves it for the next cycle's prune), unless it is `recorded` itself (offline).
      if (choice.since && choice.since !== recorded) {
        const replaced = choice.since;
        const again = await holdSource(key, undefined);
        await tracker
          .deleteCheckpoint(vm, replaced)
          .catch((e: unknown) => warnings.push(`could not delete checkpoint ${replaced}: ${(e as Error).message}`))
          .finally(again);
      }
      return {
        protection: protection.name,
        kind: choice.kind,
        reason: choice.reason,
        point,
        checkpoint: recorded,
        since: choice.since ?? null,
        bytesCovered: total,
        bytesShipped: encoder.wireBytes,
        durationMs: Date.now() - started,
        warnings,
        ...(session.offline ? { offline: true as const } : {}),
        source: sourceVm,
      };
    } catch (err) {
      recordFailure(deps.state, run, err);
      for (const c of clients) c.destroy();
      await session.end().catch(() => undefined);
      // The new checkpoint stays: the receiver may have committed it and lost only the answer. The
      // next cycle asks the receiver and prunes whichever of the two the replica is not at.
      throw err;
    }
  } finally {
    release();
  }
}

/**
 * The checkpoint the new point records: the one the backup created; for an offline session (the VM
 * is shut off) none was, and the data is the state up to the shutdown, which the bitmap of `since`
 * has tracked: `since` it is. Without one, a name no VM has, so the next online cycle resyncs.
 */
function recordedCheckpoint(session: BackupSession, protection: string): string {
  if (!session.offline) return session.checkpoint;
  return session.stateOf ?? `vmdr-${protection}-offline-${Date.now()}`;
}

/** The header's account of the session's freeze (an adapter without one: it was not frozen). */
function consistencyFields(session: BackupSession): Pick<StreamHeader, 'consistency' | 'consistencyIssue' | 'freezeWindowMs'> {
  const q = session.quiesce ?? { consistency: 'crash', issue: { code: 'unsupported', message: 'the hypervisor did not freeze the guest' } };
  return {
    consistency: q.consistency,
    ...(q.issue ? { consistencyIssue: { code: q.issue.code, message: q.issue.message.slice(0, 2000) } } : {}),
    ...(q.freezeWindowMs !== undefined ? { freezeWindowMs: q.freezeWindowMs } : {}),
  };
}

function runStart(protection: Protection, choice: Choice, checkpoint: string) {
  return { protection: protection.name, kind: choice.kind, checkpoint, since: choice.since ?? null, reason: choice.reason };
}

function recordFailure(state: StateStore, run: number, err: unknown): void {
  const error = err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: String((err as Error).message ?? err) };
  recordSyncEnd(state, run, { outcome: 'failed', error });
}

async function loopback() {
  return { transport: 'tcp' as const, host: '127.0.0.1', port: await freeLoopbackPort() };
}

function choose(checkpoints: string[], latest: RecoveryPoint | undefined, full?: boolean): Choice {
  if (!latest) return { kind: 'full', reason: 'first sync: the replica has no recovery point' };
  if (full) return { kind: 'full', reason: 'a full sync was asked for' };
  if (checkpoints.includes(latest.checkpoint)) return { kind: 'incremental', since: latest.checkpoint, reason: `changes since checkpoint ${latest.checkpoint}` };
  return { kind: 'resync', reason: `checkpoint ${latest.checkpoint} of recovery point ${latest.id} is gone from the source` };
}

/**
 * Per disk of a cycle that is not a full one: each disk the tracker could not read by bitmap says
 * why; one compared by hashes makes the cycle a resync, a disk copied whole alone does not.
 */
function withUntrackedDisks(choice: Choice, session: BackupSession): Choice {
  const untracked = session.exports.flatMap((e) => (e.untracked ? [e.untracked] : []));
  if (untracked.length === 0) return choice;
  const kind = untracked.some((u) => u.plan === 'resync') ? 'resync' : choice.kind;
  return { ...choice, kind, reason: [choice.reason, ...untracked.map((u) => u.reason)].join('; ') };
}

async function plan(
  kind: SyncKind,
  client: NbdClient,
  changes: { client: NbdClient; context: string } | undefined,
  latest: RecoveryPoint | undefined,
  disk: string,
  receiver: ReceiverClient,
  protection: string,
  signal?: AbortSignal,
): Promise<ShipOp[]> {
  // An incremental asks for both maps at once: one round trip to the export instead of two.
  const dirty = kind === 'incremental' && changes ? changes.client.extents(changes.context) : undefined;
  dirty?.catch(() => undefined);
  const allocation = await client.extents(ALLOCATION_CONTEXT);
  if (kind === 'full') return planFull(allocation);
  if (kind === 'incremental') {
    // A disk added to the VM since the checkpoint has no bitmap, and on the DR side an empty base.
    if (!dirty) return planFull(allocation);
    const tail = grownTail(latest, disk, client.size);
    if (!tail) return planIncremental(await dirty, allocation);
    const changed = (await dirty).filter((e) => e.flags & STATE_DIRTY && e.offset < tail.offset).map((e) => ({ offset: e.offset, length: Math.min(e.length, tail.offset - e.offset) }));
    return planRanges([...changed, tail], allocation);
  }
  const [mine, theirs] = await Promise.all([
    blockHashes(client, HASH_BLOCK, signal),
    receiver.hashes(protection, latest!.id, disk, HASH_BLOCK, signal),
  ]);
  return planRanges(differingRanges(mine, theirs, client.size, HASH_BLOCK), allocation);
}

/**
 * A disk grown since the replica's point: its bitmap grew with it, clean, though what the new
 * tail holds (a grown block device's old contents, say) was never shipped.
 */
function grownTail(latest: RecoveryPoint | undefined, disk: string, size: number): { offset: number; length: number } | undefined {
  const known = latest?.disks.find((d) => d.disk === disk)?.sizeBytes;
  return known !== undefined && known < size ? { offset: known, length: size - known } : undefined;
}

/** `items` unchanged; a failure is told to `onFailure` before it goes on to whoever pulls them. */
async function* noting<T>(onFailure: (err: unknown) => void, items: AsyncGenerator<T>): AsyncGenerator<T> {
  try {
    yield* items;
  } catch (err) {
    onFailure(err);
    throw err;
  }
}

/** Why the export failed, as the user sees it: the VM gone or no longer running, else the NBD failure itself. */
async function exportLost(source: HypervisorAdapter, vm: string, err: NbdError): Promise<BackupExportLost> {
  const state = await source.powerState(vm).catch((e: unknown) => (e instanceof VmdrError && e.code === 'VM_NOT_FOUND' ? 'gone' : undefined));
  const why = state === 'gone' ? 'the VM no longer exists' : state && state !== 'running' && state !== 'paused' ? `the VM is ${state}` : err.message;
  return new BackupExportLost(vm, source.uri, why, err);
}

async function closeAll(clients: NbdClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.close()));
}
