/**
 * What `vmdr failover` and `vmdr failback` share once their options are read: run, print steps
 * as they happen (or nothing with --json), then the report; a run that stops prints its report
 * before the one line that says why.
 */
import type { FailoverReport } from '../../plugin/failover/report.js';
import { runFailover, type FailoverOptions } from '../../plugin/failover/runner.js';
import { describeFailover, stepPrinter } from '../cli/failover-report.js';
import { progressReporter } from '../cli/progress.js';
import { printJson, run } from '../cli/report.js';
import type { ApiClient } from '../../plugin/api/client.js';
import type { OperationAcceptedBody } from '../../plugin/api/routes/operations.js';
import type { GlobalOptions } from './options.js';
import { serverOf, type ServerOptions } from './server-options.js';
import { withReplicationContext } from './replication-context.js';

type RunOptions = Omit<FailoverOptions, 'signal' | 'onEvent' | 'onProgress'>;

export function runFailoverCommand(argv: GlobalOptions & ServerOptions, options: RunOptions): Promise<void> {
  const print = (report: FailoverReport) => (argv.json ? printJson(report) : process.stdout.write(`${describeFailover(report)}\n${reportLine(report)}`));
  return run(argv, async () => {
    // A runbook named on the command line runs here: the API takes a plan (and its own runbook).
    const server = options.runbook ? undefined : await serverOf(argv);
    if (server) return void print(await failoverThroughApi(server, options, argv.json, print));
    await withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
      const stop = new AbortController();
      const end = () => stop.abort();
      process.once('SIGINT', end).once('SIGTERM', end);
      let report: FailoverReport;
      // On a terminal the steps have their timed lines (stepPrinter); progress adds the copies' bars.
      const progress = progressReporter({ json: argv.json, steps: argv.json });
      try {
        report = await runFailover(
          { config, file, sites, state },
          {
            ...options,
            signal: stop.signal,
            onProgress: progress.onProgress,
            ...(argv.json ? {} : { onEvent: stepPrinter((line) => process.stdout.write(`${line}\n`)) }),
          },
        ).finally(() => progress.stop());
      } catch (err) {
        const partial = (err as { report?: FailoverReport }).report;
        if (partial) print(partial);
        throw err;
      }
      print(report);
    });
  });
}

/** Where the run's HTML report is (or why it is not): the last line of the run's output. */
function reportLine(report: FailoverReport): string {
  if (!report.stored) return '';
  return 'html' in report.stored ? `report: ${report.stored.html}\n` : `report not stored: ${report.stored.error.message}\n`;
}

/**
 * The run asked of the daemon's API: its steps drawn as they come, and its report (a run that
 * stops prints the report it got to before the one line that says why, as here).
 */
async function failoverThroughApi(server: ApiClient, o: RunOptions, json: boolean, print: (r: FailoverReport) => void): Promise<FailoverReport> {
  const progress = progressReporter({ json, steps: true });
  try {
    const op = await server.post<OperationAcceptedBody>('/api/v1/failovers', {
      kind: o.kind,
      ...(o.vm ? { protection: o.vm } : {}),
      ...(o.plan ? { plan: o.plan } : {}),
      ...(o.point ? { point: o.point } : {}),
      ...(o.at ? { at: o.at.toISOString() } : {}),
      ...(o.force ? { force: true } : {}),
      ...(o.resume ? { resume: true } : {}),
      ...(o.shutdownTimeoutMs !== undefined ? { shutdownTimeout: `${Math.ceil(o.shutdownTimeoutMs / 1000)}s` } : {}),
    });
    return await server.follow<FailoverReport>(op.links.events, progress.onProgress);
  } catch (err) {
    const partial = (err as { report?: FailoverReport }).report;
    progress.stop();
    if (partial) print(partial);
    throw err;
  } finally {
    progress.stop();
    server.close();
  }
}
