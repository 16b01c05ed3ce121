/**
 * `vmdr drill run|history|show`: run a configured drill now (the test failover of its plan, with
 * its time limit, recorded in the drill history and told to the webhooks; exit 1 unless it
 * passed), list the history, show one run with its report. Here, or through a daemon's API with
 * --server.
 */
import type { Argv, CommandModule } from 'yargs';
import type { ApiClient } from '../../plugin/api/client.js';
import type { OperationAcceptedBody } from '../../plugin/api/routes/operations.js';
import type { DrillRunViewBody } from '../../plugin/drills/view.js';
import { NotInConfig } from '../../plugin/config/errors.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { DrillNotPassed } from '../../plugin/drills/errors.js';
import { VmdrError } from '../../hypervisors/errors.js';
import { describeFailover, stepPrinter } from '../cli/failover-report.js';
import { progressReporter } from '../cli/progress.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { serverOf, withServerOptions, type ServerOptions } from './server-options.js';
import { withReplicationContext } from './replication-context.js';
import { withState } from './state-context.js';

interface DrillAnswer {
  run: DrillRunViewBody;
  report: FailoverReport | null;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const describeRun = (r: DrillRunViewBody) =>
  `drill ${r.drill} (${r.id}, plan ${r.plan}${r.tenant ? `, tenant ${r.tenant}` : ''}, ${r.trigger}): ${r.status}` +
  (r.endedAt ? ` in ${seconds(Date.parse(r.endedAt) - Date.parse(r.startedAt))}` : '') +
  (r.reason ? `: ${r.reason.message}` : '');

interface RunOptions extends GlobalOptions, ServerOptions {
  name: string;
}

const runCommand: CommandModule<GlobalOptions, RunOptions> = {
  command: 'run <name>',
  describe: "Run a drill now: its plan's test failover in a bubble, checked, torn down; exit 1 unless it passed",
  builder: (y: Argv<GlobalOptions>) => withServerOptions(y).positional('name', { type: 'string', demandOption: true, describe: 'A drill of the config' }),
  handler: (argv) =>
    run(argv, async () => {
      const print = (a: DrillAnswer) => {
        if (argv.json) return printJson(a);
        if (a.report) process.stdout.write(`${describeFailover(a.report)}\n`);
        process.stdout.write(`${describeRun(a.run)}\n`);
      };
      const answer = await drillNow(argv);
      print(answer);
      if (answer.run.status !== 'passed') throw new DrillNotPassed(answer.run.drill, answer.run.id, answer.run.status, answer.run.reason);
    }),
};

/** The drill run here or by the daemon; a drill that did not pass is an answer too (its row and report). */
async function drillNow(argv: RunOptions): Promise<DrillAnswer> {
  const server = await serverOf(argv);
  if (server) return drillThroughApi(server, argv.name, argv.json);
  const { runDrill } = await import('../../plugin/drills/run.js');
  const { drillRunView } = await import('../../plugin/drills/view.js');
  const { Notifier } = await import('../../plugin/notifications/notifier.js');
  return withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
    const drill = config.drills.find((d) => d.name === argv.name);
    if (!drill) throw new NotInConfig('drill', argv.name, file);
    const stop = new AbortController();
    const end = () => stop.abort();
    process.once('SIGINT', end).once('SIGTERM', end);
    const notifier = new Notifier(config.notifications, {
      onWarning: (err) => process.stderr.write(argv.json ? `${JSON.stringify({ warning: err.toJSON() })}\n` : `vmdr: warning: ${err.message}\n`),
    });
    const progress = progressReporter({ json: argv.json, steps: argv.json });
    try {
      const outcome = await runDrill({ config, file, sites, state, notifier }, drill, 'manual', {
        signal: stop.signal,
        onProgress: progress.onProgress,
        ...(argv.json ? {} : { onEvent: stepPrinter((line) => process.stdout.write(`${line}\n`)) }),
      });
      return { run: drillRunView(outcome.run), report: outcome.report };
    } finally {
      progress.stop();
      // The webhooks are told before the command ends (a webhook that is down costs its retries, not the verdict).
      await notifier.idle();
    }
  });
}

async function drillThroughApi(server: ApiClient, name: string, json: boolean): Promise<DrillAnswer> {
  const progress = progressReporter({ json, steps: true });
  try {
    const op = await server.post<OperationAcceptedBody>(`/api/v1/drills/${encodeURIComponent(name)}/runs`, {});
    return await server.follow<DrillAnswer>(op.links.events, progress.onProgress);
  } catch (err) {
    // A drill that did not pass: its row (and report) ride with the error.
    const row = err instanceof VmdrError ? (err.subject.run as DrillRunViewBody | undefined) : undefined;
    if (row) return { run: row, report: (err as { report?: FailoverReport }).report ?? null };
    throw err;
  } finally {
    progress.stop();
    server.close();
  }
}

interface HistoryOptions extends GlobalOptions, ServerOptions {
  tenant?: string;
  limit: number;
}

const historyCommand: CommandModule<GlobalOptions, HistoryOptions> = {
  command: 'history',
  describe: 'The drill runs, newest first: passed, failed, skipped or interrupted, and why',
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y)
      .option('tenant', { type: 'string', describe: "Only this tenant's drills" })
      .option('limit', { type: 'number', default: 50, describe: 'At most this many runs' }),
  handler: (argv) =>
    run(argv, async () => {
      const runs = await history(argv);
      if (argv.json) return printJson(runs);
      if (runs.length === 0) return void process.stdout.write('no drill runs\n');
      printTable(
        ['ID', 'DRILL', 'PLAN', 'TENANT', 'TRIGGER', 'STATUS', 'STARTED', 'TOOK', 'REASON'],
        runs.map((r) => [
          r.id,
          r.drill,
          r.plan,
          r.tenant ?? '-',
          r.trigger,
          r.status,
          r.startedAt,
          r.endedAt ? seconds(Date.parse(r.endedAt) - Date.parse(r.startedAt)) : '-',
          r.reason?.message ?? '',
        ]),
      );
    }),
};

async function history(argv: HistoryOptions): Promise<DrillRunViewBody[]> {
  const server = await serverOf(argv);
  if (server) {
    try {
      const query = new URLSearchParams({ limit: String(argv.limit), ...(argv.tenant ? { tenant: argv.tenant } : {}) });
      return await server.get<DrillRunViewBody[]>(`/api/v1/drills/history?${query}`);
    } finally {
      server.close();
    }
  }
  const { listDrillRuns } = await import('../../plugin/state/drills.js');
  const { drillRunView } = await import('../../plugin/drills/view.js');
  return withState(argv.config, async (state) => listDrillRuns(state.db, { ...(argv.tenant ? { tenant: argv.tenant } : {}), limit: argv.limit }).map(drillRunView));
}

interface ShowOptions extends GlobalOptions, ServerOptions {
  id: string;
}

const showCommand: CommandModule<GlobalOptions, ShowOptions> = {
  command: 'show <id>',
  describe: "One drill run: its verdict and why, and its test failover's report",
  builder: (y: Argv<GlobalOptions>) => withServerOptions(y).positional('id', { type: 'string', demandOption: true, describe: 'A drill run id (see vmdr drill history)' }),
  handler: (argv) =>
    run(argv, async () => {
      const answer = await show(argv);
      if (argv.json) return printJson(answer);
      if (answer.report) process.stdout.write(`${describeFailover(answer.report)}\n`);
      process.stdout.write(`${describeRun(answer.run)}\n`);
    }),
};

async function show(argv: ShowOptions): Promise<DrillAnswer> {
  const server = await serverOf(argv);
  if (server) {
    try {
      return await server.get<DrillAnswer>(`/api/v1/drills/history/${encodeURIComponent(argv.id)}`);
    } finally {
      server.close();
    }
  }
  const { getDrillRun } = await import('../../plugin/state/drills.js');
  const { drillRunView } = await import('../../plugin/drills/view.js');
  const { storedReport } = await import('../../plugin/failover/runner.js');
  return withState(argv.config, async (state, { config }) => {
    const row = getDrillRun(state.db, argv.id);
    if (!row) throw new VmdrError('DRILL_RUN_UNKNOWN', `no drill run "${argv.id}" (see vmdr drill history)`, { subject: { drillRun: argv.id } });
    return { run: drillRunView(row), report: row.failover ? (storedReport({ config, state }, row.failover) ?? null) : null };
  });
}

export const drillCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(runCommand).command(historyCommand).command(showCommand).demandCommand(1),
  handler: () => undefined,
};
