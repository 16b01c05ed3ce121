/**
 * `vmdr watch clear P`: after an automatic failover the watch takes no second automatic action on
 * that protection until an operator clears it here (or through the API). Run on the DR host, whose
 * state file the daemon reads.
 */
import { userInfo } from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import { CLI_ACTOR } from '../../plugin/state/audit.js';
import { findProtection } from '../../plugin/protections/find.js';
import { clearHold } from '../../plugin/watch/hold.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withState } from './state-context.js';

interface ClearArgs extends GlobalOptions {
  protection: string;
}

const clearCommand: CommandModule<GlobalOptions, ClearArgs> = {
  command: 'clear <protection>',
  describe: 'Let the watch act again on a protection an automatic failover holds',
  builder: (y: Argv<GlobalOptions>) => y.positional('protection', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }),
  handler: (argv) =>
    run(argv, () =>
      withState(argv.config, async (state, { config, file }) => {
        const p = findProtection(config, file, argv.protection);
        const event = clearHold(state, p, { actor: CLI_ACTOR, actorName: userInfo().username });
        if (argv.json) return printJson({ protection: p.name, state: event.state, detail: event.detail, at: event.at.toISOString() });
        process.stdout.write(`${p.name}: ${event.detail}\n`);
      }),
    ),
};

export const watchCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(clearCommand).demandCommand(1),
  handler: () => undefined,
};
