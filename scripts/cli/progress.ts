/**
 * How long work shows its progress (the one Progress shape of hypervisors/types.ts): on a
 * terminal, a bar with rate and ETA for bytes and a line per step; with --json, one JSON line per
 * progress event on stdout, at most a few a second per subject; nothing otherwise. Drawing is a
 * function to a string, so it is tested without a terminal.
 */
import type { Progress } from '../../hypervisors/types.js';
import { formatRate } from '../../plugin/config/bandwidth.js';
import type { Say } from './cycles.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** "7s", "3m05s", "2h04m". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Whom an event is about, as a person reads it: "web", "web/vdb", "web rp-7", "run fo-…". */
export function subjectName(p: Progress, fallback = ''): string {
  const s = p.subject ?? {};
  const who = s.protection ?? (s.failover ? `run ${s.failover}` : fallback);
  return [who + (s.disk ? `/${s.disk}` : ''), s.point].filter(Boolean).join(' ');
}

/** Events of one key are one stream: one subject's work. */
function subjectKey(p: Progress): string {
  const s = p.subject ?? {};
  return [s.failover, s.protection, s.vm, s.disk, s.point].map((x) => x ?? '').join('\u0000');
}

/** Rate and time left of a bytes phase, from when its subject began the phase. */
export interface Pace {
  bytesPerSecond?: number;
  etaSeconds?: number;
}

const BAR_WIDTH = 24;

/** One line for one event: a bar for bytes, "phase done/total" for steps. */
export function drawProgress(p: Progress, pace: Pace = {}, fallback = ''): string {
  const who = subjectName(p, fallback);
  const detail = p.detail ? ` ${p.detail}` : '';
  if (p.unit !== 'bytes') return `${who} ${p.phase} ${p.done}/${p.total}${detail}`.trim();
  const fraction = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
  const filled = Math.round(fraction * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const rate = pace.bytesPerSecond !== undefined ? ` ${formatBytes(pace.bytesPerSecond)}/s` : '';
  const eta = p.done >= p.total ? '' : pace.etaSeconds !== undefined ? ` ETA ${formatDuration(pace.etaSeconds)}` : '';
  const limit = p.limit ? ` (limit ${formatRate(p.limit)})` : '';
  return `${who} ${p.phase} ${bar} ${percent} ${formatBytes(p.done)}/${formatBytes(p.total)}${rate}${limit}${eta}${detail}`.trim();
}

/**
 * Which events are worth a line: per subject, the first of each phase, the one that ends it
 * (done == total) and otherwise at most one every `intervalMs`. A subject's last word is never dropped.
 */
export class ProgressThrottle {
  private readonly last = new Map<string, { phase: string; at: number }>();

  constructor(
    private readonly intervalMs = 250,
    private readonly now: () => number = Date.now,
  ) {}

  pass(p: Progress): boolean {
    const key = subjectKey(p);
    const at = this.now();
    const seen = this.last.get(key);
    const due = !seen || seen.phase !== p.phase || p.done >= p.total || at - seen.at >= this.intervalMs;
    if (due) this.last.set(key, { phase: p.phase, at });
    return due;
  }
}

/**
 * The bytes of a bytes phase that take time to ship: all of them but the zero ranges. A zero range
 * is never read: it goes as zero frames (a header per 2 GiB) that the DR side writes as NBD
 * write-zeroes. Measured on this machine (qemu-nbd, an 8 GiB disk with 192 MiB of data): the
 * sender did 8000 MiB of zero ranges in 23 ms and the data in 383 ms; the DR side wrote 4 GiB of
 * zeroes in 20 ms, 64 MiB of data in 372 ms. Counted as bytes to ship, that disk's initial sync
 * over a 100 MiB/s link showed 81 s left where 1.3 s were.
 */
export function dataBytes(p: Progress): { done: number; total: number } {
  return { done: p.done - (p.zeroes?.done ?? 0), total: p.total - (p.zeroes?.total ?? 0) };
}

/**
 * Seconds until a bytes phase ends: its data bytes left at the bandwidth limit in force, as a user
 * would reckon it (the rate so far lags a window that just changed), else at the data rate so far;
 * undefined before any data went.
 */
export function secondsLeft(p: Progress, dataBytesPerSecond: number): number | undefined {
  const data = dataBytes(p);
  const left = Math.max(0, data.total - data.done);
  if (p.limit) return left / p.limit;
  return dataBytesPerSecond > 0 ? left / dataBytesPerSecond : undefined;
}

/** Measures each subject's bytes phase from its first event: the data rate so far, and the time left at that rate. */
export class PaceMeter {
  private readonly began = new Map<string, { phase: string; at: number; done: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  pace(p: Progress): Pace {
    const key = subjectKey(p);
    const at = this.now();
    const began = this.began.get(key);
    const done = dataBytes(p).done;
    if (!began || began.phase !== p.phase) {
      this.began.set(key, { phase: p.phase, at, done });
      return {};
    }
    const seconds = (at - began.at) / 1000;
    // Too early to say: a rate over a few milliseconds is noise.
    if (seconds < 0.2) return {};
    // The rate of data, what the link carries: zero ranges would make it jump by gigabytes.
    const bytesPerSecond = (done - began.done) / seconds;
    const eta = secondsLeft(p, bytesPerSecond);
    return eta === undefined ? { bytesPerSecond } : { bytesPerSecond, etaSeconds: eta };
  }
}

export interface ProgressReporter {
  onProgress: (p: Progress) => void;
  /** Ends the live line (a bar left half drawn), if one is drawn. */
  stop(): void;
}

export interface ReporterOptions {
  json: boolean;
  /** Named when an event names no subject. */
  label?: string;
  /** Step events too (default); off where steps already have their own lines (the failover's timeline). */
  steps?: boolean;
  /** Where lines go; default stdout for JSON, stderr on a terminal (nothing when stderr is not one). */
  out?: { write(text: string): unknown; isTTY?: boolean };
  now?: () => number;
}

export function progressReporter(options: ReporterOptions): ProgressReporter {
  const now = options.now ?? Date.now;
  const throttle = new ProgressThrottle(250, now);
  const wanted = (p: Progress) => (options.steps ?? true) || p.unit === 'bytes';
  if (options.json) {
    const out = options.out ?? process.stdout;
    return {
      onProgress: (p) => {
        if (wanted(p) && throttle.pass(p)) out.write(`${JSON.stringify({ event: 'progress', ...p })}\n`);
      },
      stop: () => undefined,
    };
  }
  const out = options.out ?? process.stderr;
  if (!out.isTTY) return { onProgress: () => undefined, stop: () => undefined };
  return terminalReporter(out, { ...options, now }, throttle, wanted);
}

/**
 * One live line at the bottom (the latest bar, redrawn in place) under the lines that stay: each
 * step, and each bytes phase once it ends.
 */
function terminalReporter(out: { write(text: string): unknown }, options: ReporterOptions & { now: () => number }, throttle: ProgressThrottle, wanted: (p: Progress) => boolean): ProgressReporter {
  const meter = new PaceMeter(options.now);
  let live = '';
  const clear = () => {
    if (live) out.write('\r\x1b[K');
  };
  return {
    onProgress: (p) => {
      if (!wanted(p)) return;
      const pace = p.unit === 'bytes' ? meter.pace(p) : {};
      if (!throttle.pass(p)) return;
      const line = drawProgress(p, pace, options.label);
      clear();
      if (p.unit === 'bytes' && p.done < p.total) {
        live = line;
      } else {
        out.write(`${line}\n`);
        // A bar that ended stays as a line; a step leaves the bar below it.
        if (p.unit === 'bytes') live = '';
      }
      if (live) out.write(live);
    },
    stop: () => {
      if (live) out.write('\n');
      live = '';
    },
  };
}

/** The daemon's log keeps steps (a merge, a provisioning step), not the byte counts between them. */
export function stepLog(say: Say): (p: Progress) => void {
  const throttle = new ProgressThrottle();
  return (p) => {
    if (p.unit === 'bytes' || !throttle.pass(p)) return;
    say({ event: 'progress', ...p }, drawProgress(p));
  };
}
