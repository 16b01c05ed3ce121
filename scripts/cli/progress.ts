/**
 * How long work shows its progress: a bar with bytes, rate and ETA on a terminal; with --json, one
 * JSON line per progress event on stdout (the last one always written); nothing otherwise.
 */
import cliProgress from 'cli-progress';
import type { Progress } from '../../hypervisors/types.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export interface ProgressReporter {
  onProgress: (p: Progress) => void;
  stop(): void;
}

export function progressReporter(options: { json: boolean; label: string }): ProgressReporter {
  if (options.json) {
    let last = 0;
    return {
      onProgress: (p) => {
        // At most ten lines a second, but every phase change and the end are written.
        const now = Date.now();
        if (now - last < 100 && p.done !== p.total) return;
        last = now;
        process.stdout.write(`${JSON.stringify({ event: 'progress', ...p })}\n`);
      },
      stop: () => undefined,
    };
  }
  if (!process.stderr.isTTY) return { onProgress: () => undefined, stop: () => undefined };
  let started = Date.now();
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${options.label} {phase} [{bar}] {percentage}% {doneBytes}/{totalBytes} {rate} ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let begun = false;
  return {
    onProgress: (p) => {
      // Phases without a byte count (preparing, planning) have nothing to draw yet.
      if (p.total === 0) return;
      const payload = {
        phase: p.phase,
        doneBytes: formatBytes(p.done),
        totalBytes: formatBytes(p.total),
        rate: `${formatBytes(p.done / Math.max(0.001, (Date.now() - started) / 1000))}/s`,
      };
      if (!begun) {
        started = Date.now();
        bar.start(Math.max(1, p.total), p.done, payload);
        begun = true;
      }
      bar.setTotal(Math.max(1, p.total));
      bar.update(p.done, payload);
    },
    stop: () => {
      if (begun) bar.stop();
    },
  };
}
