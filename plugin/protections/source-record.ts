/**
 * The DR site's record of a protection's source VM and of the points kept for a replaced one,
 * wherever this runs: this host's state file when the DR site's storage is here, else the site's
 * receiver (a source host, an operator's host), as for the points themselves.
 */
import { existsSync } from 'node:fs';
import type { Config, Protection } from '../config/schema.js';
import { RecoveryPointNotFound } from '../replication/replica/errors.js';
import { receiverFor } from '../replication/sender/connect.js';
import type { SiteConnections } from '../sites/connections.js';
import { recordedSource, releaseKeptPoints, type SourceRow } from '../state/sources.js';
import type { Database, StateStore } from '../state/store.js';
import { SiteStorageMissing } from '../targets/errors.js';
import type { RecordedSource } from './source-identity.js';

type Context = { config: Config; file: string; sites: SiteConnections; state: StateStore };

export function toRecordedSource(row: SourceRow): RecordedSource {
  return { uuid: row.vmUuid, vm: row.vmName, recordedAt: new Date(row.recordedAtMs).toISOString() };
}

/**
 * Releases points kept for a replaced source: `'replaced'` all of them, else the ids given. An id
 * the protection does not have is an error; one that is not kept is simply not in the answer.
 */
export function releaseKept(db: Database, protection: string, which: string[] | 'replaced'): string[] {
  const seqs = which === 'replaced' ? ('all' as const) : which.map((id) => pointSeq(db, protection, id));
  return releaseKeptPoints(db, protection, seqs).map((seq) => `rp-${seq}`);
}

function pointSeq(db: Database, protection: string, id: string): number {
  const seq = /^rp-(\d+)$/.exec(id)?.[1];
  if (seq === undefined || !db.prepare('SELECT 1 FROM recovery_points WHERE protection = ? AND seq = ?').get(protection, Number(seq))) {
    throw new RecoveryPointNotFound(protection, id);
  }
  return Number(seq);
}

async function atDrSite<T>(ctx: Context, protection: Protection, here: (db: Database) => T, remote: (r: Awaited<ReturnType<typeof receiverFor>>) => Promise<T>): Promise<T> {
  const site = ctx.sites.site(protection.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, ctx.file);
  if (existsSync(site.storage)) return here(ctx.state.db);
  const receiver = await receiverFor(ctx.config, ctx.file, protection);
  try {
    return await remote(receiver);
  } finally {
    receiver.close();
  }
}

export function recordedSourceOf(ctx: Context, protection: Protection): Promise<RecordedSource | undefined> {
  return atDrSite(
    ctx,
    protection,
    (db) => {
      const row = recordedSource(db, protection.name);
      return row && toRecordedSource(row);
    },
    (r) => r.recordedSource(protection.name),
  );
}

export function releasePoints(ctx: Context, protection: Protection, which: string[] | 'replaced'): Promise<string[]> {
  return atDrSite(ctx, protection, (db) => releaseKept(db, protection.name, which), (r) => r.releasePoints(protection.name, which));
}
