/**
 * The DR site's client of the source site's failback routes (failback-routes.ts), over the one
 * transport every site-to-site request takes (PeerClient: mutual TLS, the source site pinned).
 */
import { Readable } from 'node:stream';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import type { FailbackWritten } from '../failover/source-disk.js';
import { HASH_BLOCK, HASH_BYTES } from '../replication/capture/block-hashes.js';
import { DELTA_STREAM_TYPE } from '../replication/stream/format.js';
import type { FailbackSource } from './failback-source.js';
import { MAX_ANSWER_BYTES, readAll, type PeerClient } from './peer-client.js';

export const failbackPath = (p: Protection, disk: string, what: 'hashes' | 'blocks') =>
  `/v1/protections/${encodeURIComponent(p.name)}/failback/disks/${encodeURIComponent(disk)}/${what}`;

export class RemoteFailbackSource implements FailbackSource {
  readonly remote = true;

  constructor(private readonly endpoint: PeerClient) {}

  async hashes(p: Protection, disk: string, sizeBytes: number, signal?: AbortSignal): Promise<Buffer> {
    // The source site reads the whole disk before the first hash: silence is expected for a while.
    const res = await this.endpoint.request('GET', failbackPath(p, disk, 'hashes'), { signal, idleTimeoutMs: 30 * 60_000 });
    const wanted = Math.ceil(sizeBytes / HASH_BLOCK) * HASH_BYTES;
    const announced = Number(res.headers['content-length']);
    // Its disk may be larger than the DR disk (only the DR disk's blocks are compared), never shorter.
    if (!Number.isSafeInteger(announced) || announced < wanted) {
      res.destroy();
      throw new VmdrError('FAILBACK_HASHES_INVALID', `site "${this.endpoint.site}" answered ${res.headers['content-length'] ?? 'no length'} bytes of hashes for disk ${disk} of "${p.source.vm}"; ${wanted} were expected`, {
        subject: { protection: p.name, disk, site: this.endpoint.site },
        userError: false,
      });
    }
    if (announced === wanted) return readAll(res, wanted);
    const parts: Buffer[] = [];
    let got = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      parts.push(chunk);
      got += chunk.length;
      if (got >= wanted) break;
    }
    res.destroy();
    return Buffer.concat(parts).subarray(0, wanted);
  }

  async write(p: Protection, disk: string, body: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<FailbackWritten> {
    const res = await this.endpoint.request('POST', failbackPath(p, disk, 'blocks'), {
      type: DELTA_STREAM_TYPE,
      body: Readable.from(body, { objectMode: false, highWaterMark: 16 * 1024 * 1024 }),
      signal,
    });
    const answer = JSON.parse((await readAll(res, MAX_ANSWER_BYTES)).toString('utf8')) as Partial<FailbackWritten>;
    if (answer.committed !== true || answer.disk !== disk || !Number.isSafeInteger(answer.bytesWritten)) {
      throw new VmdrError('FAILBACK_NOT_COMMITTED', `site "${this.endpoint.site}" did not say disk ${disk} of "${p.source.vm}" was written and flushed`, {
        subject: { protection: p.name, disk, site: this.endpoint.site },
        userError: false,
      });
    }
    return answer as FailbackWritten;
  }

  close(): void {
    this.endpoint.close();
  }
}
