/**
 * The one SQLite file every CLI command and the daemon open. WAL so readers never block the
 * writer; synchronous FULL because a committed recovery point is acknowledged to the sender and
 * must survive a power cut; busy_timeout so two processes queue instead of failing.
 */
import { mkdirSync } from 'node:fs';
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
      mkdirSync(dirname(file), { recursive: true });
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
