import type { CommandModule } from 'yargs';
import { protectionStatus, type ProtectionStatus } from '../../plugin/protections/status.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

export const statusCommand: CommandModule<GlobalOptions, GlobalOptions> = {
  command: 'status',
  describe: 'Show every protection: its VMs, role (replicating or failed over), newest recovery point, lag and last sync',
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        const rows = await protectionStatus({ config, file, sites, state });
        if (argv.json) return printJson(rows);
        if (rows.length === 0) return void process.stdout.write(`${file}: no protections\n`);
        printTable(
          ['PROTECTION', 'TENANT', 'SOURCE', 'STATE', 'TARGET', 'STATE', 'ROLE', 'RPO', 'LAST POINT', 'LAG', 'LAST SYNC'],
          rows.map((r) => [
            r.protection,
            r.tenant ?? '-',
            `${r.source.vm}@${r.source.site}`,
            r.source.state,
            `${r.target.vm}@${r.target.site}`,
            r.target.state,
            describeRole(r),
            `${r.rpoSeconds}s`,
            r.lastPoint ? `${r.lastPoint.id} ${r.lastPoint.time}` : r.pointsProblem ? `? (${r.pointsProblem})` : '-',
            r.lagSeconds === null ? '-' : `${r.lagSeconds.toFixed(1)}s${r.rpoBreached ? ' (RPO breached)' : r.role === 'failed-over' ? ' (paused)' : ''}`,
            r.lastSync ? `${r.lastSync.kind} ${r.lastSync.outcome}${r.lastSync.error ? `: ${r.lastSync.error}` : ''}` : '-',
          ]),
        );
      }),
    ),
};

/** "replicating", "failed over (fo-…, rp-N)", or "?" where this host cannot know. */
function describeRole(r: ProtectionStatus): string {
  if (r.role === null) return '?';
  if (r.role === 'replicating') return 'replicating';
  const by = [r.failover?.id, r.failover?.point].filter((x): x is string => Boolean(x));
  return by.length ? `failed over (${by.join(', ')})` : 'failed over';
}
