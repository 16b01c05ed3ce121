/** Block-status descriptors turned into the extents callers see: clipped to the asked range, merged. */

/** One block-status extent; flags are the context's: base:allocation bit0 HOLE, bit1 ZERO; qemu:dirty-bitmap bit0 DIRTY. */
export interface NbdExtent {
  offset: number;
  length: number;
  flags: number;
}

export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
export const STATE_DIRTY = 1 << 0;

/**
 * Appends the descriptors of one block-status chunk (pairs of u32 length, u32 flags, consecutive
 * from `offset`) to `into`, merging with the extent before when the flags are equal, and stopping at
 * `end`: a server may describe more than was asked. Returns where the described range ends.
 */
export function appendExtents(into: NbdExtent[], descriptors: Buffer, offset: number, end: number): number {
  let at = offset;
  for (let i = 0; i + 8 <= descriptors.length && at < end; i += 8) {
    const length = Math.min(descriptors.readUInt32BE(i), end - at);
    const flags = descriptors.readUInt32BE(i + 4);
    const last = into[into.length - 1];
    if (last && last.flags === flags && last.offset + last.length === at) last.length += length;
    else into.push({ offset: at, length, flags });
    at += length;
  }
  return at;
}
