import type { Argv } from 'yargs';
import { VmdrError } from '../../hypervisors/errors.js';
import { findProtection } from '../../plugin/protections/find.js';
import { releasePoints } from '../../plugin/protections/source-record.js';
import { describeConsistency } from '../../plugin/replication/consistency.js';
import { listRecoveryPoints } from '../../plugin/replication/points.js';
import { UNRECORDED } from '../../plugin/state/sources.js';
import { printJson, printTable, run } from '../cli/report.js';
import { formatBytes } from '../cli/progress.js';
import type { ApiClient } from '../../plugin/api/client.js';
import type { RecoveryPoint } from '../../plugin/replication/replica/store.js';
import type { CommandBody } from './index.js';
import { serverOf, withServerOptions, type ServerOptions } from './server-options.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface PointsOptions extends GlobalOptions, ServerOptions {
  vm: string;
  release?: string[];
}

export const pointsCommand: CommandBody<PointsOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y).positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }).option('release', {
      type: 'string',
      array: true,
      describe: "Let retention merge points kept for a replaced source VM: `replaced` (all of them) or point ids (rp-3 rp-4)",
    }),
  handler: (argv) =>
    run(argv, async () => {
      const server = await serverOf(argv);
      if (server) return pointsThroughApi(server, argv);
      await withReplicationContext(argv.config, async (ctx) => {
        const protection = findProtection(ctx.config, ctx.file, argv.vm);
        if (argv.release) {
          const which = argv.release.length === 1 && argv.release[0] === 'replaced' ? ('replaced' as const) : argv.release;
          const released = await releasePoints(ctx, protection, which);
          const notKept = which === 'replaced' ? [] : which.filter((id) => !released.includes(id));
          if (argv.json) return printJson({ protection: protection.name, released, notKept });
          const said = released.length ? `released ${released.join(', ')}: retention may merge them now` : 'no point was kept for a replaced source VM';
          const also = notKept.length ? ` (${notKept.join(', ')} ${notKept.length > 1 ? 'were' : 'was'} not kept)` : '';
          return void process.stdout.write(`${protection.name}: ${said}${also}\n`);
        }
        printPoints(protection.name, await listRecoveryPoints(ctx, protection), argv.json);
      });
    }),
};

/** Points as the daemon's API gives them (a tenant's token sees no image paths of the DR host). */
type PointAnswer = Omit<RecoveryPoint, 'time' | 'committedAt' | 'disks'> & { time: string; committedAt: string; disks: { disk: string; sizeBytes: number; image?: string }[] };

async function pointsThroughApi(server: ApiClient, argv: PointsOptions): Promise<void> {
  if (argv.release) throw new VmdrError('OPTION_CONFLICT', '--release is done on the DR host itself, not through --server');
  try {
    const points = await server.get<PointAnswer[]>(`/api/v1/protections/${encodeURIComponent(argv.vm)}/points`);
    const name = points[0]?.protection ?? argv.vm;
    printPoints(name, points.map((p) => ({ ...p, time: new Date(p.time), committedAt: new Date(p.committedAt) })), argv.json);
  } finally {
    server.close();
  }
}

type PrintedPoint = Omit<RecoveryPoint, 'disks'> & { disks: { disk: string; image?: string }[] };

function printPoints(protection: string, points: PrintedPoint[], json: boolean): void {
  if (json) return printJson(points);
  if (points.length === 0) return void process.stdout.write(`${protection}: no recovery points yet (vmdr protect ${protection})\n`);
  printTable(
    ['ID', 'TIME', 'KIND', 'CONSISTENCY', 'CHECKPOINT', 'SHIPPED', 'IMAGES'],
    points.map((p) => [
      p.id,
      p.time.toISOString(),
      p.kind + (p.pinned ? ' (pinned)' : '') + (p.replacedSource ? ` (pinned: replaced VM ${p.replacedSource === UNRECORDED ? 'of unrecorded UUID' : p.replacedSource})` : ''),
      describeConsistency(p),
      p.checkpoint,
      formatBytes(p.bytesShipped),
      p.disks.map((d) => (d.image ? `${d.disk}=${d.image}` : d.disk)).join(' '),
    ]),
  );
}
