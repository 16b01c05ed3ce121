/** What every step of a failover run works with: the request, the connections, the journal. */
import type { HypervisorAdapter, Progress, ProgressSubject, TaskOptions } from '../../hypervisors/types.js';
import type { Config, Protection } from '../config/schema.js';
import { ReplicaStore } from '../replication/replica/store.js';
import type { SiteConnections } from '../sites/connections.js';
import type { FailoverKind } from '../state/failovers.js';
import type { StateStore } from '../state/store.js';
import { SiteStorageMissing } from '../targets/errors.js';
import type { FailoverJournal } from './journal.js';

/** How long a guest may take to shut down when the request does not say (planned, failback). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 120_000;

/** What was asked for; stored with the run so --resume does the same thing. */
export interface FailoverRequest {
  kind: FailoverKind;
  plan?: string;
  /** The protections, when no plan is named. */
  protections: string[];
  point?: string;
  /** ISO time: the newest point at or before it. */
  at?: string;
  /** Unplanned with the source still running: power it off first (fence it). */
  force?: boolean;
  /** Planned: how long the source's guest may take to shut down before it is powered off. */
  shutdownTimeoutMs?: number;
  /** The runbook file run instead of the plan's groups in order (read again by --resume). */
  runbook?: string;
  /** Revert: the run each protection is undone from. */
  originals?: Record<string, string>;
  /**
   * Started by the watch (plugin/watch/act.ts) on a source seen down: every source that answers is
   * fenced, even one already off (it must not be started beside its twin); `confirm` first waits
   * for an approval after the preflight.
   */
  watch?: 'automatic' | 'confirm';
}

export interface RunContext {
  id: string;
  config: Config;
  file: string;
  sites: SiteConnections;
  state: StateStore;
  journal: FailoverJournal;
  request: FailoverRequest;
  /** When the failure (or the request) happened: the data-loss window is measured against it. */
  failureAt: Date;
  signal?: AbortSignal;
  onProgress?: (progress: Progress) => void;
}

export function storageOf(ctx: RunContext, p: Protection): string {
  const site = ctx.sites.site(p.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, ctx.file);
  return site.storage;
}

export function replicasOf(ctx: RunContext, p: Protection): ReplicaStore {
  return new ReplicaStore(storageOf(ctx, p), ctx.state, { config: ctx.config });
}

export function drAdapter(ctx: RunContext, p: Protection): Promise<HypervisorAdapter> {
  return ctx.sites.adapter(p.target.site);
}

/**
 * The run's signal, and its progress with the run (and `subject`: the protection, the VM) named
 * on every event of a long operation a step hands on (a final sync, a disk's copy).
 */
export function taskOf(ctx: RunContext, subject: ProgressSubject = {}): TaskOptions {
  const onProgress = ctx.onProgress;
  return {
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ...(onProgress ? { onProgress: (pr: Progress) => onProgress({ ...pr, subject: { failover: ctx.id, ...subject, ...pr.subject } }) } : {}),
  };
}
