/**
 * When a failed-over VM counts as up: every health check its protection configures (a serial line,
 * the guest agent, TCP ports, HTTP URLs) passes before one deadline, and the VM keeps running
 * meanwhile. A plan starts its next group only then, so a database is answering before the web
 * servers that need it boot. The checks run side by side, each asking again every POLL_MS; a miss
 * says what was tried, for how long and what answered last, because the operator reading it is
 * in the middle of a failover.
 */
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { GuestAgentUnavailable, VmdrError, type HypervisorAdapter, type PowerState } from '../../hypervisors/types.js';
import type { HealthSpec } from '../config/schema.js';
import { fileSize, HealthCheckFailed, waitForSerialLine } from './serial-health.js';
import { Wakeup } from './wakeup.js';

export interface HealthCheckPassed {
  /** 'running', 'serial', 'agent', 'tcp host:port' or 'http URL'. */
  check: string;
  ok: true;
  /** Since the wait began. */
  afterMs: number;
  /** For 'serial', the line the guest printed; otherwise what answered ("HTTP 200", ...). */
  detail?: string;
}

export interface HealthReport {
  healthyAfterMs: number;
  checks: HealthCheckPassed[];
}

export interface HealthWaitOptions {
  /** The guest's console file; default the VM's own (adapter.serialLogPath). */
  serialLog?: string;
  /** Read only what the console got after this offset (its size before the boot); default its size now. */
  serialFrom?: number;
  signal?: AbortSignal;
}

const POLL_MS = 200;
/** With the hypervisor's notices of its VMs, how often the power state is asked all the same. */
const POWER_RECHECK_MS = 5_000;
/** The console is a local file read from where the last look ended: looking often costs little, and every look earlier shortens the RTO. */
const SERIAL_POLL_MS = 50;
/** The longest one TCP connect, HTTP request or agent ping may take before it counts as no answer. */
const ATTEMPT_MS = 3_000;
/**
 * The shortest: an attempt started just before the deadline still gets a fair chance, and its
 * "no answer within 1 ms" does not hide the real last error (it may end this much past the deadline).
 */
const MIN_ATTEMPT_MS = 500;

interface Wait {
  adapter: HypervisorAdapter;
  vm: string;
  started: number;
  deadline: number;
  timeoutMs: number;
  /** Aborts when the caller aborts or when the wait is over (one check failed, or all passed). */
  signal: AbortSignal;
}

/** One look: passed (with what answered), or not yet (and why). Failures that waiting cannot cure throw. */
type Attempt = (attemptMs: number) => Promise<{ ok: true; detail?: string } | { ok: false; why: string }>;

/** What a health wait tells the journal and the report: when, what the guest printed, which checks. */
export function healthSummary(report: HealthReport): { healthyAt: string; guest: string | null; checks: { check: string; afterMs: number; detail?: string }[] } {
  return {
    healthyAt: new Date().toISOString(),
    guest: report.checks.find((c) => c.check === 'serial')?.detail ?? null,
    checks: report.checks.map((c) => ({ check: c.check, afterMs: c.afterMs, ...(c.detail ? { detail: c.detail } : {}) })),
  };
}

/**
 * Resolves when every check in `spec` has passed (with no check configured: when the VM runs).
 * Throws HealthCheckFailed for the first check that misses `spec.timeout`, and at once when the VM
 * stops (shutoff or crashed) or a check cannot work at all (no agent channel, no console file).
 * An abort rejects with the signal's reason.
 */
export async function waitUntilHealthy(adapter: HypervisorAdapter, vm: string, spec: HealthSpec, options: HealthWaitOptions = {}): Promise<HealthReport> {
  options.signal?.throwIfAborted();
  const over = new AbortController();
  const started = Date.now();
  const w: Wait = {
    adapter,
    vm,
    started,
    deadline: started + spec.timeout,
    timeoutMs: spec.timeout,
    signal: options.signal ? AbortSignal.any([options.signal, over.signal]) : over.signal,
  };

  const running = poll(w, 'running', 'the VM was not running', async () => {
    const state = await adapter.powerState(vm);
    if (state === 'running') return { ok: true };
    if (stopped(state)) throw vmStopped(w, state);
    return { ok: false, why: `it is ${state}` };
  });
  const checks: Promise<HealthCheckPassed>[] = [running];
  if (spec.serial !== undefined) checks.push(serialCheck(w, new RegExp(spec.serial), options));
  if (spec.agent) checks.push(agentCheck(w));
  for (const target of spec.tcp) checks.push(tcpCheck(w, target));
  for (const http of spec.http) checks.push(httpCheck(w, http.url, http.status));

  try {
    const passed = await Promise.race([Promise.all(checks), running.then(() => watchPower(w)), aborted(w.signal)]);
    return { healthyAfterMs: Date.now() - started, checks: passed };
  } finally {
    // Ends the checks still asking and the power watch; their rejections are already handled.
    over.abort();
  }
}

/** Asks until the attempt passes or the deadline goes by. */
async function poll(w: Wait, check: string, what: string, attempt: Attempt): Promise<HealthCheckPassed> {
  let attempts = 0;
  for (;;) {
    w.signal.throwIfAborted();
    attempts++;
    const outcome = await attempt(Math.min(ATTEMPT_MS, Math.max(MIN_ATTEMPT_MS, w.deadline - Date.now())));
    w.signal.throwIfAborted();
    if (outcome.ok) return passed(w, check, outcome.detail);
    if (Date.now() >= w.deadline) {
      throw new HealthCheckFailed(w.vm, check, `${what} within ${seconds(w.timeoutMs)} (${attempts} ${attempts === 1 ? 'attempt' : 'attempts'}); last: ${outcome.why}`);
    }
    await pause(w, Math.min(POLL_MS, w.deadline - Date.now()));
  }
}

/**
 * After the VM first ran: fails as soon as it stops; otherwise runs until the wait is over. Where
 * the adapter reports its VMs (watchVms), the state is asked when a notice names this VM or the
 * connection closed, and every POWER_RECHECK_MS besides (a notice missed while reconnecting);
 * elsewhere every POLL_MS.
 */
async function watchPower(w: Wait): Promise<never> {
  const news = new Wakeup();
  const unwatch = w.adapter.watchVms?.((n) => {
    if (n.kind === 'closed' || n.vm === w.vm || n.id === w.vm) news.notify();
  });
  try {
    for (;;) {
      await (unwatch ? news.pause(POWER_RECHECK_MS, w.signal) : pause(w, POLL_MS));
      const state = await w.adapter.powerState(w.vm);
      w.signal.throwIfAborted();
      if (stopped(state)) throw vmStopped(w, state);
    }
  } finally {
    unwatch?.();
  }
}

async function serialCheck(w: Wait, pattern: RegExp, options: HealthWaitOptions): Promise<HealthCheckPassed> {
  const file = options.serialLog ?? (await w.adapter.serialLogPath(w.vm));
  if (file === undefined) {
    throw new HealthCheckFailed(w.vm, 'serial', 'the VM has no serial console written to a file, so there is nothing to match; give it one or drop the serial check');
  }
  const from = options.serialFrom ?? (await fileSize(file));
  try {
    const match = await waitForSerialLine({
      vm: w.vm,
      file,
      pattern,
      fromOffset: from,
      timeoutMs: Math.max(0, w.deadline - Date.now()),
      signal: w.signal,
      pollMs: SERIAL_POLL_MS,
    });
    // exec ran on one line of the console: its input is the whole line the guest printed.
    return passed(w, 'serial', match.input);
  } catch (err) {
    w.signal.throwIfAborted();
    if (!(err instanceof VmdrError && err.code === 'HEALTH_CHECK_FAILED')) throw err;
    throw new HealthCheckFailed(w.vm, 'serial', `no line matching ${pattern} on the serial console (${file}) within ${seconds(w.timeoutMs)}; last output: ${await consoleTail(file, from)}`);
  }
}

function agentCheck(w: Wait): Promise<HealthCheckPassed> {
  // The hypervisor's own agent (QEMU's guest agent, VMware Tools): the adapter's errors name it.
  return poll(w, 'agent', 'the guest agent did not answer', async (attemptMs) => {
    try {
      await w.adapter.guestAgentPing(w.vm, attemptMs);
      return { ok: true, detail: 'the guest agent answered' };
    } catch (err) {
      if (!(err instanceof VmdrError)) throw err;
      // Not answering yet (the guest boots), or the VM is not running yet: ask again.
      if (err instanceof GuestAgentUnavailable && err.reason === 'not-answering') return { ok: false, why: err.message };
      if (err.code === 'INVALID_POWER_STATE') return { ok: false, why: err.message };
      // No agent channel, or a hypervisor without agents: no amount of waiting helps.
      if (err.code === 'GUEST_AGENT_UNAVAILABLE' || err.code === 'UNSUPPORTED') {
        throw new HealthCheckFailed(w.vm, 'agent', err.remedy ? `${err.message}; ${err.remedy}` : err.message);
      }
      throw err;
    }
  });
}

function tcpCheck(w: Wait, target: string): Promise<HealthCheckPassed> {
  const colon = target.lastIndexOf(':');
  const host = target.slice(0, colon);
  const port = Number(target.slice(colon + 1));
  const check = `tcp ${target}`;
  if (!(port >= 1 && port <= 65535)) return Promise.reject(new HealthCheckFailed(w.vm, check, `${port} is not a TCP port (1 to 65535)`));
  return poll(w, check, `no TCP connection to ${target}`, (attemptMs) => tcpConnect(host, port, attemptMs, w.signal));
}

/** One TCP connect to host:port within attemptMs (the watch's guest check uses it too). */
export function tcpConnect(host: string, port: number, attemptMs: number, signal: AbortSignal): ReturnType<Attempt> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: attemptMs });
    const done = (outcome: Awaited<ReturnType<Attempt>>) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(outcome);
    };
    const onAbort = () => done({ ok: false, why: 'aborted' });
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => done({ ok: true, detail: 'connected' }));
    socket.once('timeout', () => done({ ok: false, why: `no answer within ${attemptMs} ms` }));
    socket.once('error', (err) => done({ ok: false, why: networkError(err) }));
  });
}

function httpCheck(w: Wait, url: string, status: number | undefined): Promise<HealthCheckPassed> {
  const wanted = status === undefined ? 'a 2xx or 3xx status' : `HTTP ${status}`;
  return poll(w, `http ${url}`, `GET ${url} did not answer with ${wanted}`, async (attemptMs) => {
    let response: Response;
    try {
      // manual: a 3xx is an answer from this server; following it could test another one.
      response = await fetch(url, { redirect: 'manual', signal: AbortSignal.any([w.signal, AbortSignal.timeout(attemptMs)]) });
    } catch (err) {
      w.signal.throwIfAborted();
      if ((err as Error).name === 'TimeoutError') return { ok: false, why: `no answer within ${attemptMs} ms` };
      return { ok: false, why: networkError((err as Error).cause ?? err) };
    }
    await response.body?.cancel().catch(() => undefined);
    const answer = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
    const good = status === undefined ? response.status >= 200 && response.status < 400 : response.status === status;
    return good ? { ok: true, detail: answer } : { ok: false, why: answer };
  });
}

/** A socket or fetch failure in the words an operator searches for. */
function networkError(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { hostname?: string };
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EHOSTUNREACH':
      return 'host unreachable';
    case 'ENETUNREACH':
      return 'network unreachable';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `unknown host ${e.hostname ?? ''}`.trim();
    default:
      // undici's words, without a code, for the ports on fetch's block list (6000, 6667, ...).
      if (e.message === 'bad port') return 'fetch refuses this port (it is on the list of blocked ports); use a tcp check for it';
      return e.message || String(err);
  }
}

function stopped(state: PowerState): boolean {
  return state === 'shutoff' || state === 'crashed';
}

function vmStopped(w: Wait, state: PowerState): HealthCheckFailed {
  return new HealthCheckFailed(w.vm, 'running', `the VM is ${state} ${seconds(Date.now() - w.started)} into the health wait; a VM that stops is not healthy`);
}

function passed(w: Wait, check: string, detail: string | undefined): HealthCheckPassed {
  return { check, ok: true, afterMs: Date.now() - w.started, ...(detail ? { detail } : {}) };
}

/** A pause that ends early, with the signal's reason, when the wait is over or aborted. */
async function pause(w: Wait, ms: number): Promise<void> {
  await delay(Math.max(0, ms), undefined, { signal: w.signal }).catch(() => {
    throw w.signal.reason;
  });
}

function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/** The console's last lines since `from`, for a miss: what the guest said instead. */
async function consoleTail(file: string, from: number): Promise<string> {
  const text = await readFile(file).then(
    (bytes) => bytes.subarray(from).toString('utf8'),
    () => '',
  );
  const lines = text
    .split('\n')
    .map((line) => line.replace(/\r$/, '').trim())
    .filter(Boolean);
  return lines.slice(-3).join(' | ') || '(nothing since the boot)';
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
