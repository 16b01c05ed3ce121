/**
 * A script step: the operator's program, run with argv (never a shell line), the run's facts in
 * its environment, its output kept bounded (the last OUTPUT_LIMIT_BYTES of each stream). It runs
 * in its own process group, so on timeout (or when the run is stopped) the whole group is killed:
 * a child it started in the background goes too, and so it does when the script exits (a script
 * that must leave a daemon running starts it with setsid).
 */
import { spawn } from 'node:child_process';
import { RunbookStepFailed, RunbookStepTimedOut } from './errors.js';
import { OutputTail } from './output-tail.js';
import type { ScriptSpec } from './schema.js';

/** What a script step records: its exit and the end of what it printed. */
export interface ScriptOutcome {
  path: string;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Bytes of output not kept (only the last OUTPUT_LIMIT_BYTES of each stream are). */
  droppedBytes: number;
  durationMs: number;
  vm?: string;
}

/** How long a group asked to stop (SIGTERM) has before it is killed (SIGKILL). */
const KILL_GRACE_MS = 3_000;

export function runScript(step: string, spec: ScriptSpec, env: Record<string, string>, timeoutMs: number, signal?: AbortSignal): Promise<ScriptOutcome> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(spec.path, spec.args, { env: { ...process.env, ...env, ...spec.env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout = new OutputTail();
    const stderr = new OutputTail();
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    let why: 'timeout' | 'aborted' | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // The group is gone already.
      }
    };
    const stop = (reason: 'timeout' | 'aborted') => {
      why ??= reason;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const onAbort = () => stop('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    const outcome = (exitCode: number | null, sig: string | null): ScriptOutcome => ({
      path: spec.path,
      exitCode,
      signal: sig,
      stdout: stdout.text(),
      stderr: stderr.text(),
      droppedBytes: stdout.dropped + stderr.dropped,
      durationMs: Date.now() - started,
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(new RunbookStepFailed(step, `cannot run ${spec.path}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, outcome(null, null), err));
    });
    // Whatever the script left behind in its group goes with it (and would hold its output open).
    child.once('exit', () => killGroup('SIGKILL'));
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      const result = outcome(code, sig);
      if (why === 'timeout') return reject(new RunbookStepTimedOut(step, timeoutMs, result));
      if (why === 'aborted') return reject(new RunbookStepFailed(step, `${spec.path} was stopped: the run was stopped`, result));
      if (code !== 0) return reject(new RunbookStepFailed(step, `${spec.path} ${sig ? `was killed by ${sig}` : `exited with status ${code}`}${lastLine(result)}`, result));
      resolve(result);
    });
  });
}

/** The script's last line of stderr (or stdout), as the one-line error shows it. */
function lastLine(o: ScriptOutcome): string {
  const line = (o.stderr.trim() || o.stdout.trim()).split('\n').pop()?.trim();
  return line ? `: ${line.slice(0, 200)}` : '';
}
