/**
 * Serves one replica image over NBD (qemu-nbd on a private unix socket), so the receiver writes
 * into a pending overlay, and hashes or drills read a point, with the project's NBD client.
 */
import { serveImageOverNbd, type NbdImageServer } from '../../../hypervisors/qemu-nbd.js';

export type ServedImage = NbdImageServer;

export function serveImage(image: string, options: { readOnly?: boolean; format?: 'qcow2' | 'raw' } = {}): Promise<ServedImage> {
  // Writeback with an explicit flush before the commit; zeroes are written as the stream says.
  return serveImageOverNbd(image, { ...options, extraArgs: ['--cache=writeback', '--discard=unmap', '--detect-zeroes=off'] });
}
