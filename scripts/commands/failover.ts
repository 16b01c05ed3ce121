import type { Argv } from 'yargs';
import { duration } from '../../plugin/config/schema.js';
import { parsePointTime, POINT_TIME_EXPECTED } from '../../plugin/replication/point-time.js';
import { EXIT_USAGE } from '../cli/report.js';
import type { CommandBody } from './index.js';
import { withServerOptions, type ServerOptions } from './server-options.js';
import { approveRun } from './approve.js';
import { runFailoverCommand } from './failover-run.js';
import { shutdownTimeoutProblem, type GlobalOptions } from './options.js';

interface FailoverArgs extends GlobalOptions, ServerOptions {
  vm?: string;
  /** The protection named by option: any name, `approve` included. */
  protection?: string;
  /** `vmdr failover approve RUN`: the run whose approval is given. */
  run?: string;
  plan?: string;
  test: boolean;
  planned: boolean;
  revert: boolean;
  point?: string;
  at?: string;
  force: boolean;
  resume: boolean;
  'shutdown-timeout'?: string;
}

export const failoverCommand: CommandBody<FailoverArgs> = {
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y)
      .positional('vm', { type: 'string', describe: 'Protection or source VM name; or `approve RUN`: let a failover the watch prepared (policy confirm) go on' })
      .option('protection', { type: 'string', describe: 'Protection or source VM name, as an option: any name, `approve` included' })
      .positional('run', { type: 'string', describe: 'With approve: the run (failover) id, as `vmdr events` printed it' })
      .option('plan', { type: 'string', describe: 'Fail over a plan: its groups in order' })
      .option('test', { type: 'boolean', default: false, describe: 'A drill: boot in a bubble network, check health, remove it all' })
      .option('planned', { type: 'boolean', default: false, describe: 'Shut the source down and ship a final delta first: no data loss' })
      .option('revert', { type: 'boolean', default: false, describe: 'Undo a failover: the DR VM stops, its changes are discarded, replication resumes' })
      .option('point', { type: 'string', describe: 'Boot this recovery point (see vmdr points)' })
      .option('at', { type: 'string', nargs: 1, describe: 'Boot the newest recovery point at or before this time: ISO 8601 (2026-11-25T14:05:00Z) or back from now (-2h)' })
      .option('force', { type: 'boolean', default: false, describe: 'Unplanned while the source runs: power the source off (fence it) first' })
      .option('resume', { type: 'boolean', default: false, describe: 'Continue the failover that stopped half way' })
      .option('shutdown-timeout', { type: 'string', describe: 'Planned: how long the source may take to shut down (default 2m)' }),
  handler: (argv) => {
    // `approve` in first place always asks for an approval: a forgotten RUN never fails over a protection called approve.
    if (argv.vm === 'approve' && argv.run && !argv.protection) return approveRun(argv, argv.run);
    const wrong = argv.run ? `one VM at a time (or \`approve RUN\`), not also ${JSON.stringify(argv.run)}` : usageProblem(argv);
    if (wrong) {
      process.stderr.write(`vmdr: ${wrong} (see vmdr failover --help)\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    return runFailoverCommand(argv, {
      kind: argv.test ? 'test' : argv.planned ? 'planned' : argv.revert ? 'revert' : 'unplanned',
      ...(argv.vm || argv.protection ? { vm: (argv.vm ?? argv.protection)! } : {}),
      ...(argv.plan ? { plan: argv.plan } : {}),
      ...(argv.point ? { point: argv.point } : {}),
      ...(argv.at ? { at: parsePointTime(argv.at)! } : {}),
      force: argv.force,
      resume: argv.resume,
      ...(argv['shutdown-timeout'] ? { shutdownTimeoutMs: duration.parse(argv['shutdown-timeout']) } : {}),
    });
  },
};

/** What yargs cannot say about how the options combine; undefined when they make sense. */
function usageProblem(argv: FailoverArgs): string | undefined {
  if (argv.vm === 'approve' && !argv.protection) return 'approve needs the run: `vmdr failover approve RUN` (a protection called approve: `vmdr failover --protection approve`)';
  if ([argv.vm, argv.protection, argv.plan].filter(Boolean).length !== 1) return 'name a VM, a --protection or a --plan (one of them)';
  if ([argv.test, argv.planned, argv.revert].filter(Boolean).length > 1) return '--test, --planned and --revert exclude each other';
  if (argv.point && argv.at) return '--point and --at exclude each other';
  if (argv.at && !parsePointTime(argv.at)) return `--at ${JSON.stringify(argv.at)} is not ${POINT_TIME_EXPECTED}`;
  return shutdownTimeoutProblem(argv['shutdown-timeout']);
}

