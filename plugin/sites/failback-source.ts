/**
 * What a failback pass asks of a protection's source site: the block hashes of a disk of the
 * source VM, and a stream of the blocks that differ, written into that disk (plugin/failover/
 * source-disk.ts does both where the source is). On one host, or without `localSite`, it is done
 * here through the adapter; when this host is another site, through the source site's endpoint.
 */
import type { Config, Protection } from '../config/schema.js';
import { sourceDiskHashes, writeFailbackStream, type FailbackWritten } from '../failover/source-disk.js';
import { decodeDeltaStream } from '../replication/stream/decode.js';
import { RemoteFailbackSource } from './failback-client.js';
import { connectPeer } from './peer-connect.js';
import { isLocalSite, type SiteConnections } from './connections.js';

export interface FailbackSource {
  readonly remote: boolean;
  /** The hashes (SHA-256 per 64 KiB block) of the first `sizeBytes` of disk `disk` of p's source VM, which must be off. */
  hashes(p: Protection, disk: string, sizeBytes: number, signal?: AbortSignal): Promise<Buffer>;
  /** Writes one failback stream (one disk) into the source's image; resolves once it is flushed there. */
  write(p: Protection, disk: string, body: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<FailbackWritten>;
  close(): void;
}

export async function failbackSourceOf(ctx: { config: Config; file: string; sites: SiteConnections }, p: Protection): Promise<FailbackSource> {
  if (!isLocalSite(ctx.config, p.source.site)) {
    return new RemoteFailbackSource(await connectPeer(ctx.config, ctx.file, p.source.site));
  }
  const adapter = await ctx.sites.adapter(p.source.site);
  return {
    remote: false,
    hashes: (q, disk, sizeBytes, signal) => sourceDiskHashes(adapter, q, disk, sizeBytes, signal),
    write: async (q, disk, body) => writeFailbackStream(adapter, q, disk, await decodeDeltaStream(body)),
    close: () => undefined,
  };
}
