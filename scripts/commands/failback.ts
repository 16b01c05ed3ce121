import type { Argv, CommandModule } from 'yargs';
import { duration } from '../../plugin/config/schema.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { runFailover } from '../../plugin/failover/runner.js';
import { describeFailover, stepPrinter } from '../cli/failover-report.js';
import { EXIT_USAGE, printJson, run } from '../cli/report.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface FailbackArgs extends GlobalOptions {
  vm?: string;
  plan?: string;
  resume: boolean;
  'shutdown-timeout'?: string;
}

export const failbackCommand: CommandModule<GlobalOptions, FailbackArgs> = {
  command: 'failback [vm]',
  describe: 'Bring a failed-over VM (or plan) home with what it did on the DR site: only changed blocks travel back',
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('vm', { type: 'string', describe: 'Protection or source VM name' })
      .option('plan', { type: 'string', describe: 'Fail a whole plan back, group by group' })
      .option('resume', { type: 'boolean', default: false, describe: 'Continue the failback that stopped half way' })
      .option('shutdown-timeout', { type: 'string', describe: 'How long the DR VM may take to shut down (default 2m)' }),
  handler: (argv) => {
    const timeout = argv['shutdown-timeout'];
    const wrong =
      Boolean(argv.vm) === Boolean(argv.plan)
        ? 'name a VM or a --plan (one of them)'
        : timeout !== undefined && !duration.safeParse(timeout).success
          ? `--shutdown-timeout ${JSON.stringify(timeout)} is not a duration such as 30s or 2m`
          : undefined;
    if (wrong) {
      process.stderr.write(`vmdr: ${wrong} (see vmdr failback --help)\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    return run(argv, () =>
      withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort()).once('SIGTERM', () => stop.abort());
        let report: FailoverReport;
        try {
          report = await runFailover(
            { config, file, sites, state },
            {
              kind: 'failback',
              ...(argv.vm ? { vm: argv.vm } : {}),
              ...(argv.plan ? { plan: argv.plan } : {}),
              resume: argv.resume,
              ...(timeout ? { shutdownTimeoutMs: duration.parse(timeout) } : {}),
              signal: stop.signal,
              ...(argv.json ? {} : { onEvent: stepPrinter((line) => process.stdout.write(`${line}\n`)) }),
            },
          );
        } catch (err) {
          const partial = (err as { report?: FailoverReport }).report;
          if (partial) process.stdout.write(argv.json ? `${JSON.stringify(partial)}\n` : `${describeFailover(partial)}\n`);
          throw err;
        }
        if (argv.json) return printJson(report);
        process.stdout.write(`${describeFailover(report)}\n`);
      }),
    );
  },
};
