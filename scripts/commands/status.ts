import { groupsOf, protectionStatus, type ProtectionStatus } from '../../plugin/protections/status.js';
import { describeOverdue, overdueHolds, sourceSitesHere } from '../../plugin/replication/left-holds.js';
import { formatBytes } from '../cli/progress.js';
import { formatRate } from '../../plugin/config/bandwidth.js';
import type { LimitInForce } from '../../plugin/replication/bandwidth/in-force.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { Argv } from 'yargs';
import type { CommandBody } from './index.js';
import { serverOf, withServerOptions, type ServerOptions } from './server-options.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

type StatusOptions = GlobalOptions & ServerOptions;

export const statusCommand: CommandBody<StatusOptions> = {
  builder: (y: Argv<GlobalOptions>) => withServerOptions(y),
  handler: (argv) =>
    run(argv, async () => {
      const server = await serverOf(argv);
      if (server) {
        try {
          const { protections } = await server.get<{ protections: ProtectionStatus[] }>('/api/v1/status');
          return printStatus(protections, server.url, argv.json);
        } finally {
          server.close();
        }
      }
      await withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        printStatus(await protectionStatus({ config, file, sites, state }), file, argv.json);
        // Holds are this host's records: a VM vmdr kept paused or frozen past its deadline needs a person.
        for (const h of await overdueHolds(sites, sourceSitesHere(config))) (argv.json ? process.stderr : process.stdout).write(`${describeOverdue(h)}\n`);
      });
    }),
};

/** The rows as a table and the notes under it (or as JSON); `where` names what has no protections. */
function printStatus(rows: ProtectionStatus[], where: string, json: boolean): void {
  if (json) return printJson(rows);
  if (rows.length === 0) return void process.stdout.write(`${where}: no protections\n`);
  printTable(
    ['PROTECTION', 'TENANT', 'SOURCE', 'STATE', 'TARGET', 'STATE', 'ROLE', 'WATCH', 'RPO', 'LIMIT', 'LAST POINT', 'LAG', 'LAST SYNC', 'DRIFT'],
    rows.map((r) => [
      r.protection,
      r.tenant ?? '-',
      `${r.source.vm}@${r.source.site}`,
      r.source.state + (r.source.fenced ? ', FENCED' : '') + (r.sourceIdentity.replaced ? ', REPLACED' : r.sourceIdentity.renamedTo ? ', renamed' : ''),
      `${r.target.vm}@${r.target.site}`,
      r.target.state,
      describeRole(r),
      r.watch ? `${r.watch.state ?? '?'} (${r.watch.policy})` : '-',
      `${r.rpoSeconds}s`,
      describeLimit(r),
      r.lastPoint ? `${r.lastPoint.id} ${r.lastPoint.time}` : r.pointsProblem ? `? (${r.pointsProblem})` : '-',
      r.lagSeconds === null ? '-' : `${r.lagSeconds.toFixed(1)}s${r.rpoBreached ? ' (RPO breached)' : r.role === 'failed-over' ? ' (paused)' : ''}`,
      r.lastSync ? `${r.lastSync.kind} ${r.lastSync.outcome}${r.lastSync.error ? `: ${r.lastSync.error}` : ''}` : '-',
      describeDrift(r),
    ]),
  );
  printGroups(rows);
  for (const r of rows) {
    if (r.source.fenced) {
      process.stdout.write(
        `${r.protection}: source VM ${r.source.vm} is fenced (failover ${r.source.fenced.failover}, ${r.source.fenced.fencedAt}): only \`vmdr failback ${r.protection}\` or \`vmdr failover ${r.protection} --revert\` starts it\n`,
      );
    }
    const id = r.sourceIdentity;
    if (id.replaced) {
      process.stdout.write(
        `${r.protection}: source VM ${r.source.vm} is another machine (UUID ${id.current}) than the one protected (UUID ${id.recorded}); ` +
          `its syncs are refused: \`vmdr protect ${r.protection} --replace-source\` makes it the source and keeps the old points\n`,
      );
    } else if (id.renamedTo) {
      process.stdout.write(`${r.protection}: source VM ${r.source.vm} is now named ${id.renamedTo} (UUID ${id.recorded}); syncs follow it: update the config\n`);
    }
  }
}

/** The consistency groups of the rows, one line each under the protections. */
function printGroups(rows: ProtectionStatus[]): void {
  const groups = groupsOf(rows);
  if (groups.length === 0) return;
  process.stdout.write('\n');
  printTable(
    ['GROUP', 'MEMBERS', 'LAST GROUP POINT', 'AGE', 'LAST CYCLE', 'WINDOW', 'LAG'],
    groups.map((g) => [
      g.group,
      g.members.join(','),
      g.lastGroupPoint ? `${g.lastGroupPoint.id} ${g.lastGroupPoint.time}` : '-',
      g.lastGroupPoint ? `${g.lastGroupPoint.ageSeconds.toFixed(1)}s` : '-',
      (g.lastCycle ? `${g.lastCycle.outcome}${g.lastCycle.error ? `: ${g.lastCycle.error}` : ''}` : '-') + (g.cycleRunning ? ' (a cycle runs)' : ''),
      g.windowMs === null ? '-' : `${g.windowMs} ms`,
      g.lagSeconds === null ? '-' : `${g.lagSeconds.toFixed(1)}s`,
    ]),
  );
}

/** "replicating", "failed over (fo-…, rp-N)", or "?" where this host cannot know. */
function describeRole(r: ProtectionStatus): string {
  if (r.role !== 'failed-over' && r.paused) return `paused (by ${r.paused.by})`;
  if (r.role === null) return '?';
  if (r.role === 'replicating') return 'replicating';
  const by = [r.failover?.id, r.failover?.point].filter((x): x is string => Boolean(x));
  return by.length ? `failed over (${by.join(', ')})` : 'failed over';
}

/** "unlimited", "5 MB/s (protection)", "20 MB/s (link to dr) until 20:00, then unlimited". */
function describeLimit(r: ProtectionStatus): string {
  const b = r.bandwidth as ProtectionStatus['bandwidth'] | undefined;
  // A daemon older than the field (`--server`) does not say.
  if (!b) return '?';
  const one = (l: LimitInForce) => (l.limit === null ? 'unlimited' : `${formatRate(l.limit)} (${l.source === 'protection' ? 'protection' : `link to ${b.site}`})`);
  return b.next ? `${one(b)} until ${clockTime(new Date(b.next.at))}, then ${one(b.next)}` : one(b);
}

/** "20:00" today (on this host's clock, as the windows are), "Sat 06:00" later; seconds only when a window has them. */
function clockTime(at: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}${at.getSeconds() ? `:${pad(at.getSeconds())}` : ''}`;
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString('en-GB', { weekday: 'short' })} ${time}`;
}

/** "-", "none", or what differs: "vdc missing on target; vdb 1.0 GiB on target, 2.0 GiB at source". */
function describeDrift(r: ProtectionStatus): string {
  if (r.drift === null) return '-';
  if (r.drift.length === 0) return 'none';
  const size = (n: number | undefined) => (n === undefined ? '?' : formatBytes(n));
  const each = r.drift.map((d) =>
    d.kind === 'missing'
      ? `${d.disk} missing on target`
      : d.kind === 'extra'
        ? `${d.disk} not at source`
        : `${d.disk} ${size(d.targetBytes)} on target, ${size(d.sourceBytes)} at source`,
  );
  // Provisioning adds and grows; a disk the source lost or a shrunk one it leaves as it is.
  const fixable = r.drift.some((d) => d.kind === 'missing' || (d.kind === 'size' && (d.sourceBytes ?? 0) > (d.targetBytes ?? 0)));
  return `${each.join('; ')}${fixable ? ` (run \`vmdr target provision ${r.protection}\`)` : ''}`;
}
