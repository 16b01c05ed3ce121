/**
 * The one SQLite file every CLI command and the daemon open. WAL so readers never block the
 * writer; synchronous FULL because a committed recovery point is acknowledged to the sender and
 * must survive a power cut; busy_timeout so two processes queue instead of failing. It names every
 * customer's VMs and points, so it is 0600 (SQLite gives its -wal and -shm the database's mode)
 * in a directory vmdr makes 0700.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { VmdrError } from '../../hypervisors/errors.js';
import { StateSchemaTooNew, StateUnavailable } from './errors.js';
import { migrations } from './migrations.js';

export type Database = Database.Database;

export class StateStore {
  private constructor(
    readonly db: Database.Database,
    readonly path: string,
  ) {}

  static open(path: string): StateStore {
    const file = resolve(path);
    let db: Database.Database | undefined;
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      makePrivate(file);
      db = new Database(file, { timeout: 5000 });
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      migrate(db, file);
      return new StateStore(db, file);
    } catch (err) {
      db?.close();
      if (err instanceof VmdrError) throw err;
      throw new StateUnavailable(file, (err as Error).message, err);
    }
  }

  get schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/** Created 0600 before SQLite opens it; a state file from before this rule loses its group and other bits. */
function makePrivate(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    if (!existsSync(f)) continue;
    const mode = statSync(f).mode;
    if (mode & 0o077) chmodSync(f, mode & 0o700);
  }
}

const prepared = new WeakMap<Database.Database, Map<string, Database.Statement>>();

/**
 * The statement of `sql`, prepared once per connection: for the queries every API request makes
 * (its token, a protection's points), where preparing costs as much as running.
 */
export function preparedOnce<P extends unknown[] | {} = unknown[], R = unknown>(db: Database.Database, sql: string): Database.Statement<P, R> {
  let byText = prepared.get(db);
  if (!byText) prepared.set(db, (byText = new Map()));
  let statement = byText.get(sql);
  if (!statement) byText.set(sql, (statement = db.prepare(sql)));
  return statement as unknown as Database.Statement<P, R>;
}

function migrate(db: Database.Database, file: string): void {
  const version = () => db.pragma('user_version', { simple: true }) as number;
  if (version() > migrations.length) throw new StateSchemaTooNew(file, version(), migrations.length);
  // Each step re-reads the version inside its write transaction: another process may have migrated first.
  for (let target = version() + 1; target <= migrations.length; target++) {
    db.transaction(() => {
      if (version() >= target) return;
      db.exec(migrations[target - 1]!);
      db.pragma(`user_version = ${target}`);
    }).immediate();
  }
}
