/**
 * A consistency group's replication loop, in `vmdr serve` on the group's coordinating site: the
 * loop of continuous.ts (its back-off, its pauses, its fences, its lag and RPO per member) whose
 * cycle is the group's (group-cycle.ts), under the group's lock (group-lock.ts): a `vmdr sync
 * --group` asked meanwhile waits for the loop's cycle to end, and the loop's next waits for it.
 *
 * What pauses the loop is what pauses a member's own loop: a member failed over, its source
 * replaced or fenced for another copy, or paused by an operator. A failed-over member whose source
 * the failover stopped makes the cycle fail before any capture (GROUP_MEMBER_DOWN): the members'
 * DR sites are asked then whether they are failed over, so that too is a pause, not an RPO alert.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { ConsistencyGroup, Protection } from '../config/schema.js';
import { rebuildError } from '../sites/ndjson.js';
import { runLoop, type LoopOptions } from './continuous.js';
import { GroupCycleFailed } from './errors.js';
import { syncGroup, type GroupCycleResult, type GroupDeps } from './group-cycle.js';
import { holdGroupCycle } from './group-lock.js';

/** How a group's cycle ended: said once per cycle (the members' own reports follow). */
export type GroupCycleReport = { group: string; durationMs: number } & ({ result: GroupCycleResult; error?: undefined } | { result?: undefined; error: unknown });

export async function replicateGroupContinuously(
  group: ConsistencyGroup,
  members: Protection[],
  deps: GroupDeps,
  options: LoopOptions & { onGroupCycle?: (r: GroupCycleReport) => void },
): Promise<void> {
  await runLoop(
    {
      protections: members,
      group: group.name,
      cycle: async (signal) => {
        // As long as the other cycle takes: the loop has nothing else to do meanwhile.
        const held = await holdGroupCycle(deps.state, group.name, { timeoutMs: Number.MAX_SAFE_INTEGER, signal });
        const started = Date.now();
        try {
          const result = await syncGroup(group, members, deps, { signal });
          options.onGroupCycle?.({ group: group.name, durationMs: Date.now() - started, result });
          return result.members;
        } catch (error) {
          if (!signal.aborted) options.onGroupCycle?.({ group: group.name, durationMs: Date.now() - started, error });
          throw error;
        } finally {
          await held.release();
        }
      },
      causes: async (error) => {
        if (error instanceof GroupCycleFailed) {
          return members.flatMap((p) => {
            // Where only its code and words are known (a member shipped by another host), they are rebuilt.
            const said = error.members.find((m) => m.protection === p.name)?.error;
            const cause = error.causes.get(p.name) ?? (said && rebuildError(said, true));
            return cause ? [{ protection: p, error: cause }] : [];
          });
        }
        if (!(error instanceof VmdrError && error.code === 'GROUP_MEMBER_DOWN')) return [];
        // A failover stops (fences) its source: the member is down because it is failed over?
        const asked = await Promise.all(
          members.map((p) =>
            deps
              .receiverOf(p)
              .latestPoint(p.name)
              .then(
                () => [],
                (err: unknown) => (err instanceof VmdrError && err.code === 'PROTECTION_FAILED_OVER' ? [{ protection: p, error: err }] : []),
              ),
          ),
        );
        return asked.flat();
      },
      receiverOf: (p) => deps.receiverOf(p),
    },
    deps,
    options,
  );
}
