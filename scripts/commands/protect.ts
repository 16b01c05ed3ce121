import type { Argv } from 'yargs';
import { findProtection } from '../../plugin/protections/find.js';
import { replaceSource } from '../../plugin/protections/replace-source.js';
import { checkSource } from '../../plugin/protections/source-identity.js';
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import type { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { syncProtection } from '../../plugin/replication/sync.js';
import { stageTargetOf } from '../../plugin/targets/provision.js';
import { printJson, run } from '../cli/report.js';
import { progressReporter } from '../cli/progress.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext, type ReplicationContext } from './replication-context.js';
import { describeSync } from '../cli/cycles.js';
import type { Protection } from '../../plugin/config/schema.js';

interface ProtectOptions extends GlobalOptions {
  vm: string;
  'replace-source': boolean;
}

export const protectCommand: CommandBody<ProtectOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    y.positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }).option('replace-source', {
      type: 'boolean',
      default: false,
      describe:
        "The VM now under the source's name (another UUID: a reinstalled server) becomes the protected one; the old VM's points stay, pinned, until `vmdr points NAME --release replaced`",
    }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async (ctx) => {
        const { file, config, sites } = ctx;
        const protection = findProtection(config, file, argv.vm);
        const receiver = await receiverFor(config, file, protection);
        try {
          if (argv['replace-source']) return await replaceSourceAndSync(ctx, protection, receiver, argv.json);
          const latest = await receiver.latestPoint(protection.name);
          // Records the source's identity, or refuses another VM under a recorded name, before the
          // target is staged after that VM or a byte of it ships.
          const { source, notes } = await checkSource(await sites.adapter(protection.source.site), protection, receiver);
          const staging = progressReporter({ json: argv.json, label: protection.name });
          const target = await stageTargetOf(config, file, sites, protection, ctx.state, { onProgress: staging.onProgress }).finally(() => staging.stop());
          if (latest) {
            const summary = { protection: protection.name, target: target.vm, action: 'already-protected', point: latest, source, notes };
            if (argv.json) return printJson({ event: 'result', ...summary });
            const said = notes.map((n) => `\n${protection.name}: ${n}`).join('');
            return void process.stdout.write(`${protection.name}: already protected; newest recovery point ${latest.id} (${latest.time.toISOString()})${said}\n`);
          }
          await firstSync(ctx, protection, receiver, argv.json, (result) => ({
            json: { target: target.vm, action: 'protected', ...result },
            text: `${protection.name}: target ${target.vm} ${target.action === 'staged-by-its-site' ? `on site ${protection.target.site} (staged there by \`vmdr target provision\`)` : target.action}; source VM ${source.vm} (UUID ${source.uuid})\n${describeSync(result)}`,
          }));
        } finally {
          receiver.close();
        }
      }),
    ),
};

/** Moves the protection onto the VM now under the source's name, then ships its first point. */
async function replaceSourceAndSync(ctx: ReplicationContext, protection: Protection, receiver: ReceiverClient, json: boolean): Promise<void> {
  const r = await replaceSource(ctx, protection, receiver);
  const was = r.outcome === 'replaced' ? `UUID ${r.previous?.uuid ?? '(none recorded)'}` : 'the same VM';
  const kept = r.kept.length
    ? `; the old VM's points ${r.kept.join(', ')} stay, pinned, until \`vmdr points ${protection.name} --release replaced\``
    : r.outcome === 'replaced' ? '; there were no points to keep' : ': nothing to replace';
  const said = `${protection.name}: source VM ${r.vm.name} is UUID ${r.vm.uuid} (was ${was})${kept}`;
  await firstSync(ctx, protection, receiver, json, (result) => ({
    json: { target: r.target, action: r.outcome === 'replaced' ? 'source-replaced' : 'unchanged', previous: r.previous, kept: r.kept, ...result },
    text: `${said}\n${describeSync(result)}`,
  }));
}

async function firstSync(
  ctx: ReplicationContext,
  protection: Protection,
  receiver: ReceiverClient,
  json: boolean,
  report: (result: Awaited<ReturnType<typeof syncProtection>>) => { json: Record<string, unknown>; text: string },
): Promise<void> {
  const progress = progressReporter({ json, label: protection.name });
  try {
    const result = await syncProtection(protection, { sites: ctx.sites, state: ctx.state, receiver }, { onProgress: progress.onProgress });
    progress.stop();
    const said = report(result);
    if (json) return printJson({ event: 'result', ...said.json });
    process.stdout.write(`${said.text}\n`);
  } finally {
    progress.stop();
  }
}
