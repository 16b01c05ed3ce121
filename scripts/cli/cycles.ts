/**
 * How a replication loop reports, the same from `vmdr sync --continuous` and `vmdr serve`: one
 * line (or one JSON event) per cycle, an `rpo-breached` event when the newest point is older
 * than the protection's RPO, one `paused` event (then `resumed`) while the protection is failed over
 * and one `source-fenced` event when the loop fenced its source for that failover,
 * and one `source-replaced` alert (then `resumed`) while its source VM is another machine.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../../plugin/config/schema.js';
import type { PointConsistency } from '../../plugin/replication/consistency.js';
import type { CycleReport } from '../../plugin/replication/continuous.js';
import type { GroupCycleResult } from '../../plugin/replication/group-cycle.js';
import type { GroupCycleReport } from '../../plugin/replication/group-loop.js';
import type { SyncResult } from '../../plugin/replication/sync.js';
import { GroupCycleFailed } from '../../plugin/replication/errors.js';
import { formatBytes } from './progress.js';
import { printJson } from './report.js';

/** Says one thing: as a JSON event with --json, else as a line of text. */
export type Say = (event: Record<string, unknown>, text: string) => void;

export function sayer(json: boolean): Say {
  return (event, text) => (json ? printJson(event) : void process.stdout.write(`${text}\n`));
}

export function describeSync(r: SyncResult): string {
  return (
    `${r.protection}: ${r.kind} (${r.reason}): recovery point ${r.point.id}${consistencyNote(r.point)} at checkpoint ${r.checkpoint}, ` +
    `${formatBytes(r.bytesCovered)} covered, ${formatBytes(r.bytesShipped)} shipped in ${(r.durationMs / 1000).toFixed(1)} s` +
    r.warnings.map((w) => `\n${r.protection}: warning: ${w}`).join('')
  );
}

/**
 * Said only for a protection that asked for application consistency (a plain crash point has
 * nothing to say): " (application-consistent, frozen 84 ms)", " (crash-consistent: freeze-timed-out: …)".
 */
function consistencyNote(p: Partial<PointConsistency>): string {
  if (p.consistency !== 'application' && !p.consistencyIssue) return '';
  const frozen = p.freezeWindowMs != null ? `, frozen ${p.freezeWindowMs} ms` : '';
  const issue = p.consistencyIssue ? `: ${p.consistencyIssue.code}: ${p.consistencyIssue.message}` : '';
  return ` (${p.consistency ?? 'crash'}-consistent${frozen}${issue})`;
}

export function reportCycle(say: Say, protection: Protection, c: CycleReport): void {
  if (c.fenced) {
    const f = c.fenced;
    return say(
      { event: 'source-fenced', protection: c.protection, vm: f.vm, failover: f.failover, fencedAt: f.fencedAt, was: f.was },
      `${c.protection}: fenced source VM ${f.vm} (was ${f.was}): the protection is failed over${f.failover ? ` (${f.failover})` : ''}; ` +
        `it starts again with \`vmdr failback ${c.protection}\` or \`vmdr failover ${c.protection} --revert\``,
    );
  }
  if (c.unfenced) {
    return say(
      { event: 'source-unfenced', protection: c.protection, vm: c.unfenced.vm, failover: c.unfenced.failover },
      `${c.protection}: lifted the fence of failover ${c.unfenced.failover} from source VM ${c.unfenced.vm}: the protection replicates again`,
    );
  }
  if (c.fenceFailed) {
    const f = c.fenceFailed;
    const message = f.error instanceof Error ? f.error.message : String(f.error);
    const code = f.error instanceof VmdrError ? f.error.code : 'INTERNAL';
    return say(
      { event: 'fence-failed', protection: c.protection, vm: f.vm, failover: f.failover, lifting: f.lifting ?? false, error: message, code },
      f.lifting
        ? `${c.protection}: warning: could not lift the fence from source VM ${f.vm}: ${message}`
        : `${c.protection}: ALERT: the protection is failed over and its source VM ${f.vm} could not be fenced, retrying: ${message}`,
    );
  }
  if (c.paused?.reason === 'source-replaced') {
    // An alert, as rpo-breached is: the protection takes no new point until the operator acts.
    const e = c.paused.error;
    return say(
      { event: 'source-replaced', protection: c.protection, vm: e.subject.vm, recorded: e.subject.recorded, found: e.subject.found, message: e.message, remedy: e.remedy },
      `${c.protection}: ALERT: replication paused: ${e.message}${e.remedy ? ` (${e.remedy})` : ''}`,
    );
  }
  if (c.paused?.reason === 'fenced-for-other-copy') {
    const e = c.paused.error;
    return say(
      { event: 'paused', protection: c.protection, reason: c.paused.reason, vm: e.subject.vm, fencedBy: e.subject.fencedBy, failover: e.subject.failover, message: e.message },
      `${c.protection}: replication paused: ${e.message}; it resumes by itself then`,
    );
  }
  if (c.paused?.reason === 'group-member-paused') {
    const g = c.paused;
    return say(
      { event: 'paused', protection: c.protection, reason: g.reason, group: g.group, member: g.member, memberReason: g.why },
      `${c.protection}: replication paused: member ${g.member} of its consistency group ${g.group} is paused (${g.why}); the group's cycles resume with it`,
    );
  }
  if (c.paused?.reason === 'operator') {
    return say(
      { event: 'paused', protection: c.protection, reason: 'operator', by: c.paused.by, at: c.paused.at },
      `${c.protection}: replication paused by ${c.paused.by} (${c.paused.at}): \`vmdr resume ${c.protection}\` or the API resumes it`,
    );
  }
  if (c.paused) {
    const by = c.paused.failover ? ` (${c.paused.failover})` : '';
    return say(
      { event: 'paused', protection: c.protection, reason: c.paused.reason, failover: c.paused.failover },
      `${c.protection}: replication paused: the protection is failed over${by}; it resumes by itself after a failback or a revert`,
    );
  }
  if (c.resumed) say({ event: 'resumed', protection: c.protection }, `${c.protection}: replication resumed`);
  const error = c.error === undefined ? undefined : c.error instanceof Error ? c.error.message : String(c.error);
  // Automation branches on the code, never on the words.
  const code = c.error instanceof VmdrError ? c.error.code : undefined;
  const ofGroup = c.group ? ` (group ${c.group})` : '';
  say(
    {
      event: 'cycle',
      protection: c.protection,
      ...(c.group ? { group: c.group } : {}),
      lagSeconds: c.lagSeconds,
      rpoBreached: c.rpoBreached,
      ...(c.result ? { result: c.result } : {}),
      ...(error ? { error, code: code ?? 'INTERNAL' } : {}),
    },
    c.result ? `${describeSync(c.result)}, lag ${c.lagSeconds?.toFixed(1)} s${ofGroup}` : `${c.protection}: ${c.group ? `group ${c.group}'s ` : ''}cycle failed, retrying: ${error}`,
  );
  if (c.rpoBreached) {
    say(
      { event: 'rpo-breached', protection: c.protection, lagSeconds: c.lagSeconds, rpoSeconds: protection.rpo / 1000 },
      `${c.protection}: RPO breached: newest recovery point is ${c.lagSeconds?.toFixed(0)} s old (RPO ${protection.rpo / 1000} s)`,
    );
  }
}

/** "group shop: group point shop@… (crash-consistent, members paused 161 ms): shop-db rp-7, shop-web rp-9". */
export function describeGroupCycle(r: GroupCycleResult): string {
  const held = r.consistency === 'application' ? 'frozen' : 'paused';
  return `group ${r.group}: group point ${r.instant} (${r.consistency}-consistent, members ${held} ${r.windowMs} ms): ${r.members.map((m) => `${m.protection} ${m.point.id}`).join(', ')}`;
}

/** A group loop's cycle (vmdr serve): one `group-cycle` event, committed or failed, before its members' own. */
export function reportGroupCycle(say: Say, g: GroupCycleReport): void {
  if (g.result) {
    const r = g.result;
    return say(
      { event: 'group-cycle', group: g.group, outcome: 'committed', instant: r.instant, consistency: r.consistency, windowMs: r.windowMs, durationMs: g.durationMs, members: r.members.map((m) => ({ protection: m.protection, point: m.point.id })), warnings: r.warnings },
      `${describeGroupCycle(r)}, in ${(g.durationMs / 1000).toFixed(1)} s` + r.warnings.map((w) => `\ngroup ${r.group}: warning: ${w}`).join(''),
    );
  }
  const error = g.error instanceof Error ? g.error.message : String(g.error);
  const code = g.error instanceof VmdrError ? g.error.code : 'INTERNAL';
  const windowMs = g.error instanceof GroupCycleFailed ? g.error.windowMs : undefined;
  say({ event: 'group-cycle', group: g.group, outcome: 'failed', error, code, durationMs: g.durationMs, ...(windowMs !== undefined ? { windowMs } : {}) }, `group ${g.group}: cycle failed, retrying: ${error}`);
}
