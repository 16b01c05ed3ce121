/**
 * What a failover, a revert and a failback ask of a protection's source site. The source site is
 * the one host that may touch the source VM: on one host (or without `localSite`) these run here
 * through its adapter; across two sites they run in the source site's `vmdr serve`, asked over its
 * endpoint. The runner is the same either way, and never reaches the source's hypervisor itself.
 */
import type { PowerState, Progress, StopOptions, VmInfo } from '../../hypervisors/types.js';
import type { HealthSpec, Protection } from '../config/schema.js';

/** Where the source site's endpoint serves these (source-site-routes.ts). */
export const SOURCE_SITE_PREFIX = '/v1/source-site';
/** The watch's heartbeat: one request per source site and round, whatever the number of its protections. */
export const SOURCE_SITE_HEARTBEAT = `${SOURCE_SITE_PREFIX}/heartbeat`;
/** The watch's notices: one held answer per source site, a line each time the site's hypervisor tells something. */
export const SOURCE_SITE_NOTICES = `${SOURCE_SITE_PREFIX}/notices`;

export interface SourceStop {
  /** When the source was down (ISO): a planned failover's final point is younger. */
  stoppedAt: string;
  was: PowerState;
}

export interface FinalSync {
  point: string;
  kind: string;
  bytesShipped: number;
}

export interface SourceFence {
  fencedAt: string;
  was: PowerState;
}

export interface SourceHealth {
  healthyAt: string;
  guest: string | null;
  checks: { check: string; afterMs: number; detail?: string }[];
}

/** One protection's source VM in a heartbeat, and whether its guest agent is pinged too. */
export interface BeatAsk {
  protection: Protection;
  agent: boolean;
}

/** What one heartbeat learnt of each protection's source VM (by protection name); agent: when asked. */
export interface SourceBeat {
  vms: Record<string, { state: PowerState | 'missing'; agent?: { ok: boolean; detail?: string } }>;
}

/**
 * What the source site's hypervisor told at once of a protection asked: its source VM left the
 * running state (`state`, the hypervisor's reason in `why`), or, without `protection`, the
 * hypervisor's connection closed (every protection asked). `at`: ms since the epoch.
 */
export type SourceNotice =
  | { protection: string; state: 'shutoff' | 'paused' | 'crashed' | 'missing'; why: string; at: number }
  | { protection?: undefined; state: 'closed'; why: string; at: number };

/** How long a heartbeat's guest-agent ping may take (the watcher's bound on the beat is the interval). */
export const BEAT_AGENT_TIMEOUT_MS = 2_000;

export interface SourceSite {
  readonly site: string;
  /** True when reached through the site's endpoint, false when through a local adapter. */
  readonly remote: boolean;

  powerState(p: Protection): Promise<PowerState>;
  /**
   * The source VM. `sizes: false`: its disks' sizes may be left out, a read per disk that a caller
   * wanting its labels or disk names skips (a remote site reads it whole: its endpoint has one read).
   */
  vm(p: Protection, options?: { sizes?: boolean }): Promise<VmInfo>;
  /** Stops the source VM (graceful with a timeout, then forced when asked; or forced at once). */
  stop(p: Protection, how: Omit<StopOptions, 'signal'>, signal?: AbortSignal): Promise<SourceStop>;
  /** A planned failover's final delta from the stopped source, shipped by the source site to the DR receiver. */
  finalSync(p: Protection, options?: { signal?: AbortSignal; onProgress?: (progress: Progress) => void }): Promise<FinalSync>;
  /** Powers the source off (when it runs), labels it role=fenced and turns its autostart off. */
  fence(p: Protection, failover: string): Promise<SourceFence>;
  /** Lifts the fence and starts the source (failback, revert); the start token is written on its host. Resolves with the console offset this boot prints from. */
  startSource(p: Protection): Promise<{ serialFrom: number }>;
  /** Waits until the source VM passes the protection's health checks, from console offset `serialFrom`. */
  waitHealthy(p: Protection, health: HealthSpec, serialFrom: number, signal?: AbortSignal): Promise<SourceHealth>;
  /**
   * One heartbeat of the watch (plugin/watch/) for several protections of this site in one ask:
   * each source VM's power state ('missing' when it is gone) and, when asked, its guest agent.
   * Throws when the site or its hypervisor does not answer.
   */
  heartbeat(asks: BeatAsk[], signal?: AbortSignal): Promise<SourceBeat>;
  /**
   * Tells `onNotice` what the site's hypervisor tells of these protections' sources, as it comes,
   * until `signal` aborts (resolves true) or the site or its hypervisor goes away (rejects).
   * Resolves false at once where the hypervisor has no events.
   */
  notices(protections: Protection[], onNotice: (notice: SourceNotice) => void, signal: AbortSignal): Promise<boolean>;
}
