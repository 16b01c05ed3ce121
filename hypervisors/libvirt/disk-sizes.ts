/**
 * Virtual disk sizes as libvirt reads them from the image headers (`virsh domblkinfo --all`): the
 * binding has no block-info call, and vmdr needs the sizes to pre-stage replica images.
 */
import { virsh } from './virsh.js';

/** Capacity in bytes by guest target (vda, vdb …); targets libvirt cannot size are left out. */
export async function diskCapacities(uri: string, vm: { id: string; name: string }): Promise<Map<string, number>> {
  const out = await virsh(uri, ['domblkinfo', '--all', '--domain', vm.id], { operation: 'read disk sizes', vm: vm.name });
  // Columns: Target  Capacity  Allocation  Physical, with "-" where libvirt cannot tell (no medium).
  return new Map(
    out
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((cols) => cols.length >= 2 && /^\d+$/.test(cols[1]!))
      .map((cols) => [cols[0]!, Number(cols[1])]),
  );
}
