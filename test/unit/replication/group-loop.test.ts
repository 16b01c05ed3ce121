/**
 * A consistency group's loop pauses as a member's own loop would (libvirt's test driver, a real
 * state file): a member failed over (the DR state here says so) pauses the group, said once for
 * that member and once for each other member (`group-member-paused`), no cycle and no failure
 * reported meanwhile, and the failed-over member's source fenced; an operator's pause of a member
 * the same; once both are lifted the loop cycles again (here its cycles fail: the test driver
 * tracks no changes, and the source is still fenced, so each member reports the failure).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CycleReport } from '../../../plugin/replication/continuous.js';
import { replicateGroupContinuously, type GroupCycleReport } from '../../../plugin/replication/group-loop.js';
import { pauseProtection, resumeProtection } from '../../../plugin/state/pauses.js';
import { setRole } from '../../../plugin/state/roles.js';
import { closeTestConfig, openTestConfig, testDomainRunning, testProtections, writeTestConfig } from '../../helpers/test-config.js';

describe('the group loop pauses for a member (test:///default)', function () {
  this.timeout(60_000);
  let dir: string | undefined;
  let opened: Awaited<ReturnType<typeof openTestConfig>> | undefined;

  // The loop fenced (and so shut off) `test`: lifted and started again while this file's connections still hold the driver's state.
  after(async () => {
    await testDomainRunning();
    await closeTestConfig(dir, opened ?? {});
  });

  it('a member failed over, then paused by an operator: said once per member, no cycle meanwhile; the loop cycles again once both are lifted', async () => {
    ({ dir } = await writeTestConfig('vmdr-group-loop', `protections:\n${testProtections(['db'], ['web'])}consistencyGroups:\n  - { name: app, protections: [db, web], onMemberDown: fail }\n`));
    opened = await openTestConfig(`${dir}/vmdr.yaml`);
    const { config, state, sites } = opened;
    const [db, web] = config.protections;
    setRole(state.db, 'db', 'failed-over', { failover: 'fo-test-1' });
    const reports: CycleReport[] = [];
    const groupCycles: GroupCycleReport[] = [];
    const stop = new AbortController();
    const loop = replicateGroupContinuously(
      config.consistencyGroups[0]!,
      [db!, web!],
      {
        config,
        file: `${dir}/vmdr.yaml`,
        sites,
        state,
        // The DR site is this host: the loop reads roles and pauses from its state, and asks no receiver here.
        receiverOf: () => {
          throw new Error('no receiver in this test');
        },
      },
      { signal: stop.signal, intervalMs: 0, onCycle: (c) => reports.push(c), onGroupCycle: (g) => groupCycles.push(g) },
    );
    try {
      const until = async (ok: () => boolean) => {
        for (const deadline = Date.now() + 20_000; !ok(); await sleep(20)) assert.ok(Date.now() < deadline, JSON.stringify(reports));
      };
      await until(() => reports.some((r) => r.fenced));
      const paused = () => reports.filter((r) => r.paused).map((r) => [r.protection, r.paused!.reason, r.group]);
      assert.deepEqual(paused(), [
        ['db', 'failed-over', 'app'],
        ['web', 'group-member-paused', 'app'],
      ]);
      assert.deepEqual(reports.find((r) => r.fenced)!.fenced!.failover, 'fo-test-1', "the failed-over member's source is fenced");
      // The role moves back, but an operator paused the other member: paused again, for that reason.
      pauseProtection(state.db, 'web', 'test-operator');
      setRole(state.db, 'db', 'replicating');
      await until(() => paused().length === 4);
      assert.deepEqual(paused().slice(2), [
        ['web', 'operator', 'app'],
        ['db', 'group-member-paused', 'app'],
      ]);
      assert.equal(groupCycles.length, 0, 'no cycle while paused');
      assert.ok(reports.every((r) => !r.error && !r.result), 'no cycle reported while paused');
      resumeProtection(state.db, 'web');
      await until(() => groupCycles.length > 0 && reports.filter((r) => r.error).length >= 2);
      assert.ok(groupCycles[0]!.error, 'the cycle ran (and failed here)');
      assert.deepEqual(reports.filter((r) => r.error).slice(0, 2).map((r) => [r.protection, r.group]), [['db', 'app'], ['web', 'app']]);
    } finally {
      // Stopped even when the test failed: a loop left running would fence `test` again and open connections after the file closed its own.
      stop.abort();
      await loop;
    }
  });
});
