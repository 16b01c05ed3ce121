import type { Argv } from 'yargs';
import { findProtection } from '../../plugin/protections/find.js';
import { releasePoints } from '../../plugin/protections/source-record.js';
import { listRecoveryPoints } from '../../plugin/replication/points.js';
import { UNRECORDED } from '../../plugin/state/sources.js';
import { printJson, printTable, run } from '../cli/report.js';
import { formatBytes } from '../cli/progress.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface PointsOptions extends GlobalOptions {
  vm: string;
  release?: string[];
}

export const pointsCommand: CommandBody<PointsOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    y.positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }).option('release', {
      type: 'string',
      array: true,
      describe: "Let retention merge points kept for a replaced source VM: `replaced` (all of them) or point ids (rp-3 rp-4)",
    }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async (ctx) => {
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
        const points = await listRecoveryPoints(ctx, protection);
        if (argv.json) return printJson(points);
        if (points.length === 0) return void process.stdout.write(`${protection.name}: no recovery points yet (vmdr protect ${protection.name})\n`);
        printTable(
          ['ID', 'TIME', 'KIND', 'CHECKPOINT', 'SHIPPED', 'IMAGES'],
          points.map((p) => [
            p.id,
            p.time.toISOString(),
            p.kind + (p.pinned ? ' (pinned)' : '') + (p.replacedSource ? ` (pinned: replaced VM ${p.replacedSource === UNRECORDED ? 'of unrecorded UUID' : p.replacedSource})` : ''),
            p.checkpoint,
            formatBytes(p.bytesShipped),
            p.disks.map((d) => `${d.disk}=${d.image}`).join(' '),
          ]),
        );
      }),
    ),
};
