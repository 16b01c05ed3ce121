/**
 * The state schema, one entry per version (PRAGMA user_version = index + 1). Entries are never
 * edited once released: a change is a new entry at the end. Modules that own tables later add theirs here.
 */
export const migrations: readonly string[] = [
  // 1: recovery points, the replica lease, the retention merge journal, sync history
  `
  CREATE TABLE recovery_points (
    protection      TEXT    NOT NULL,
    seq             INTEGER NOT NULL CHECK (seq > 0),
    time_ms         INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    checkpoint      TEXT    NOT NULL,
    since           TEXT,
    kind            TEXT    NOT NULL CHECK (kind IN ('full', 'incremental', 'resync')),
    bytes_shipped   INTEGER NOT NULL,
    data_bytes      INTEGER NOT NULL,
    zero_bytes      INTEGER NOT NULL,
    pinned          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (protection, seq)
  ) STRICT;

  -- image: a file name inside the disk's directory, so a replica directory can move
  CREATE TABLE recovery_point_disks (
    protection TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    disk       TEXT    NOT NULL,
    image      TEXT    NOT NULL,
    size_bytes INTEGER NOT NULL,
    ord        INTEGER NOT NULL,
    PRIMARY KEY (protection, seq, disk),
    FOREIGN KEY (protection, seq) REFERENCES recovery_points (protection, seq) ON DELETE CASCADE
  ) STRICT;

  -- at most one writer of a protection's replica (a pending point, a merge, a recovery)
  CREATE TABLE replica_leases (
    protection    TEXT    PRIMARY KEY,
    holder        TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    purpose       TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
  ) STRICT;

  -- an unfinished retention merge: target_seq ends up held by base.qcow2; plan is JSON
  -- {disk: [overlay file names, oldest first]}
  CREATE TABLE replica_merges (
    protection    TEXT    PRIMARY KEY,
    target_seq    INTEGER NOT NULL,
    plan          TEXT    NOT NULL,
    started_at_ms INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE sync_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    protection    TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('full', 'incremental', 'resync')),
    checkpoint    TEXT    NOT NULL,
    since         TEXT,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    outcome       TEXT    CHECK (outcome IN ('committed', 'failed')),
    point         TEXT,
    bytes_shipped INTEGER,
    data_bytes    INTEGER,
    error_code    TEXT,
    error_message TEXT
  ) STRICT;
  CREATE INDEX sync_runs_by_protection ON sync_runs (protection, id);
  `,
  // 2: failovers (a journal of steps, recorded before and after each), who runs them, and the
  // role of each protection (replicating, or failed over: its replica then takes no new point)
  `
  CREATE TABLE failovers (
    id            TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('unplanned', 'planned', 'test', 'revert', 'failback')),
    plan          TEXT,
    request       TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    failure_at_ms INTEGER NOT NULL,
    error_code    TEXT,
    error_message TEXT
  ) STRICT;

  -- protection '' holds the steps of the whole run (a plan's groups)
  CREATE TABLE failover_steps (
    failover      TEXT    NOT NULL REFERENCES failovers (id) ON DELETE CASCADE,
    protection    TEXT    NOT NULL,
    step          TEXT    NOT NULL,
    ord           INTEGER NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('started', 'done', 'failed', 'skipped')),
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    detail        TEXT,
    error_code    TEXT,
    error_message TEXT,
    PRIMARY KEY (failover, protection, step)
  ) STRICT;

  -- one runner per protection; a row whose process is gone is an interrupted run (--resume)
  CREATE TABLE failover_locks (
    protection TEXT    PRIMARY KEY,
    failover   TEXT    NOT NULL REFERENCES failovers (id) ON DELETE CASCADE,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE protection_roles (
    protection    TEXT    PRIMARY KEY,
    role          TEXT    NOT NULL CHECK (role IN ('replicating', 'failed-over')),
    failover      TEXT,
    point         TEXT,
    changed_at_ms INTEGER NOT NULL
  ) STRICT;
  `,
  // 3: the identity (UUID) of each protection's source VM, kept beside its replica; and the points
  // kept for a source VM that was replaced (re-protected onto another VM): retention leaves them,
  // as it leaves pinned ones, until the operator releases them
  `
  CREATE TABLE protection_sources (
    protection     TEXT    PRIMARY KEY,
    vm_uuid        TEXT    NOT NULL,
    vm_name        TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL
  ) STRICT;

  -- the UUID of the replaced source VM this point is of; NULL for points of the current one
  ALTER TABLE recovery_points ADD COLUMN replaced_source TEXT;
  `,
  // 4: API tokens (only the SHA-256 of each secret; a revoked token's row stays, so lists and the
  // audit record can still name it) and the audit record of what was changed, by whom, with what result
  `
  -- tenant NULL: an operator token
  CREATE TABLE tokens (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    tenant        TEXT,
    role          TEXT    NOT NULL CHECK (role IN ('read', 'operate')),
    secret_sha256 BLOB    NOT NULL CHECK (length(secret_sha256) = 32),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    revoked_at_ms INTEGER
  ) STRICT;
  CREATE INDEX tokens_by_tenant ON tokens (tenant);

  -- actor: a token id, or 'cli' (actor_name then holds the OS user)
  CREATE TABLE audit_records (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    actor_name TEXT    NOT NULL,
    tenant     TEXT,
    action     TEXT    NOT NULL,
    object     TEXT,
    result     TEXT    NOT NULL CHECK (result IN ('ok', 'refused', 'failed')),
    code       TEXT
  ) STRICT;
  CREATE INDEX audit_records_by_time ON audit_records (at_ms);
  CREATE INDEX audit_records_by_tenant ON audit_records (tenant, at_ms);
  `,
  // 5: replication paused by an operator (the API or the CLI), read by the loop before each cycle.
  `
  CREATE TABLE protection_pauses (
    protection   TEXT    PRIMARY KEY,
    paused_at_ms INTEGER NOT NULL,
    paused_by    TEXT    NOT NULL,
    reason       TEXT
  ) STRICT;
  `,
  // 6: the history of drills: one row per run of a configured drill (scheduled, or asked for by the
  // CLI or the API), with the test failover it ran. host and pid say who runs it: a running row
  // whose process is gone is a drill interrupted (torn down and closed by the next vmdr serve).
  `
  CREATE TABLE drill_runs (
    id             TEXT    PRIMARY KEY,
    drill          TEXT    NOT NULL,
    plan           TEXT    NOT NULL,
    tenant         TEXT,
    failover       TEXT,
    trigger        TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'api')),
    status         TEXT    NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'skipped', 'interrupted')),
    started_at_ms  INTEGER NOT NULL,
    ended_at_ms    INTEGER,
    reason_code    TEXT,
    reason_message TEXT,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX drill_runs_by_time ON drill_runs (started_at_ms);
  CREATE INDEX drill_runs_by_tenant ON drill_runs (tenant, started_at_ms);
  `,
  // 7: approvals a runbook's approval step waits for, one per step of a
  // run; approved_at_ms NULL while it waits (`vmdr runbook resume RUN` sets it)
  `
  CREATE TABLE runbook_approvals (
    failover        TEXT    NOT NULL REFERENCES failovers (id) ON DELETE CASCADE,
    step            TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    approved_at_ms  INTEGER,
    approved_by     TEXT,
    PRIMARY KEY (failover, step)
  ) STRICT;
  `,
  // 8: what the DR site's heartbeats saw of each watched source: one row per change of state
  // (healthy, suspect, down, failing-over, failed-over, fenced), the newest kept (state/watch-events.ts)
  `
  CREATE TABLE watch_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    protection TEXT    NOT NULL,
    site       TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('healthy', 'suspect', 'down', 'failing-over', 'failed-over', 'fenced')),
    detail     TEXT
  ) STRICT;
  CREATE INDEX watch_events_by_protection ON watch_events (protection, id);
  `,
  // 9: why a sync cycle is of its kind ("changes since checkpoint …; disk vdb is raw and its dirty
  // bitmap … is gone …"): a resync says what it replaced; NULL for runs recorded before
  `
  ALTER TABLE sync_runs ADD COLUMN reason TEXT;
  `,
  // 10: how consistent a point's data is: 'application' when the guest's filesystems were frozen
  // for its checkpoint, else 'crash' (every point before); the issue (code and message) that made
  // it crash-consistent although application was asked, or that followed its freeze (a thaw that
  // did not answer); the freeze→thaw window it cost the guest
  `
  ALTER TABLE recovery_points ADD COLUMN consistency TEXT NOT NULL DEFAULT 'crash' CHECK (consistency IN ('crash', 'application'));
  ALTER TABLE recovery_points ADD COLUMN consistency_issue TEXT;
  ALTER TABLE recovery_points ADD COLUMN consistency_detail TEXT;
  ALTER TABLE recovery_points ADD COLUMN freeze_window_ms INTEGER;
  `,
  // 11: consistency groups. On the DR side, the group instant a point was taken in (a group point
  // is the group's members' points sharing one: replication/group-points.ts); on the host that
  // ran a group's cycle, each cycle's outcome, its pause or freeze window and why it failed
  `
  ALTER TABLE recovery_points ADD COLUMN group_instant TEXT;
  CREATE INDEX recovery_points_by_group_instant ON recovery_points (group_instant) WHERE group_instant IS NOT NULL;
  CREATE TABLE group_cycles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name    TEXT    NOT NULL,
    instant       TEXT    NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('running', 'committed', 'failed')),
    consistency   TEXT    NOT NULL CHECK (consistency IN ('crash', 'application')),
    window_ms     INTEGER,
    members       TEXT    NOT NULL,
    error_code    TEXT,
    error_message TEXT
  ) STRICT;
  CREATE INDEX group_cycles_by_group ON group_cycles (group_name, id);
  `,
];
