import type { Argv } from 'yargs';
import { VmdrError } from '../../hypervisors/errors.js';
import { findProtection } from '../../plugin/protections/find.js';
import { releasePoints } from '../../plugin/protections/source-record.js';
import { pointAt } from '../../plugin/failover/recovery-point.js';
import { parsePointTime, POINT_TIME_EXPECTED } from '../../plugin/replication/point-time.js';
import { groupPointSeq, recoveryPointsAndSpace, tiersOf, type PointTier } from '../../plugin/replication/points.js';
import type { ReplicaSpace } from '../../plugin/replication/replica/store.js';
import { describeConsistency } from '../../plugin/replication/consistency.js';
import { UNRECORDED } from '../../plugin/state/sources.js';
import { EXIT_USAGE, printJson, printTable, run } from '../cli/report.js';
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
  at?: string;
}

export const pointsCommand: CommandBody<PointsOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y).positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }).option('release', {
      type: 'string',
      array: true,
      describe: "Let retention merge points kept for a replaced source VM: `replaced` (all of them) or point ids (rp-3 rp-4)",
    }).option('at', { type: 'string', nargs: 1, describe: 'Only the newest point at or before this time: ISO 8601 (2026-11-25T14:05:00Z) or back from now (-2h)' }),
  handler: (argv) => {
    const at = argv.at === undefined ? undefined : parsePointTime(argv.at);
    const wrong = argv.at !== undefined && !at ? `--at ${JSON.stringify(argv.at)} is not ${POINT_TIME_EXPECTED}` : argv.at && argv.release ? '--at and --release exclude each other' : undefined;
    if (wrong) {
      process.stderr.write(`vmdr: ${wrong} (see vmdr points --help)\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    return run(argv, async () => {
      const server = await serverOf(argv);
      if (server) return pointsThroughApi(server, argv, at);
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
        const { points, space } = await recoveryPointsAndSpace(ctx, protection);
        const tiers = tiersOf(points, protection, new Date(), await groupPointSeq(ctx, protection, points));
        const shown = points.map((p, i) => ({ ...p, tier: tiers[i]!, allocatedBytes: space?.byPoint[p.id] ?? null }));
        printPoints(protection.name, shown, argv.json, at, space);
      });
    });
  },
};

/** Points as the daemon's API gives them (a tenant's token sees no image paths of the DR host). */
type PointAnswer = Omit<RecoveryPoint, 'time' | 'committedAt' | 'disks'> & {
  time: string;
  committedAt: string;
  disks: { disk: string; sizeBytes: number; image?: string }[];
  tier: PointTier;
  allocatedBytes: number | null;
};

async function pointsThroughApi(server: ApiClient, argv: PointsOptions, at: Date | undefined): Promise<void> {
  if (argv.release) throw new VmdrError('OPTION_CONFLICT', '--release is done on the DR host itself, not through --server');
  try {
    const points = await server.get<PointAnswer[]>(`/api/v1/protections/${encodeURIComponent(argv.vm)}/points`);
    const name = points[0]?.protection ?? argv.vm;
    printPoints(name, points.map((p) => ({ ...p, time: new Date(p.time), committedAt: new Date(p.committedAt) })), argv.json, at, null);
  } finally {
    server.close();
  }
}

type PrintedPoint = Omit<RecoveryPoint, 'disks'> & { disks: { disk: string; image?: string }[]; tier: PointTier; allocatedBytes: number | null };

const TIER_WORDS: Record<PointTier, string> = {
  all: 'all',
  minutely: 'minutely',
  hourly: 'hourly',
  daily: 'daily',
  keep: 'keep',
  newest: 'newest',
  pinned: 'pinned',
  replaced: 'replaced VM',
  'held-by-pin': 'held by a pin',
  group: 'group point',
  expiring: 'expiring',
};

/** All points, or with `at` the one chosen; `space`: what the replica occupies, when this host can see it. */
function printPoints(protection: string, all: PrintedPoint[], json: boolean, at: Date | undefined, space: ReplicaSpace | null): void {
  const points = at ? [pointAt(protection, all, at)] : all;
  if (json) return printJson(points);
  if (points.length === 0) return void process.stdout.write(`${protection}: no recovery points yet (vmdr protect ${protection})\n`);
  const bytes = (n: number | null) => (n === null ? '-' : formatBytes(n));
  printTable(
    ['ID', 'TIME', 'KIND', 'TIER', 'CONSISTENCY', 'CHECKPOINT', 'SHIPPED', 'SPACE', 'IMAGES'],
    points.map((p) => [
      p.id,
      p.time.toISOString(),
      p.kind + (p.pinned ? ' (pinned)' : '') + (p.replacedSource ? ` (pinned: replaced VM ${p.replacedSource === UNRECORDED ? 'of unrecorded UUID' : p.replacedSource})` : ''),
      TIER_WORDS[p.tier],
      describeConsistency(p),
      p.checkpoint,
      formatBytes(p.bytesShipped),
      bytes(p.allocatedBytes),
      p.disks.map((d) => (d.image ? `${d.disk}=${d.image}` : d.disk)).join(' '),
    ]),
  );
  if (at) return;
  const ofPoints = all.every((p) => p.allocatedBytes !== null) ? all.reduce((sum, p) => sum + p.allocatedBytes!, 0) : null;
  if (space) process.stdout.write(`${protection}: ${formatBytes(space.totalBytes)} used on the DR site (its points ${formatBytes(ofPoints ?? 0)}, boot overlays of failovers and drills and other files ${formatBytes(space.totalBytes - (ofPoints ?? 0))})\n`);
  else if (ofPoints !== null) process.stdout.write(`${protection}: its points use ${formatBytes(ofPoints)} on the DR site\n`);
}
