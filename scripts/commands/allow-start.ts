/**
 * `vmdr allow-start P [--for 10m]`: on the source host, lets protection P's source VM start
 * without the DR site's answer (plugin/sites/allow-start.ts), e.g. after a reboot while the DR
 * site does not answer. The operator has made sure that P is not failed over.
 */
import { userInfo } from 'node:os';
import type { Argv } from 'yargs';
import { durationBetween } from '../../plugin/config/schema.js';
import { findProtection } from '../../plugin/protections/find.js';
import { allowStart } from '../../plugin/sites/allow-start.js';
import { CLI_ACTOR } from '../../plugin/state/audit.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface AllowStartArgs extends GlobalOptions {
  protection: string;
  for: string;
}

/** Long enough to start it by hand, short enough that a forgotten one does not stand for days. */
const lasting = durationBetween('1m', '24h');

export const allowStartCommand: CommandBody<AllowStartArgs> = {
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('protection', { type: 'string', demandOption: true, describe: 'Protection or source VM name' })
      .option('for', { type: 'string', default: '10m', describe: 'How long the VM may start (1m to 24h)' })
      .check((argv) => {
        const parsed = lasting.safeParse(argv.for);
        return parsed.success || `--for ${JSON.stringify(argv.for)} is not ${parsed.error.issues[0]?.message ?? 'a duration'}`;
      }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async (ctx) => {
        const p = findProtection(ctx.config, ctx.file, argv.protection);
        const { vm, until } = await allowStart(ctx, p, lasting.parse(argv.for), { actor: CLI_ACTOR, actorName: userInfo().username });
        if (argv.json) return printJson({ protection: p.name, vm, until: until.toISOString() });
        process.stdout.write(
          `${p.name}: source VM ${vm} may start until ${until.toISOString()} without its DR site's answer (audited); start it now, e.g. \`virsh start ${vm}\`\n`,
        );
      }),
    ),
};
