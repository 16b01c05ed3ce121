/**
 * One cycle of a consistency group at a time, across processes: `vmdr serve`'s group loop and
 * `vmdr sync --group` each hold the group's lock (a flock beside the state file) for the whole
 * cycle. Two cycles of one group at once would fight over their members' backup jobs (libvirt
 * runs one per VM, and a cycle's leftover sweep ends another's running job), and in one process
 * could each hold one member's source lock while waiting for the other's. The second cycle waits
 * for the first to end: the loop as long as it takes, the CLI up to `timeoutMs`.
 */
import { takeFileLock, type HeldLock } from '../config/lock.js';
import { StateUnavailable } from '../state/errors.js';
import type { StateStore } from '../state/store.js';
import { GroupCycleBusy } from './errors.js';

export function holdGroupCycle(state: Pick<StateStore, 'path'>, group: string, wait: { timeoutMs: number; signal?: AbortSignal }): Promise<HeldLock> {
  const lockFile = `${state.path}.group-${group}.lock`;
  return takeFileLock(lockFile, { ...wait, retryMs: 100 }, {
    cannotOpen: (err) => new StateUnavailable(state.path, `cannot open ${lockFile}, the lock of consistency group "${group}": ${err.code ?? err.message}`, err),
    cannotLock: (detail) => new StateUnavailable(state.path, `cannot lock ${lockFile}, the lock of consistency group "${group}" (${detail})`),
    busy: (holder) => new GroupCycleBusy(group, lockFile, holder, wait.timeoutMs),
  });
}
