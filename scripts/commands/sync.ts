import type { Argv } from 'yargs';
import type { ApiClient } from '../../plugin/api/client.js';
import type { OperationAcceptedBody } from '../../plugin/api/routes/operations.js';
import { handOffSync } from '../../plugin/control/client.js';
import type { SyncResult } from '../../plugin/replication/sync.js';
import type { SyncRequest } from '../../plugin/replication/sync-request.js';
import { describeSync } from '../cli/cycles.js';
import { EXIT_USAGE, printJson, run } from '../cli/report.js';
import { progressReporter } from '../cli/progress.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { serverOf, withServerOptions, type ServerOptions } from './server-options.js';

interface SyncOptions extends GlobalOptions, ServerOptions {
  vm?: string;
  group?: string;
  full: boolean;
  continuous: boolean;
  daemon: boolean;
  compression?: 'auto' | 'off';
}

/**
 * One sync goes to this host's `vmdr serve` when one runs for the same config (plugin/control/):
 * its connections are open and its threads warm, so this process only starts and asks. Otherwise,
 * and for --continuous, the sync runs here (sync-here.ts, loaded only then).
 */
export const syncCommand: CommandBody<SyncOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    withServerOptions(y)
      .positional('vm', { type: 'string', describe: 'Protection or source VM name' })
      .option('group', { type: 'string', describe: 'A consistency group: every member captured at one instant, then shipped (runs in this process)' })
      .option('full', { type: 'boolean', default: false, describe: 'Ship every byte, not only what changed' })
      .option('continuous', { type: 'boolean', default: false, describe: 'Keep syncing, cycle after cycle, until interrupted' })
      .option('compression', { choices: ['auto', 'off'] as const, describe: "zstd on what compresses (auto) or raw data (off); default: the protection's `compression`" })
      .option('daemon', { type: 'boolean', default: true, describe: 'Hand the sync to this host\'s `vmdr serve` for this config when one runs (--no-daemon: sync in this process)' }),
  handler: (argv) => {
    if ((argv.vm === undefined) === (argv.group === undefined)) {
      process.stderr.write('vmdr: name a protection or --group, one of the two (see vmdr sync --help)\n');
      process.exitCode = EXIT_USAGE;
      return;
    }
    return run(argv, async () => {
      if (argv.group !== undefined) {
        const { syncGroupHere } = await import('./sync-group.js');
        return syncGroupHere(argv.config, argv.group, argv.json);
      }
      const ask: SyncRequest = { vm: argv.vm!, full: argv.full, ...(argv.compression ? { compression: argv.compression } : {}) };
      const server = argv.continuous ? undefined : await serverOf(argv);
      if (server) return printSync(await syncThroughApi(server, ask, argv.json), argv.json);
      // A failpoint (the crash tests' VMDR_FAILPOINT) is armed in this process: the sync must run here to meet it.
      if (!argv.continuous && argv.daemon && process.env.VMDR_FAILPOINT === undefined) {
        const progress = progressReporter({ json: argv.json, label: argv.vm });
        let handed: SyncResult | undefined;
        try {
          handed = await handOffSync(argv.config, ask, { onProgress: progress.onProgress });
        } finally {
          progress.stop();
        }
        if (handed) return printSync(handed, argv.json);
      }
      const { syncHere } = await import('./sync-here.js');
      await syncHere(argv.config, ask, { json: argv.json, continuous: argv.continuous }, printSync);
    });
  },
};

/** The sync asked of the daemon's API: 202 and an operation, followed to its end with the same progress drawn. */
async function syncThroughApi(server: ApiClient, ask: SyncRequest, json: boolean): Promise<SyncResult> {
  const progress = progressReporter({ json, label: ask.vm });
  try {
    const { vm, ...options } = ask;
    const op = await server.post<OperationAcceptedBody>(`/api/v1/protections/${encodeURIComponent(vm)}/sync`, options);
    return await server.follow<SyncResult>(op.links.events, progress.onProgress);
  } finally {
    progress.stop();
    server.close();
  }
}

function printSync(result: SyncResult, json: boolean): void {
  if (json) return printJson({ event: 'result', ...result });
  process.stdout.write(`${describeSync(result)}\n`);
}
