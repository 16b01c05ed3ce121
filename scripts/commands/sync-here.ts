/** `vmdr sync` run in the CLI's own process: no daemon for this config, --no-daemon, or --continuous. */
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import { protectionAsAsked, syncAsAsked, type SyncRequest } from '../../plugin/replication/sync-request.js';
import type { SyncResult } from '../../plugin/replication/sync.js';
import { reportCycle, sayer } from '../cli/cycles.js';
import { progressReporter } from '../cli/progress.js';
import { withReplicationContext } from './replication-context.js';

export async function syncHere(configFile: string, ask: SyncRequest, how: { json: boolean; continuous: boolean }, print: (r: SyncResult, json: boolean) => void): Promise<void> {
  await withReplicationContext(configFile, async (ctx) => {
    if (!how.continuous) {
      const progress = progressReporter({ json: how.json, label: ask.vm });
      let result: SyncResult;
      try {
        result = await syncAsAsked(ctx, ask, { onProgress: progress.onProgress });
      } finally {
        progress.stop();
      }
      return print(result, how.json);
    }
    const protection = protectionAsAsked(ctx.config, ctx.file, ask);
    const receiver = await receiverFor(ctx.config, ctx.file, protection);
    const stop = new AbortController();
    const end = () => stop.abort();
    process.once('SIGINT', end).once('SIGTERM', end);
    try {
      // Loaded here, not with the command: one sync (the usual) needs no loop.
      const { replicateContinuously } = await import('../../plugin/replication/continuous.js');
      await replicateContinuously(protection, { sites: ctx.sites, state: ctx.state, receiver }, {
        signal: stop.signal,
        // Asked for on the command line: back to back, whatever the protection's schedule.
        intervalMs: 0,
        onCycle: (c) => reportCycle(sayer(how.json), protection, c),
      });
    } finally {
      receiver.close();
    }
  });
}
