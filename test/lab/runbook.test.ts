/**
 * A drill of the lab guest driven by a runbook, as an operator runs it: the plan's runbook boots
 * the group, a script step checks the drill VM's DR identity (what it gets in its environment),
 * an HTTP step tells a loopback endpoint, and an approval step holds the run. The run is killed
 * while it waits and continued with --resume: it waits again, is approved with
 * `vmdr runbook resume`, finishes, and the drill is torn down. The report lists every step with
 * the script's output.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { roleOf } from '../../plugin/state/roles.js';
import { StateStore } from '../../plugin/state/store.js';
import { runVmdr, spawnVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const MAC = `52:54:00:db:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('a drill driven by a runbook on the lab (qemu:///system)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let hook: WebhookReceiver;
  let drNetwork: string;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  /** The runs waiting for an approval, read from the state file as `vmdr runbook resume` does. */
  const waiting = () => {
    const state = StateStore.open(join(vm.dir, 'state.db'));
    try {
      return state.db.prepare('SELECT failover, step FROM runbook_approvals WHERE approved_at_ms IS NULL').all() as { failover: string; step: string }[];
    } finally {
      state.close();
    }
  };
  /** A script a runbook step runs: written, then made executable. */
  const writeScript = async (file: string, text: string) => {
    await writeFile(file, text);
    await chmod(file, 0o755);
  };
  const untilWaiting = async (ms: number) => {
    for (const deadline = Date.now() + ms; ; await sleep(250)) {
      const w = waiting();
      if (w.length) return w[0]!;
      assert.ok(Date.now() < deadline, `a run waits for its approval within ${ms / 1000} s`);
    }
  };

  before(async () => {
    ({ vm, drNetwork, config } = await createProtectedLabVm('runbook', {
      hostname: 'runbook-dr',
      nic: { mac: MAC, addresses: ['192.0.2.31/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] },
      more: (vm) => `plans:
  - name: site
    groups: [{ name: servers, vms: [${vm.name}] }]
    runbook: drill
  - name: site-rb
    groups: [{ name: servers, vms: [${vm.name}] }]
    runbook: rollback
runbooks:
  - { name: drill, file: ${join(vm.dir, 'drill.yaml')} }
  - { name: rollback, file: ${join(vm.dir, 'rollback.yaml')} }
`,
    }));
    hook = await startWebhookReceiver('/drills');
    const script = join(vm.dir, 'check-vm.sh');
    await writeScript(
      script,
      `#!/bin/sh
echo "vm=$VMDR_VM hostname=$VMDR_HOSTNAME ips=$VMDR_IPS macs=$VMDR_MACS"
echo "run=$VMDR_RUN_ID kind=$VMDR_FAILOVER_KIND plan=$VMDR_PLAN point=$VMDR_POINT"
virsh -c ${URI} domstate "$VMDR_VM"
`,
    );
    await writeFile(
      join(vm.dir, 'drill.yaml'),
      `steps:
  - name: boot
    start: servers
  - name: check-identity
    for: servers
    script: { path: ${script} }
    timeout: 30s
  - name: notify
    http:
      url: ${hook.url}
      body: '{"run": "\${run.id}", "kind": "\${run.kind}", "plan": "\${plan}"}'
      expect: { status: 204 }
    timeout: 10s
  - name: sign-off
    approval: { message: the drill VM is up; end the drill? }
  - name: healthy-still
    wait-health: servers
    timeout: 60s
`,
    );
    const fail = join(vm.dir, 'smoke-fails.sh');
    await writeScript(fail, '#!/bin/sh\necho "smoke test: $VMDR_VM did not answer" >&2\nexit 1\n');
    await writeFile(
      join(vm.dir, 'rollback.yaml'),
      `steps:
  - name: boot
    start: servers
  - name: smoke
    for: servers
    script: { path: ${fail} }
    onFailure: rollback
  - name: never
    http: { url: ${hook.url} }
`,
    );
    receiver = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
  });

  after(async () => {
    await receiver?.stop();
    await hook?.close();
    const leftovers = (await virsh('list', '--all', '--name')).split('\n').filter((n) => n.startsWith(`${vm.name}-dr`));
    await destroyProtectedLabVm(vm, drNetwork, leftovers);
  });

  it('runs the steps in the drill, waits for its approval across a kill and --resume, and reports each step with the script output', async () => {
    // `vmdr failover --plan --test` runs the plan's runbook.
    const first = spawnVmdr(['failover', '--plan', 'site', '--test', '--json', '--config', config]);
    const approval = await untilWaiting(180_000);
    assert.equal(approval.step, 'sign-off');
    const run = approval.failover;
    const drillVm = `${vm.name}-dr-drill-${run.slice(-6)}`;
    assert.equal(await virsh('domstate', drillVm), 'running');
    first.process.kill('SIGKILL');
    await first.done;

    const resumed = spawnVmdr(['runbook', 'run', 'drill', '--plan', 'site', '--test', '--resume', '--json', '--config', config]);
    await sleep(3_000);
    assert.deepEqual(waiting(), [{ failover: run, step: 'sign-off' }], 'the resumed run waits again');
    const approve = await vmdr('runbook', 'resume', run);
    assert.equal(approve.code, 0, approve.stderr);
    assert.match(approve.stdout, new RegExp(`^${run}: step "sign-off" approved by \\S+\\n$`));
    const end = await resumed.done;
    assert.equal(end.code, 0, end.stderr);
    const report = JSON.parse(end.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(report.id, run);
    assert.equal(report.status, 'succeeded');
    assert.deepEqual(
      report.run.filter((s) => s.step.startsWith('runbook ')).map((s) => `${s.step}:${s.status}`),
      ['runbook boot:done', 'runbook check-identity:done', 'runbook notify:done', 'runbook sign-off:done', 'runbook healthy-still:done'],
    );
    const check = report.vms[0]!.steps.find((s) => s.step === 'runbook check-identity')!;
    const output = (check.runbook as { stdout: string; exitCode: number });
    assert.equal(output.exitCode, 0);
    assert.equal(
      output.stdout,
      `vm=${drillVm} hostname=runbook-dr ips=192.0.2.31 macs=${MAC}\nrun=${run} kind=test plan=site point=${report.vms[0]!.point!.id}\nrunning\n\n`, // virsh ends with a blank line
    );
    // The endpoint was called once (the step was done before the kill), with the body filled.
    assert.equal(hook.requests.length, 1);
    assert.deepEqual(hook.requests[0]!.json, { run, kind: 'test', plan: 'site' });
    // The test's cleanup ran at the end: the drill VM is gone.
    await assert.rejects(virsh('domstate', drillVm));
    assert.deepEqual(waiting(), []);
  });

  it('rolls a real failover back when a step that says rollback fails: the target stops, the source runs, replication resumes', async () => {
    assert.equal(await virsh('domstate', vm.name), 'running');
    const requests = hook.requests.length;
    const r = await vmdr('failover', '--plan', 'site-rb', '--force');
    assert.equal(r.code, 1, r.stdout);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^vmdr: runbook step "smoke" failed, so the run is rolled back: .*smoke-fails\.sh exited with status 1: smoke test: \S+-dr did not answer$/);
    assert.equal(hook.requests.length, requests, 'the step after it never ran');
    const state = StateStore.open(join(vm.dir, 'state.db'));
    try {
      const runs = state.db.prepare('SELECT kind, status FROM failovers ORDER BY started_at_ms DESC LIMIT 2').all() as { kind: string; status: string }[];
      assert.deepEqual(runs, [
        { kind: 'revert', status: 'succeeded' },
        { kind: 'unplanned', status: 'failed' },
      ]);
      assert.equal(roleOf(state.db, vm.name).role, 'replicating');
    } finally {
      state.close();
    }
    assert.equal(await virsh('domstate', `${vm.name}-dr`), 'shut off');
    assert.equal(await virsh('domstate', vm.name), 'running');
  });
});
