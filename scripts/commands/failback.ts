import type { Argv } from 'yargs';
import { duration } from '../../plugin/config/schema.js';
import { EXIT_USAGE } from '../cli/report.js';
import type { CommandBody } from './index.js';
import { withServerOptions, type ServerOptions } from './server-options.js';
import { runFailoverCommand } from './failover-run.js';
import { shutdownTimeoutProblem, type GlobalOptions } from './options.js';

interface FailbackArgs extends GlobalOptions, ServerOptions {
  vm?: string;
  plan?: string;
  resume: boolean;
  'shutdown-timeout'?: string;
}

export const failbackCommand: CommandBody<FailbackArgs> = {
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y)
      .positional('vm', { type: 'string', describe: 'Protection or source VM name' })
      .option('plan', { type: 'string', describe: 'Fail a whole plan back, group by group' })
      .option('resume', { type: 'boolean', default: false, describe: 'Continue the failback that stopped half way' })
      .option('shutdown-timeout', { type: 'string', describe: 'How long the DR VM may take to shut down (default 2m)' }),
  handler: (argv) => {
    const timeout = argv['shutdown-timeout'];
    const wrong =
      Boolean(argv.vm) === Boolean(argv.plan)
        ? 'name a VM or a --plan (one of them)'
        : shutdownTimeoutProblem(timeout);
    if (wrong) {
      process.stderr.write(`vmdr: ${wrong} (see vmdr failback --help)\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    return runFailoverCommand(argv, {
      kind: 'failback',
      ...(argv.vm ? { vm: argv.vm } : {}),
      ...(argv.plan ? { plan: argv.plan } : {}),
      resume: argv.resume,
      ...(timeout ? { shutdownTimeoutMs: duration.parse(timeout) } : {}),
    });
  },
};
