/**
 * Names of the replica's files inside a disk directory; the only names recovery may ever delete.
 *
 * A disk's chain: a base, then one overlay per point that had the disk, without a gap. A disk the
 * VM lost and got back (at the same target name) begins a new chain on a base of its own, so a
 * merge into one chain's base never changes what the other chain's points read. The first chain
 * of a replica has the plain names (base.qcow2, point-N.qcow2: every replica made before chains
 * had numbers); a chain begun at point G names its files base.gG.qcow2 and point-N.gG.qcow2, so
 * the list of points alone says which chain each image is of, even once a merge has dropped every
 * point between two chains.
 */
import { readdir } from 'node:fs/promises';
import type { PointRow } from '../../state/points.js';

export const BASE_IMAGE = 'base.qcow2';
const POINT_FILE = /^point-(\d+)(?:\.g\d+)?\.qcow2$/;
/** The base of a chain begun after the first; deleted once no listed point is of that chain. */
const CHAIN_BASE = /^base\.g(\d+)\.qcow2$/;
/** The chain a replica-made name says; an overlay a failback adopted (failover-….qcow2) says none. */
const CHAIN_OF = /^(?:base|point-\d+)(?:\.g(\d+))?\.qcow2$/;
/** An overlay made ahead for the next point (ReplicaStore.prepareNext): never a point under this name. */
const NEXT_FILE = /^next-(\d+)\.qcow2$/;

/** The overlay of point `seq` in chain `chain` (0: the replica's first, plain names). */
export function pointFileName(seq: number, chain = 0): string {
  return chain === 0 ? `point-${seq}.qcow2` : `point-${seq}.g${chain}.qcow2`;
}

export function chainBase(chain: number): string {
  return chain === 0 ? BASE_IMAGE : `base.g${chain}.qcow2`;
}

export function isChainBase(name: string): boolean {
  return name === BASE_IMAGE || CHAIN_BASE.test(name);
}

/** The chain a file's name says, or undefined for a name the replica did not make. */
export function chainOfName(name: string): number | undefined {
  const m = CHAIN_OF.exec(name);
  return m ? Number(m[1] ?? 0) : undefined;
}

/**
 * Per point of `points` (in list order), the chain its image of `disk` is of; undefined where the
 * point has no such disk. An overlay a failback adopted (its name says no chain) was made on the
 * point under it, of the chain that point was of: the newest chain the list names that began at or
 * before its seq (a chain is an unbroken run of seqs, so no other chain can begin in between).
 */
export function chainsOf(points: readonly PointRow[], disk: string): (number | undefined)[] {
  const images = points.map((p) => p.disks.find((d) => d.disk === disk)?.image);
  const named = images.map((image) => (image === undefined ? undefined : chainOfName(image)));
  const known = named.filter((c): c is number => c !== undefined);
  return points.map((p, i) => {
    if (images[i] === undefined) return undefined;
    return named[i] ?? Math.max(0, ...known.filter((c) => c <= p.seq));
  });
}

export function nextFileName(seq: number): string {
  return `next-${seq}.qcow2`;
}

export function isPointFile(name: string): boolean {
  return POINT_FILE.test(name);
}

/** The bases of chains begun after the first (base.gG.qcow2) in a disk directory. */
export function chainBasesIn(dir: string): Promise<string[]> {
  return filesIn(dir, (name) => CHAIN_BASE.test(name));
}

/** Subdirectory names of `dir`, or none when it does not exist. */
export async function subdirectories(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function pointFilesIn(dir: string): Promise<string[]> {
  return filesIn(dir, (name) => POINT_FILE.test(name));
}

/** The overlays in a disk directory: committed or not (point-N.qcow2) and made ahead (next-N.qcow2). */
export function overlayFilesIn(dir: string): Promise<string[]> {
  return filesIn(dir, (name) => POINT_FILE.test(name) || NEXT_FILE.test(name));
}

async function filesIn(dir: string, wanted: (name: string) => boolean): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile() && wanted(e.name)).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
