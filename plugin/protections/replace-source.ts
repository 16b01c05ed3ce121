/**
 * `vmdr protect NAME --replace-source`: the VM now under the source's name (a reinstalled server:
 * another UUID) becomes the protected one. The target is staged for it first, so a target that
 * cannot take it leaves the protection as it was; then the DR site records the new identity and,
 * in the same transaction, keeps every existing point for the old VM (state/sources.ts).
 */
import type { Config, Protection } from '../config/schema.js';
import type { ReceiverClient } from '../replication/sender/receiver-client.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { stageTargetOf } from '../targets/provision.js';

export async function replaceSource(
  ctx: { config: Config; file: string; sites: SiteConnections; state: StateStore },
  protection: Protection,
  receiver: ReceiverClient,
): Promise<{ target: string; vm: { name: string; uuid: string } } & Awaited<ReturnType<ReceiverClient['recordSource']>>> {
  // The operator means the VM under the name now, not a recorded VM renamed elsewhere.
  const vm = await (await ctx.sites.adapter(protection.source.site)).getVm(protection.source.vm);
  const target = await stageTargetOf(ctx.config, ctx.file, ctx.sites, protection, ctx.state);
  const recorded = await receiver.recordSource(protection.name, { uuid: vm.id, vm: vm.name }, true);
  return { target: target.vm, vm: { name: vm.name, uuid: vm.id }, ...recorded };
}
