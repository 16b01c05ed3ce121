/**
 * Which replication loops a daemon runs: a consistency group's members none of their own, the group
 * one on its coordinating site (its first member's source site); and a reload that moves a
 * protection into a group ends the protection's loop before the group's starts.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { coordinatorSite } from '../../../plugin/config/consistency-groups.js';
import { parseConfig } from '../../../plugin/config/load.js';
import { loopUnits, ReplicationLoops, type LoopUnit } from '../../../plugin/replication/loops.js';

function config(groups: string): ReturnType<typeof parseConfig> {
  const protection = (p: string) => `  - name: ${p}\n    source: { site: prod, vm: ${p} }\n    target: { site: dr, vm: ${p}-dr, nics: [{ network: n }] }\n`;
  return parseConfig(
    `version: 1
sites:
  - { name: prod, uri: "test:///default" }
  - { name: dr, uri: "test:///default" }
protections:
${['db', 'web', 'cache'].map(protection).join('')}${groups}`,
    'vmdr.yaml',
  );
}

const keys = (units: LoopUnit[]) => units.map((u) => `${u.key}=${u.protections.map((p) => p.name).join('+')}`);

describe('replication loops and consistency groups', () => {
  const grouped = config('consistencyGroups:\n  - { name: app, protections: [web, db] }\n');
  const here = (site: string | undefined) => loopUnits(grouped, grouped.protections.filter((p) => !site || p.source.site === site), site);

  it("a group's members have no loop of their own; the group has one, on its first member's source site", () => {
    assert.equal(coordinatorSite(grouped.consistencyGroups[0]!, grouped.protections), 'prod');
    assert.deepEqual(keys(here('prod')), ['cache=cache', 'group:app=web+db']);
    assert.deepEqual(keys(here(undefined)), ['cache=cache', 'group:app=web+db'], 'a daemon of every site runs the group');
    assert.deepEqual(keys(here('dr')), [], 'not on a site that is not its coordinator');
  });

  it('a reload that moves a protection into a group ends its own loop before the group loop starts; a member change restarts the group loop', async () => {
    const log: string[] = [];
    const loops = new ReplicationLoops(
      async (u, signal) => {
        log.push(`start ${u.key}`);
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        // A cycle in flight takes a while to end.
        await sleep(30);
        log.push(`end ${u.key}`);
      },
      (u, err) => log.push(`failed ${u.key}: ${String(err)}`),
    );
    const solo = config('');
    assert.deepEqual(await loops.set(loopUnits(solo, solo.protections, 'prod')), { started: ['db', 'web', 'cache'], stopped: [], restarted: [] });
    const changes = await loops.set(here('prod'));
    assert.deepEqual(changes, { started: ['group:app'], stopped: ['db', 'web'], restarted: [] });
    assert.deepEqual(log.slice(3), ['end db', 'end web', 'start group:app'], 'both ends come before the start');
    const wider = config('consistencyGroups:\n  - { name: app, protections: [web, db], pauseTimeout: 5s }\n');
    assert.deepEqual(await loops.set(loopUnits(wider, wider.protections, 'prod')), { started: [], stopped: [], restarted: ['group:app'] });
    assert.deepEqual(log.slice(-2), ['end group:app', 'start group:app']);
    await loops.stopAll();
    assert.deepEqual(log.slice(-2).sort(), ['end cache', 'end group:app']);
  });
});
