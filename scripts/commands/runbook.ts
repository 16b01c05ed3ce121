/**
 * `vmdr runbook run|check|resume`: a plan's failover driven by a runbook (or what it would do,
 * with --dry-run), a runbook file checked, and the approval a running runbook waits for given.
 */
import type { Argv, CommandModule } from 'yargs';
import { NotInConfig } from '../../plugin/config/errors.js';
import { loadConfig } from '../../plugin/config/load.js';
import { describeRunbook } from '../../plugin/runbooks/dry-run.js';
import { checkAgainstPlan, flatten, loadRunbook, runbookFile } from '../../plugin/runbooks/load.js';
import { EXIT_USAGE, printJson, run } from '../cli/report.js';
import { approveRun } from './approve.js';
import { runFailoverCommand } from './failover-run.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface RunArgs extends GlobalOptions {
  runbook: string;
  plan: string;
  test: boolean;
  planned: boolean;
  unplanned: boolean;
  'dry-run': boolean;
  resume: boolean;
}

interface CheckArgs extends GlobalOptions {
  file: string;
  plan?: string;
}

interface ResumeArgs extends GlobalOptions {
  run: string;
}

const runCommand: CommandModule<GlobalOptions, RunArgs> = {
  command: 'run <runbook>',
  describe: "Fail a plan over with a runbook's steps (a runbook file, or the name of one in the config)",
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('runbook', { type: 'string', demandOption: true, describe: 'A runbook file, or a name from `runbooks:` in the config' })
      .option('plan', { type: 'string', demandOption: true, describe: 'The plan whose groups the runbook starts' })
      .option('test', { type: 'boolean', default: false, describe: 'A drill: in a bubble network, torn down at the end' })
      .option('planned', { type: 'boolean', default: false, describe: 'Shut the sources down and ship a final delta first' })
      .option('unplanned', { type: 'boolean', default: false, describe: 'The sources are gone: boot the newest points' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'Print each step it would do, with the VMs, URLs and scripts; do nothing' })
      .option('resume', { type: 'boolean', default: false, describe: 'Continue the run that stopped half way, after its last finished step' }),
  handler: (argv) => {
    const kinds = (['test', 'planned', 'unplanned'] as const).filter((k) => argv[k]);
    if (kinds.length !== 1) {
      process.stderr.write('vmdr: say which failover: one of --test, --planned, --unplanned (see vmdr runbook run --help)\n');
      process.exitCode = EXIT_USAGE;
      return;
    }
    const kind = kinds[0]!;
    if (argv['dry-run']) return run(argv, () => dryRun(argv, kind));
    return run(argv, async () => {
      const { file, config } = await loadConfig(argv.config);
      const runbook = runbookFile(config, file, argv.runbook);
      await runFailoverCommand(argv, { kind, plan: argv.plan, runbook, resume: argv.resume });
    });
  },
};

async function dryRun(argv: RunArgs, kind: string): Promise<void> {
  const { file, config } = await loadConfig(argv.config);
  const plan = config.plans.find((p) => p.name === argv.plan);
  if (!plan) throw new NotInConfig('plan', argv.plan, file);
  const runbook = await loadRunbook(runbookFile(config, file, argv.runbook));
  checkAgainstPlan(runbook, plan);
  const lines = describeRunbook(runbook, { config, file, plan, kind });
  if (argv.json) return printJson({ runbook: runbook.file, plan: plan.name, kind, steps: lines.slice(1) });
  process.stdout.write(`${lines.join('\n')}\n`);
}

const checkCommand: CommandModule<GlobalOptions, CheckArgs> = {
  command: 'check <file>',
  describe: 'Check a runbook file (and, with --plan, that the groups it names are that plan\'s)',
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'The runbook file' })
      .option('plan', { type: 'string', describe: 'A plan of the config it must fit' }),
  handler: (argv) =>
    run(argv, async () => {
      const runbook = await loadRunbook(argv.file);
      if (argv.plan) {
        const { file, config } = await loadConfig(argv.config);
        const plan = config.plans.find((p) => p.name === argv.plan);
        if (!plan) throw new NotInConfig('plan', argv.plan, file);
        checkAgainstPlan(runbook, plan);
      }
      const steps = flatten(runbook.steps).length;
      if (argv.json) return printJson({ file: argv.file, valid: true, steps });
      process.stdout.write(`${argv.file}: valid: ${steps} step${steps === 1 ? '' : 's'}\n`);
    }),
};

const resumeCommand: CommandModule<GlobalOptions, ResumeArgs> = {
  command: 'resume <run>',
  describe: 'Approve the approval step a running runbook waits for',
  builder: (y: Argv<GlobalOptions>) => y.positional('run', { type: 'string', demandOption: true, describe: 'The run (failover) id, as the run printed it' }),
  handler: (argv) => approveRun(argv, argv.run),
};

export const runbookCommand: CommandBody<GlobalOptions> = {
  builder: (y) =>
    y
      .command(runCommand)
      .command(checkCommand)
      .command(resumeCommand)
      .demandCommand(1),
  handler: () => undefined,
};
