import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, chmod, mkdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StateStore } from '../../../plugin/state/store.js';
import { migrations } from '../../../plugin/state/migrations.js';
import { lastSyncRuns, recordSyncEnd, recordSyncStart } from '../../../plugin/state/sync-runs.js';
import { rejectsWith } from '../../helpers/assertions.js';

describe('state store', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-state-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('creates its parent directory, uses WAL and foreign keys, and migrates to the newest schema', () => {
    const store = StateStore.open(join(root, 'a', 'b', 'vmdr.db'));
    try {
      assert.equal(store.db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(store.db.pragma('foreign_keys', { simple: true }), 1);
      assert.equal(store.db.pragma('busy_timeout', { simple: true }), 5000);
      assert.equal(store.schemaVersion, migrations.length);
    } finally {
      store.close();
    }
  });

  it('opens an existing file again without migrating twice, from two handles at once', () => {
    const path = join(root, 'vmdr.db');
    const a = StateStore.open(path);
    const b = StateStore.open(path);
    assert.equal(b.schemaVersion, migrations.length);
    a.close();
    b.close();
    a.close(); // twice is harmless
  });

  it('refuses a path it cannot open with STATE_UNAVAILABLE naming the file', async () => {
    const notSqlite = join(root, 'garbage.db');
    await writeFile(notSqlite, 'this is not a database, just some text that is long enough '.repeat(100));
    const err = await rejectsWith(Promise.resolve().then(() => StateStore.open(notSqlite)), 'STATE_UNAVAILABLE');
    assert.equal(err.subject.file, notSqlite);
    assert.match(err.message, /garbage\.db/);

    const blocker = join(root, 'file');
    await writeFile(blocker, '');
    await rejectsWith(Promise.resolve().then(() => StateStore.open(join(blocker, 'sub', 'vmdr.db'))), 'STATE_UNAVAILABLE');

    if (process.getuid?.() !== 0) {
      const locked = join(root, 'locked');
      await mkdir(locked);
      await chmod(locked, 0o500);
      await rejectsWith(Promise.resolve().then(() => StateStore.open(join(locked, 'vmdr.db'))), 'STATE_UNAVAILABLE');
    }
  });

  it('refuses a file written by a newer schema', async () => {
    const path = join(root, 'new.db');
    const db = new Database(path);
    db.pragma(`user_version = ${migrations.length + 1}`);
    db.close();
    const err = await rejectsWith(Promise.resolve().then(() => StateStore.open(path)), 'STATE_SCHEMA_TOO_NEW');
    assert.equal(err.subject.file, path);
  });

  it('brings a state file of schema 3 up to date with its data kept (tokens and the audit record, schema 4)', () => {
    const path = join(root, 'v3.db');
    const old = new Database(path);
    migrations.slice(0, 3).forEach((m, i) => {
      old.exec(m);
      old.pragma(`user_version = ${i + 1}`);
    });
    old.prepare("INSERT INTO protection_roles (protection, role, changed_at_ms) VALUES ('web', 'failed-over', 1)").run();
    old.close();
    const store = StateStore.open(path);
    try {
      assert.equal(store.schemaVersion, migrations.length);
      assert.equal(store.db.prepare('SELECT role FROM protection_roles WHERE protection = ?').pluck().get('web'), 'failed-over');
      assert.deepEqual(store.db.prepare('SELECT count(*) FROM tokens').pluck().get(), 0);
      assert.deepEqual(store.db.prepare('SELECT count(*) FROM audit_records').pluck().get(), 0);
    } finally {
      store.close();
    }
  });

  it('records sync runs, newest first, with their outcome and error', async () => {
    const store = StateStore.open(join(root, 'vmdr.db'));
    try {
      const first = recordSyncStart(store, { protection: 'web', kind: 'full', checkpoint: 'vmdr-1', since: null });
      recordSyncEnd(store, first, { outcome: 'committed', point: 'rp-1', bytesShipped: 1000, dataBytes: 4096 });
      const second = recordSyncStart(store, { protection: 'web', kind: 'incremental', checkpoint: 'vmdr-2', since: 'vmdr-1' });
      recordSyncEnd(store, second, { outcome: 'failed', error: { code: 'STREAM_TRUNCATED', message: 'cut' } });
      const third = recordSyncStart(store, { protection: 'web', kind: 'resync', checkpoint: 'vmdr-2', since: 'vmdr-1', reason: 'disk vdb is raw and its dirty bitmap is gone' });
      recordSyncStart(store, { protection: 'db', kind: 'full', checkpoint: 'vmdr-1', since: null });

      const runs = lastSyncRuns(store, 'web', 10);
      assert.deepEqual(runs.map((r) => [r.id, r.outcome]), [[third, 'running'], [second, 'failed'], [first, 'committed']]);
      assert.deepEqual(runs[1]!.error, { code: 'STREAM_TRUNCATED', message: 'cut' });
      assert.equal(runs[2]!.point, 'rp-1');
      assert.equal(runs[2]!.bytesShipped, 1000);
      assert.equal(runs[2]!.since, null);
      assert.ok(runs[2]!.endedAt instanceof Date);
      assert.equal(runs[0]!.endedAt, undefined);
      assert.equal(runs[0]!.reason, 'disk vdb is raw and its dirty bitmap is gone');
      assert.equal(runs[1]!.reason, undefined);
      assert.equal(lastSyncRuns(store, 'web', 1).length, 1);
      await rejectsWith(Promise.resolve().then(() => recordSyncEnd(store, 9999, { outcome: 'failed' })), 'SYNC_RUN_NOT_FOUND');
    } finally {
      store.close();
    }
  });

  it('keeps the state private: the file, its -wal and -shm 0600, a directory it makes 0700; an older 0644 file is closed', async () => {
    const mode = async (f: string) => (await stat(f)).mode & 0o777;
    const path = join(root, 'state', 'vmdr.db');
    const store = StateStore.open(path);
    try {
      store.db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
      assert.equal(await mode(join(root, 'state')), 0o700);
      for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(await mode(f), 0o600, f);
    } finally {
      store.close();
    }
    const old = join(root, 'old.db');
    new Database(old).close();
    await chmod(old, 0o644);
    StateStore.open(old).close();
    assert.equal(await mode(old), 0o600);
  });
});
