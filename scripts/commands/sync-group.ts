/** `vmdr sync --group G`: one consistency group cycle, run in the CLI's own process. */
import { syncGroupAsAsked } from '../../plugin/replication/group-request.js';
import type { GroupCycleResult } from '../../plugin/replication/group-cycle.js';
import { describeGroupCycle, describeSync } from '../cli/cycles.js';
import { printJson } from '../cli/report.js';
import { progressReporter } from '../cli/progress.js';
import { withReplicationContext } from './replication-context.js';

export async function syncGroupHere(configFile: string, group: string, json: boolean): Promise<void> {
  await withReplicationContext(configFile, async (ctx) => {
    const progress = progressReporter({ json, label: group });
    let result: GroupCycleResult;
    try {
      result = await syncGroupAsAsked(ctx, group, { onProgress: progress.onProgress });
    } finally {
      progress.stop();
    }
    if (json) return printJson({ event: 'result', ...result });
    process.stdout.write(
      `${describeGroupCycle(result)}\n` +
        result.members.map((m) => `${describeSync(m)}\n`).join('') +
        result.warnings.map((w) => `group ${result.group}: warning: ${w}\n`).join(''),
    );
  });
}
