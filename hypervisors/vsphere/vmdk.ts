/**
 * A recovery point's disk in the form ESXi opens: a monolithic flat VMDK, i.e. a small text
 * descriptor (`<name>.vmdk`, createType "vmfs", one `RW <sectors> VMFS "<name>-flat.vmdk"`
 * extent) beside the raw bytes of the disk (`<name>-flat.vmdk`). It is the one disk format ESXi
 * runs from that can be made by writing plain files through the datastore's HTTP file API: the
 * sparse forms qemu-img writes (monolithicSparse, streamOptimized) are hosted or export formats
 * that ESXi only takes through an import (vmkfstools, an OVF/NFC lease), not as a VM's disk.
 * vmdr writes the descriptor itself (it is a few lines; qemu-img's vmdk writer has no "vmfs"
 * type) and produces the extent's bytes from the point's qcow2 chain with QEMU's tools.
 *
 * How the bytes are produced (measured, 1 GiB virtual, 256 MiB allocated, this 2-core machine):
 * `qemu-img convert -O raw` cannot write to a pipe ("Could not resize file"), so it would need a
 * temp file (up to the allocated size, beside the point) and the whole conversion before the
 * first byte is uploaded; `qemu-nbd` serving the chain read-only, read by `nbdcopy … -` into a
 * pipe, needs no temp space at all, overlaps reading with the upload, and was as fast or faster
 * (0.5-1.2 s against 0.3-1.9 s for convert plus reading the file back, noisy). The pipe is it:
 * the HTTP body pulls from nbdcopy's stdout, so a slow datastore slows nbdcopy (back-pressure),
 * and no more than a pipe's and a socket's buffers are ever in memory.
 *
 * What the simulator cannot prove, and real ESXi may need:
 * - the extent is the virtual size in full: unallocated ranges travel as zeros (a flat extent
 *   has no holes over HTTP), so the upload costs the virtual size, not the allocated size; a
 *   sparse path (an NFC import of streamOptimized, or VMFS thin provisioning by CopyVirtualDisk)
 *   would ship only data but is out of the simulator's reach;
 * - ESXi checks the descriptor: the extent must be exactly `sectors` × 512 bytes, the geometry
 *   is what it reports to BIOS-booted guests (IDE: 16 heads; SCSI: 255 heads, 63 sectors), and
 *   it rewrites CID, ddb.uuid and ddb.longContentID once a VM has opened the disk (so a kept
 *   descriptor is recognised by its extent line, never by its whole text);
 * - on vSAN and VVol datastores a disk is a storage object, not a file in the VM's folder: a flat
 *   extent written through /folder is not expected to open there (VMFS and NFS datastores only).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { ImageOperationFailed } from '../errors.js';
import { imageInfo } from '../qemu-img.js';
import { serveImageOverNbd } from '../qemu-nbd.js';

export const SECTOR_BYTES = 512;

/** The disk controller the descriptor names: ESXi derives the reported geometry from it. */
export type VmdkAdapterType = 'lsilogic' | 'buslogic' | 'ide' | 'pvscsi';

export interface VmdkDescriptorSpec {
  /** The flat extent's file name, relative to the descriptor (`web1-vda-flat.vmdk`). */
  extent: string;
  /** The disk's size; a size that is not whole sectors is rounded up (the tail reads as zeros). */
  sizeBytes: number;
  /** Default lsilogic, what ESXi's own tools write for a SCSI disk. */
  adapterType?: VmdkAdapterType;
  /**
   * The virtual hardware version the disk asks for; ESXi opens a disk whose version is not above
   * the VM's. Default 4, the lowest a VMFS disk has, which every ESXi VM accepts.
   */
  hwVersion?: number;
}

/** The flat extent's name for a descriptor's: `x.vmdk` → `x-flat.vmdk`, as ESXi names them. */
export function flatExtentName(descriptor: string): string {
  return descriptor.replace(/\.vmdk$/, '') + '-flat.vmdk';
}

export function extentSectors(sizeBytes: number): number {
  return Math.ceil(sizeBytes / SECTOR_BYTES);
}

export function vmdkDescriptor(spec: VmdkDescriptorSpec): string {
  if (!/^[^"/\n]+$/.test(spec.extent)) throw new TypeError(`extent name ${JSON.stringify(spec.extent)} must be a bare file name`);
  const sectors = extentSectors(spec.sizeBytes);
  const adapterType = spec.adapterType ?? 'lsilogic';
  const heads = adapterType === 'ide' ? 16 : 255;
  const track = 63;
  // Whole cylinders, as ESXi's own tools count them (40 GiB on SCSI: 5221); the rest is still addressable by LBA.
  const cylinders = Math.max(1, Math.floor(sectors / (heads * track)));
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    // A content id, any value: ESXi changes it whenever the disk is written.
    `CID=${randomBytes(4).toString('hex')}`,
    'parentCID=ffffffff',
    'createType="vmfs"',
    '',
    '# Extent description',
    `RW ${sectors} VMFS "${spec.extent}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    `ddb.adapterType = "${adapterType}"`,
    `ddb.geometry.cylinders = "${adapterType === 'ide' ? Math.min(cylinders, 16383) : cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    `ddb.geometry.sectors = "${track}"`,
    `ddb.virtualHWVersion = "${spec.hwVersion ?? 4}"`,
    '',
  ].join('\n');
}

export interface VmdkExtent {
  access: string;
  sectors: number;
  type: string;
  file: string;
}

/** What a descriptor says of its type and extents; undefined when it is no (whole) descriptor. */
export function parseVmdkDescriptor(text: string): { createType: string; extents: VmdkExtent[] } | undefined {
  if (!text.startsWith('# Disk DescriptorFile')) return undefined;
  const createType = /^createType="([^"]*)"\s*$/m.exec(text)?.[1];
  if (createType === undefined) return undefined;
  const extents: VmdkExtent[] = [];
  for (const m of text.matchAll(/^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]+)"(?:\s+\d+)?\s*$/gm)) {
    extents.push({ access: m[1]!, sectors: Number(m[2]), type: m[3]!, file: m[4]! });
  }
  return { createType, extents };
}

export interface FlatExtentSource {
  /** The extent's bytes in order, exactly `sizeBytes` of them; fails if the reader fails. */
  stream: Readable;
  sizeBytes: number;
  /** Ends the readers (nbdcopy, qemu-nbd). Safe twice; call it however the upload ended. */
  close(): Promise<void>;
}

/**
 * The flat extent of a point's disk, read from its qcow2 chain (the point image and its backing
 * files, opened read-only: never written) by a qemu-nbd export and nbdcopy into a pipe. A disk
 * larger than its image (it grew after the point) reads as zeros past the image's end.
 */
export async function readFlatExtent(image: string, sizeBytes: number): Promise<FlatExtentSource> {
  const info = await imageInfo(image, { format: 'qcow2' });
  const total = extentSectors(sizeBytes) * SECTOR_BYTES;
  if (info.virtualSize > total) {
    throw new ImageOperationFailed('read flat extent of', image, `the image is ${info.virtualSize} bytes, more than the disk's ${sizeBytes}`);
  }
  const server = await serveImageOverNbd(image, { format: 'qcow2', readOnly: true });
  // With its parent: a vmdr killed mid-upload leaves no reader behind (see qemu-nbd.ts).
  const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'nbdcopy', '--', `nbd+unix:///?socket=${server.listen.socket}`, '-'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      await server.stop();
    })());

  async function* bytes(): AsyncGenerator<Buffer> {
    let read = 0;
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
      read += chunk.length;
      yield chunk;
    }
    const outcome = await exited;
    if (outcome !== 0 || read !== info.virtualSize) {
      const last = stderr.trim().split('\n').pop()?.replace(/^nbdcopy: /, '');
      throw new ImageOperationFailed('read flat extent of', image, last || `nbdcopy ended (${outcome}) after ${read} of ${info.virtualSize} bytes`);
    }
    const zeros = Buffer.alloc(Math.min(1024 * 1024, total - read));
    for (let left = total - read; left > 0; left -= zeros.length) yield left >= zeros.length ? zeros : zeros.subarray(0, left);
  }

  const stream = Readable.from(bytes(), { objectMode: false, highWaterMark: 1024 * 1024 });
  stream.once('close', () => void close());
  return { stream, sizeBytes: total, close };
}
