/**
 * Rows of each protection's source identity (the UUID of the VM its recovery points are of), kept
 * in the state file of the DR site beside the points, and the marks of points kept for a source VM
 * that was replaced. This module only reads and writes the tables; plugin/protections/ owns what
 * an identity means.
 */
import type { Database } from './store.js';

/** What a kept point says of its VM when the protection had no identity recorded before it was replaced. */
export const UNRECORDED = 'unrecorded';

export interface SourceRow {
  protection: string;
  /** The hypervisor's stable id of the VM: libvirt's UUID. */
  vmUuid: string;
  /** Its name when it was recorded (the config may name it otherwise after a rename). */
  vmName: string;
  recordedAtMs: number;
}

interface RawSource {
  protection: string;
  vm_uuid: string;
  vm_name: string;
  recorded_at_ms: number;
}

export function recordedSource(db: Database, protection: string): SourceRow | undefined {
  const r = db.prepare('SELECT * FROM protection_sources WHERE protection = ?').get(protection) as RawSource | undefined;
  return r && { protection: r.protection, vmUuid: r.vm_uuid, vmName: r.vm_name, recordedAtMs: r.recorded_at_ms };
}

export type RecordOutcome =
  /** Nothing was recorded before: this identity is now. */
  | { outcome: 'recorded'; source: SourceRow }
  /** The same identity was recorded already (its name is brought up to date). */
  | { outcome: 'unchanged'; source: SourceRow }
  /** Another identity is recorded and no replacement was asked for: nothing changed. */
  | { outcome: 'conflict'; source: SourceRow }
  /** The identity was replaced; `kept` are the seqs of the points now kept for the old one. */
  | { outcome: 'replaced'; source: SourceRow; previous: SourceRow | undefined; kept: number[] };

/**
 * Records `vm` as the protection's source. With `replace`, a different identity (or none, when the
 * protection already has points) takes over, and in the same transaction every point not already
 * kept is marked as kept for the old identity: no retention merge can slip in between.
 */
export function recordSource(
  db: Database,
  protection: string,
  vm: { uuid: string; name: string },
  options: { replace?: boolean } = {},
): RecordOutcome {
  return db
    .transaction((): RecordOutcome => {
      const before = recordedSource(db, protection);
      const write = () => {
        db.prepare(
          `INSERT INTO protection_sources (protection, vm_uuid, vm_name, recorded_at_ms) VALUES (?, ?, ?, ?)
           ON CONFLICT (protection) DO UPDATE SET vm_uuid = excluded.vm_uuid, vm_name = excluded.vm_name, recorded_at_ms = excluded.recorded_at_ms`,
        ).run(protection, vm.uuid, vm.name, Date.now());
        return recordedSource(db, protection)!;
      };
      if (before?.vmUuid === vm.uuid) {
        if (before.vmName !== vm.name) db.prepare('UPDATE protection_sources SET vm_name = ? WHERE protection = ?').run(vm.name, protection);
        return { outcome: 'unchanged', source: recordedSource(db, protection)! };
      }
      if (!options.replace) return before ? { outcome: 'conflict', source: before } : { outcome: 'recorded', source: write() };
      const old = before?.vmUuid ?? UNRECORDED;
      const kept = (
        db.prepare('SELECT seq FROM recovery_points WHERE protection = ? AND replaced_source IS NULL ORDER BY seq').all(protection) as { seq: number }[]
      ).map((r) => r.seq);
      db.prepare('UPDATE recovery_points SET replaced_source = ? WHERE protection = ? AND replaced_source IS NULL').run(old, protection);
      return { outcome: 'replaced', source: write(), previous: before, kept };
    })
    .immediate();
}

/**
 * Ends the keeping of points of a replaced source: all of them, or those of `seqs`. Returns the
 * seqs released; a seq that is not kept (or does not exist) is left out, and the caller says so.
 */
export function releaseKeptPoints(db: Database, protection: string, seqs: number[] | 'all'): number[] {
  return db
    .transaction(() => {
      const kept = (
        db.prepare('SELECT seq FROM recovery_points WHERE protection = ? AND replaced_source IS NOT NULL ORDER BY seq').all(protection) as { seq: number }[]
      ).map((r) => r.seq);
      const release = seqs === 'all' ? kept : kept.filter((s) => seqs.includes(s));
      const update = db.prepare('UPDATE recovery_points SET replaced_source = NULL WHERE protection = ? AND seq = ?');
      for (const seq of release) update.run(protection, seq);
      return release;
    })
    .immediate();
}
