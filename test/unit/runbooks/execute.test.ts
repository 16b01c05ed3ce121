/**
 * The runbook executor against real processes, a real loopback HTTP server and a real state file:
 * what each step recorded in the failover's journal is what the report shows. The steps that boot
 * VMs are the lab suite's (test/lab/runbook.test.ts); here a runbook that names none of them runs
 * with actions that refuse to be called.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FailoverJournal, RUN } from '../../../plugin/failover/journal.js';
import { buildReport } from '../../../plugin/failover/report.js';
import { approveWaiting } from '../../../plugin/state/approvals.js';
import { insertFailover } from '../../../plugin/state/failovers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { executeRunbook, type RunbookActions } from '../../../plugin/runbooks/execute.js';
import type { VmFacts } from '../../../plugin/runbooks/facts.js';
import { parseRunbook } from '../../../plugin/runbooks/load.js';
import { describeFailover } from '../../../scripts/cli/failover-report.js';
import { rejectsWith } from '../../helpers/assertions.js';
import { startWebhookReceiver, type WebhookReceiver } from '../../helpers/webhook-receiver.js';

const WEB1: VmFacts = {
  protection: 'web1',
  group: 'web',
  sourceVm: 'web1',
  vm: 'web1-dr-drill-abc123',
  hostname: 'web1-dr',
  addresses: ['192.0.2.21/24'],
  macs: ['52:54:00:aa:00:01'],
  point: { id: 'p-0001', time: '2026-12-01T12:00:00.000Z' },
};

/** Only scripts run per VM ask for anything: the VMs of group web. */
const actions: RunbookActions = {
  startGroup: () => Promise.reject(new Error('no VM is started by this runbook')),
  waitHealth: () => Promise.reject(new Error('no VM is waited for by this runbook')),
  vmsOf: async (group) => (group === 'web' ? [WEB1] : []),
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie nobody reaped yet (its parent, the script, is gone) is dead too.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('runbook executor', function () {
  this.timeout(60_000);
  let dir: string;
  let state: StateStore;
  let run = 0;
  let hook: WebhookReceiver;

  const newRun = () => {
    const id = `fo-test-${++run}`;
    insertFailover(state.db, { id, kind: 'test', plan: 'p', request: '{}', startedAtMs: Date.now(), failureAtMs: Date.now() });
    return { id, journal: new FailoverJournal(state, id) };
  };
  const execute = (text: string, r: { id: string; journal: FailoverJournal }, signal?: AbortSignal) =>
    executeRunbook(parseRunbook(text, 'r.yaml'), { journal: r.journal, run: { id: r.id, kind: 'test', plan: 'p' }, actions, ...(signal ? { signal } : {}) });
  const script = async (name: string, body: string) => {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\n${body}\n`);
    await chmod(path, 0o755);
    return path;
  };
  const stepsOf = (r: { journal: FailoverJournal }) => r.journal.steps().map((s) => [s.protection, s.step, s.status]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-runbook-exec-'));
    state = StateStore.open(join(dir, 'state.db'));
    hook = await startWebhookReceiver('/drills');
  });
  after(async () => {
    await hook.close();
    state.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives a script the run's facts, and per VM its DR identity and point; its output goes to the report", async () => {
    const env = await script('env.sh', 'echo "run=$VMDR_RUN_ID kind=$VMDR_FAILOVER_KIND plan=$VMDR_PLAN"\necho "vm=$VMDR_VM host=$VMDR_HOSTNAME ips=$VMDR_IPS macs=$VMDR_MACS point=$VMDR_POINT extra=$EXTRA arg=$1"\necho warned >&2');
    const r = newRun();
    await execute(`steps:\n  - name: whole-run\n    script: { path: ${env} }\n  - name: per-vm\n    for: web\n    script: { path: ${env}, args: [one], env: { EXTRA: x } }\n`, r);
    const report = buildReport(state, r.id, [{ name: 'web', protections: [{ name: 'web1', targetVm: 'web1-dr', sourceVm: 'web1' }] }]);
    const whole = report.run.find((s) => s.step === 'runbook whole-run')!;
    assert.equal(whole.status, 'done');
    const wholeOut = whole.runbook as { exitCode: number; stdout: string; stderr: string };
    assert.equal(wholeOut.exitCode, 0);
    assert.equal(wholeOut.stdout.split('\n')[0], `run=${r.id} kind=test plan=p`);
    assert.equal(wholeOut.stderr, 'warned\n');
    const perVm = report.vms[0]!.steps.find((s) => s.step === 'runbook per-vm')!;
    assert.equal(
      (perVm.runbook as { stdout: string }).stdout.split('\n')[1],
      'vm=web1-dr-drill-abc123 host=web1-dr ips=192.0.2.21 macs=52:54:00:aa:00:01 point=p-0001 extra=x arg=one',
    );
    // As the CLI prints it: each runbook step with its exit and last line of output.
    const printed = describeFailover(report);
    assert.match(printed, /^ {2}runbook:\n {4}whole-run +done .* exit 0: vm= host= /m);
    assert.match(printed, /^ {6}runbook per-vm +done .*\n {8}exit 0: vm=web1-dr-drill-abc123 host=web1-dr/m);
  });

  it('stops at a script that exits non-zero, or goes on when its step says continue', async () => {
    const fail = await script('fail.sh', 'echo "checking..."\necho "web1 answered 503" >&2\nexit 3');
    const after = await script('after.sh', 'echo ran');
    const stop = newRun();
    const err = await rejectsWith(execute(`steps:\n  - name: check\n    script: { path: ${fail} }\n  - name: next\n    script: { path: ${after} }\n`, stop), 'FAILOVER_STEP_FAILED');
    assert.equal(err.message, `failover ${stop.id}: run: step "runbook check" failed: runbook step "check": ${fail} exited with status 3: web1 answered 503`);
    assert.deepEqual(stepsOf(stop), [[RUN, 'runbook check', 'failed']]);
    // The output of the failed script is kept beside its error.
    const failed = buildReport(state, stop.id, []).run[0]!;
    assert.deepEqual([(failed.runbook as { stdout: string }).stdout, failed.error?.code], ['checking...\n', 'RUNBOOK_STEP_FAILED']);

    const go = newRun();
    const text = `steps:\n  - name: check\n    script: { path: ${fail} }\n    onFailure: continue\n  - name: next\n    script: { path: ${after} }\n`;
    await execute(text, go);
    assert.deepEqual(stepsOf(go), [
      [RUN, 'runbook check', 'failed'],
      [RUN, 'runbook next', 'done'],
    ]);
    // Resumed, a step that failed and let the run go on is not run again.
    const before = go.journal.steps()[0]!.startedAtMs;
    await execute(text, go);
    assert.equal(go.journal.steps()[0]!.startedAtMs, before);
  });

  it('kills a script that hangs past its timeout, with its whole process group', async () => {
    const pidFile = join(dir, 'child.pid');
    const hang = await script('hang.sh', `sleep 300 &\necho $! > ${pidFile}\necho started\nwait`);
    const r = newRun();
    const started = Date.now();
    const err = await rejectsWith(execute(`steps:\n  - name: hang\n    script: { path: ${hang} }\n    timeout: 1s\n`, r), 'FAILOVER_STEP_FAILED');
    assert.equal((err.cause as { code: string }).code, 'RUNBOOK_STEP_TIMEOUT');
    assert.equal(err.message, `failover ${r.id}: run: step "runbook hang" failed: runbook step "hang" did not end within 1 s and was stopped`);
    assert.ok(Date.now() - started < 5_000, `stopped in ${Date.now() - started} ms`);
    const child = Number(await readFile(pidFile, 'utf8'));
    for (const deadline = Date.now() + 5_000; alive(child) && Date.now() < deadline; ) await sleep(50);
    assert.equal(alive(child), false, `the script's child ${child} is gone`);
    const hung = buildReport(state, r.id, []).run[0]!;
    assert.equal((hung.runbook as { stdout: string }).stdout, 'started\n');
  });

  it('calls an HTTP endpoint with its body template filled, and checks the status it answers', async () => {
    const r = newRun();
    hook.answers.push(201);
    const text = (expect: string, timeout = '5s') =>
      `steps:\n  - name: notify\n    http:\n      url: ${hook.url}\n      headers: { Content-Type: application/json }\n      body: '{"run": "\${run.id}", "kind": "\${run.kind}", "plan": "\${plan}"}'\n      ${expect}\n    timeout: ${timeout}\n`;
    await execute(text('expect: { status: 201 }'), r);
    const got = (await hook.waitFor(1))[0]!;
    assert.deepEqual([got.method, got.json], ['POST', { run: r.id, kind: 'test', plan: 'p' }]);
    assert.equal((buildReport(state, r.id, []).run[0]!.runbook as { status: number }).status, 201);

    hook.answers.push(500);
    const wrong = newRun();
    const err = await rejectsWith(execute(text('expect: { status: 201 }'), wrong), 'FAILOVER_STEP_FAILED');
    assert.match(err.message, /runbook step "notify": POST http:\/\/127\.0\.0\.1:\d+\/drills answered 500, expected 201$/);

    hook.answers.push(200);
    await execute(text(''), newRun()); // no expect: any 2xx

    hook.answers.push('hang');
    const slow = newRun();
    const started = Date.now();
    const timedOut = await rejectsWith(execute(text('', '1s'), slow), 'FAILOVER_STEP_FAILED');
    assert.equal((timedOut.cause as { code: string }).code, 'RUNBOOK_STEP_TIMEOUT');
    assert.ok(Date.now() - started < 4_000, `gave up in ${Date.now() - started} ms`);
  });

  it('waits at an approval until it is given, also when the run was killed while waiting and resumed', async () => {
    const counter = join(dir, 'count');
    const count = await script('count.sh', `echo x >> ${counter}`);
    const text = `steps:\n  - name: before\n    script: { path: ${count} }\n  - name: confirm-dns\n    approval: { message: switch DNS? }\n  - name: dns\n    script: { path: ${count} }\n`;
    const r = newRun();
    // The first process stops (its signal) while the step waits.
    const killed = new AbortController();
    const first = execute(text, r, killed.signal);
    for (const deadline = Date.now() + 5_000; !stepsOf(r).some((s) => s[1] === 'runbook confirm-dns'); ) {
      assert.ok(Date.now() < deadline, 'the approval step started');
      await sleep(20);
    }
    await sleep(700);
    assert.deepEqual(stepsOf(r).at(-1), [RUN, 'runbook confirm-dns', 'started']);
    killed.abort();
    await assert.rejects(first);
    // Resumed: waits again, the step before is not run again.
    const resumed = execute(text, r);
    await sleep(700);
    assert.equal((await readFile(counter, 'utf8')).trim().split('\n').length, 1);
    const other = StateStore.open(join(dir, 'state.db')); // `vmdr runbook resume` is another process
    try {
      assert.deepEqual(approveWaiting(other.db, r.id, 'alice').map((a) => a.step), ['confirm-dns']);
    } finally {
      other.close();
    }
    await resumed;
    assert.equal((await readFile(counter, 'utf8')).trim().split('\n').length, 2);
    assert.deepEqual(
      (buildReport(state, r.id, []).run.find((s) => s.step === 'runbook confirm-dns')!.runbook as { approvedBy: string }).approvedBy,
      'alice',
    );
    assert.deepEqual(approveWaiting(state.db, r.id, 'bob'), []);
  });

  it('runs a parallel block at once and fails it per its steps\' policies', async () => {
    const slow = await script('slow.sh', 'sleep 1');
    const fail = await script('fail2.sh', 'exit 1');
    const r = newRun();
    const started = Date.now();
    await execute(`steps:\n  - name: both\n    parallel:\n      - name: a\n        script: { path: ${slow} }\n      - name: b\n        script: { path: ${slow} }\n      - name: c\n        script: { path: ${fail} }\n        onFailure: continue\n`, r);
    assert.ok(Date.now() - started < 1_900, `two 1 s scripts side by side took ${Date.now() - started} ms`);
    const rolled = newRun();
    const err = await rejectsWith(
      execute(`steps:\n  - name: both\n    onFailure: continue\n    parallel:\n      - name: a\n        script: { path: ${fail} }\n        onFailure: rollback\n  - name: never\n    script: { path: ${slow} }\n`, rolled),
      'RUNBOOK_ROLLBACK',
    );
    assert.match(err.message, /^runbook step "a" failed, so the run is rolled back: runbook step "a": .*fail2\.sh exited with status 1$/);
    assert.ok(!stepsOf(rolled).some((s) => s[1] === 'runbook never'));
  });
});
