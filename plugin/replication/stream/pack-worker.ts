/**
 * A pack worker's thread (started by pack-pool.ts): packs each frame's data it is sent and sends
 * the result back, the buffers moved, not copied, where they own their memory.
 */
import { parentPort } from 'node:worker_threads';
import { packData } from './pack.js';
import { movable, type PackJob, type PackReply } from './pack-pool.js';

parentPort!.on('message', (job: PackJob) => {
  let reply: PackReply;
  try {
    const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
    reply = { id: job.id, ...packData(data, job.level) };
  } catch (err) {
    reply = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(reply, 'payload' in reply ? movable(reply.payload) : []);
});
parentPort!.postMessage('ready');
