/**
 * What a drill keeps of each VM it booted, so a customer can see that their VM really came up:
 * the identity the guest applied, each health check with its result and time, the point booted
 * and its age, the console's last lines, and a screenshot of its display when it has one. Taken
 * after the health step (passed or failed) and before the drill's VM is removed; recorded as the
 * VM's `evidence` journal step, so the report (report.ts) is built from the journal alone and a
 * resumed drill does not take it again.
 */
import { createHash } from 'node:crypto';
import { chmod, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';
import { ensureRunReportDir } from '../reports/paths.js';
import { targetIdentity, type AppliedIdentity } from '../targets/identity.js';
import type { HealthStep } from './boot.js';
import type { RunContext } from './context.js';
import type { ChosenPoint } from './recovery-point.js';
import { fileSize, parseGuestFields, readFrom } from './serial-health.js';

export interface EvidenceCheck {
  /** The health check's name as the report shows it (e.g. "serial", "tcp 22", "guest-agent"). */
  check: string;
  passed: boolean;
  /** When the check passed or was last tried (ISO time). */
  at: string;
  detail?: string;
}

export interface VmEvidence {
  /**
   * The network identity the guest applied, as it printed it (`printed`: its ready line, when it
   * prints one) or else as vmdr gave it; `expected` is what the config asks for, `instanceId` and
   * `action` what the identity step did (a new seed written, or found in place).
   */
  identity: {
    hostname?: string;
    mac?: string;
    ip?: string;
    printed?: string;
    instanceId?: string;
    action?: AppliedIdentity['action'];
    expected?: { hostname: string; mac?: string; ip?: string };
  } | null;
  checks: EvidenceCheck[];
  /** The point booted, and its age when the VM was started (the start step's end). */
  point: { id: string; time: string; ageMs: number } | null;
  /** The console's last lines (control characters removed), oldest first. */
  console: string[];
  /**
   * The display's screenshot: a PNG file (absolute path) in the run's report directory
   * (reports/paths.ts), 0600, with its SHA-256 so a signed report covers it; or why there is none
   * (the VM has no display, or the picture could not be taken: that never fails the drill).
   */
  screenshot: { file: string; sha256: string; width: number; height: number } | { missing: string } | null;
  capturedAt: string;
}

/** How many of the console's last lines are kept, and how much of its end is read to find them. */
export const CONSOLE_LINES = 40;
const CONSOLE_TAIL_BYTES = 64 * 1024;
/** A line longer than this (a guest printing without newlines) is cut. */
const CONSOLE_LINE_CHARS = 400;

/**
 * The `evidence` step of `p` (as the drill sees it: its target is the drill VM), taken from the
 * journal's earlier steps of the VM, its console file and its display.
 */
export function evidenceStep(ctx: RunContext, adapter: HypervisorAdapter, p: Protection, console: string): Promise<VmEvidence> {
  return ctx.journal.step<VmEvidence>(p.name, 'evidence', () => takeEvidence(ctx, adapter, p, console));
}

async function takeEvidence(ctx: RunContext, adapter: HypervisorAdapter, p: Protection, console: string): Promise<VmEvidence> {
  const j = ctx.journal;
  const capturedAt = new Date().toISOString();
  const point = j.result<ChosenPoint>(p.name, 'choose-point');
  const started = j.done(p.name, 'start');
  return {
    identity: identityOf(p, j.result<AppliedIdentity>(p.name, 'identity'), j.result<HealthStep>(p.name, 'health')),
    checks: checksOf(ctx, p),
    point: point ? { id: point.id, time: point.time, ageMs: (started?.endedAtMs ?? Date.now()) - Date.parse(point.time) } : null,
    console: await consoleTail(console),
    screenshot: await screenshot(ctx, adapter, p),
    capturedAt,
  };
}

function identityOf(p: Protection, applied: AppliedIdentity | undefined, health: HealthStep | undefined): VmEvidence['identity'] {
  const wanted = targetIdentity(p);
  const nic = wanted.nics[0];
  const expected = { hostname: wanted.hostname, ...(nic?.mac ? { mac: nic.mac } : {}), ...(nic?.addresses[0] ? { ip: nic.addresses[0] } : {}) };
  const printed = health?.guest ?? undefined;
  // A guest that prints `key=value` fields (the lab guest, any vmdr-aware guest) says what it applied.
  const said = printed ? parseGuestFields(printed) : {};
  const pick = (key: 'hostname' | 'mac' | 'ip') => (said[key] && said[key] !== '-' ? said[key] : expected[key]);
  return {
    ...(pick('hostname') ? { hostname: pick('hostname') } : {}),
    ...(pick('mac') ? { mac: pick('mac') } : {}),
    ...(pick('ip') ? { ip: pick('ip') } : {}),
    ...(printed ? { printed } : {}),
    ...(applied ? { instanceId: applied.instanceId, action: applied.action } : {}),
    expected,
  };
}

/** Each check that passed, at the time it passed; a health step that failed, as one failed check. */
function checksOf(ctx: RunContext, p: Protection): EvidenceCheck[] {
  const row = ctx.journal.steps().find((s) => s.protection === p.name && s.step === 'health' && (s.status === 'done' || s.status === 'failed'));
  if (!row) return [];
  if (row.status === 'failed') {
    return [{ check: 'health', passed: false, at: new Date(row.endedAtMs ?? Date.now()).toISOString(), ...(row.errorMessage ? { detail: row.errorMessage } : {}) }];
  }
  const health = JSON.parse(row.detail ?? 'null') as HealthStep | null;
  return (health?.checks ?? []).map((c) => ({
    check: c.check,
    passed: true,
    at: new Date(row.startedAtMs + c.afterMs).toISOString(),
    ...(c.detail ? { detail: c.detail } : {}),
  }));
}

/** The console's last lines, from its tail only: a guest that printed gigabytes costs no more. */
export async function consoleTail(file: string, lines = CONSOLE_LINES): Promise<string[]> {
  const size = await fileSize(file);
  const from = Math.max(0, size - CONSOLE_TAIL_BYTES);
  const text = (await readFrom(file, from, CONSOLE_TAIL_BYTES)).toString('utf8');
  const all = text.split('\n');
  // Read from inside the file: its first line is a piece of one.
  if (from > 0) all.shift();
  return all
    .map(printable)
    .filter((line) => line.trim() !== '')
    .slice(-lines);
}

/**
 * What a terminal would show of a line: the text after its last carriage return, without escape
 * sequences (colours, cursor moves) or other control characters.
 */
function printable(raw: string): string {
  const shown = raw.replace(/\r+$/, '').split('\r').pop()!;
  return shown
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b[@-_]/g, '')
    .replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f]/g, '')
    .replace(/\s+$/, '')
    .slice(0, CONSOLE_LINE_CHARS);
}

async function screenshot(ctx: RunContext, adapter: HypervisorAdapter, p: Protection): Promise<VmEvidence['screenshot']> {
  try {
    const shot = await adapter.screenshot(p.target.vm);
    const file = join(await ensureRunReportDir(ctx.config, ctx.id), `screenshot-${p.name}.png`);
    await writeFile(`${file}.new`, shot.png, { mode: 0o600 });
    await chmod(`${file}.new`, 0o600);
    await rename(`${file}.new`, file);
    return { file, sha256: createHash('sha256').update(shot.png).digest('hex'), width: shot.width, height: shot.height };
  } catch (err) {
    // The drill's verdict is its health checks; a picture that could not be taken is recorded as missing.
    return { missing: err instanceof Error ? err.message : String(err) };
  }
}
