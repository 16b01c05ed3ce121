/**
 * The approval a run waits for, given from this host (`vmdr runbook resume RUN`, `vmdr failover
 * approve RUN`): the waiting run, in another process, sees it on its next look.
 */
import { userInfo } from 'node:os';
import { getFailover } from '../../plugin/state/failovers.js';
import { approveWaiting } from '../../plugin/state/approvals.js';
import { NotWaitingForApproval } from '../../plugin/runbooks/errors.js';
import { printJson, run } from '../cli/report.js';
import type { GlobalOptions } from './options.js';
import { withState } from './state-context.js';

export function approveRun(argv: GlobalOptions, id: string): Promise<void> {
  return run(argv, () =>
    withState(argv.config, async (state) => {
      if (!getFailover(state.db, id)) throw new NotWaitingForApproval(id);
      const approved = approveWaiting(state.db, id, userInfo().username);
      if (approved.length === 0) throw new NotWaitingForApproval(id);
      if (argv.json) return printJson({ run: id, approved: approved.map((a) => ({ step: a.step, by: a.approvedBy })) });
      for (const a of approved) process.stdout.write(`${id}: step "${a.step}" approved by ${a.approvedBy}\n`);
    }),
  );
}
