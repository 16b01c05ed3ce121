/**
 * `vmdr failover approve RUN` (the built CLI, a real state file): gives the approval a run the
 * watch prepared waits for (the runbook approval rows), once; one line and exit 1 for a run that
 * waits for nothing. `approve` in first place always means an approval: without RUN it is a usage
 * error (exit 2), never a failover of a protection called approve, which `--protection approve` names.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { approvalOf, requestApproval } from '../../../plugin/state/approvals.js';
import { insertFailover } from '../../../plugin/state/failovers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('vmdr failover approve', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-failover-approve-'));
    file = join(dir, 'vmdr.yaml');
    await writeFile(
      file,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "qemu+ssh://src.invalid/system" }
  - { name: dr, uri: "qemu+ssh://dr.invalid/system" }
protections:
  - name: web
    source: { site: src, vm: web-vm }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
    watch: { policy: confirm }
  - name: approve
    source: { site: src, vm: approve-vm }
    target: { site: dr, vm: approve-dr, nics: [{ network: n }] }
`,
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('approves the waiting run once; then says it waits for nothing', async () => {
    const id = 'fo-20261201T170000-cd34';
    const state = StateStore.open(join(dir, 'state.db'));
    try {
      insertFailover(state.db, { id, kind: 'unplanned', plan: null, request: JSON.stringify({ kind: 'unplanned', protections: ['web'], watch: 'confirm', force: true }), startedAtMs: Date.now(), failureAtMs: Date.now() });
      requestApproval(state.db, id, 'approval', 'the watch saw the source of "web" down: fail it over');
    } finally {
      state.close();
    }
    const ok = await runVmdr(['failover', 'approve', id, '--config', file]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `${id}: step "approval" approved by ${userInfo().username}\n`);
    const after = StateStore.open(join(dir, 'state.db'));
    try {
      assert.equal(approvalOf(after.db, id, 'approval')!.approvedBy, userInfo().username);
    } finally {
      after.close();
    }
    for (const run of [id, 'fo-nope']) {
      const again = await runVmdr(['failover', 'approve', run, '--config', file]);
      assert.equal(again.code, 1);
      assertOneLineError(again, new RegExp(`^vmdr: run ${run} has no step waiting for an approval`));
    }
  });

  it('`vmdr failover approve` without RUN is a usage error; `--protection approve` fails over the protection called approve', async () => {
    const bare = await runVmdr(['failover', 'approve', '--config', file]);
    assert.equal(bare.code, 2);
    assert.equal(bare.stdout, '');
    assert.equal(
      bare.stderr,
      'vmdr: approve needs the run: `vmdr failover approve RUN` (a protection called approve: `vmdr failover --protection approve`) (see vmdr failover --help)\n',
    );
    // The protection called approve is failed over (its preflight stops it here: this config's DR site has no storage).
    const named = await runVmdr(['failover', '--protection', 'approve', '--config', file]);
    assertOneLineError(named, /^vmdr: .*site "dr" holds replicas but has no "storage" directory$/);
    assert.match(named.stdout, /^ {4}approve -> approve-dr: pending/m);
    for (const twice of [['approve', '--protection', 'approve'], ['web', '--plan', 'shop']]) {
      const both = await runVmdr(['failover', ...twice, '--config', file]);
      assert.equal(both.code, 2);
      assert.equal(both.stderr, 'vmdr: name a VM, a --protection or a --plan (one of them) (see vmdr failover --help)\n');
    }
  });
});
