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
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

export function runFailoverCommand(argv: GlobalOptions, options: Omit<FailoverOptions, 'signal' | 'onEvent' | 'onProgress'>): Promise<void> {
  const print = (report: FailoverReport) => (argv.json ? printJson(report) : process.stdout.write(`${describeFailover(report)}\n`));
  return run(argv, () =>
    withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
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
    }),
  );
}
