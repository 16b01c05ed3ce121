/**
 * A drill's evidence on the real lab: the lab guest, protected onto a pre-staged target, drilled
 * with `vmdr failover --test`. What the report keeps of the drill VM is checked against what the
 * guest itself did: the identity it printed, its health check, the point's age, the lines it
 * printed on its console, and a screenshot of its display that is a real PNG (not one colour),
 * kept 0600 in the run's 0700 report directory with its SHA-256. A drill VM without a display
 * still passes: its screenshot is recorded as missing, and the CLI says why; one that fails its
 * health check has evidence too (the failed check, its console, its screen). The screenshot and
 * the evidence are kept in test-artifacts/ (drill-evidence-screen.png, drill-evidence.json).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PNG } from 'pngjs';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { describeFailover } from '../../scripts/cli/failover-report.js';
import { jsonLines, type ProgressEvent } from '../helpers/assertions.js';
import { artifactPath } from '../helpers/browser.js';
import { runVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const MAC = `52:54:00:e7:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
/** vmdr's default domain without its video device. */
const HEADLESS = `<domain type='qemu'><name>{{name}}</name><memory unit='MiB'>{{memoryMiB}}</memory><vcpu>{{vcpus}}</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features><on_poweroff>destroy</on_poweroff>
<devices><memballoon model='none'/></devices></domain>`;

describe('a drill keeps evidence of each VM (lab, qemu:///system)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let drNetwork: string;
  const p = () => vm.name;
  const vmdr = (file: string, ...args: string[]) => runVmdr([...args, '--config', file]);

  before(async () => {
    ({ vm, drNetwork, config } = await createProtectedLabVm('evidence', { hostname: 'evidence-dr', nic: { mac: MAC, addresses: ['192.0.2.31/24'] } }));
    receiver = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
  });

  after(async () => {
    await receiver?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it("records the guest's identity, its checks, the point's age, its console and a screenshot of its display", async () => {
    const r = await vmdr(config, 'failover', p(), '--test', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    const vmReport = report.vms[0]!;
    assert.equal(vmReport.status, 'healthy');
    const evidence = vmReport.evidence!;
    assert.ok(evidence, 'the drill has evidence of its VM');

    // The identity as the guest printed it, and as the config asked for it.
    assert.equal(evidence.identity?.hostname, 'evidence-dr');
    assert.equal(evidence.identity?.mac, MAC);
    assert.equal(evidence.identity?.ip, '192.0.2.31/24');
    assert.match(evidence.identity!.printed!, /hostname=evidence-dr .*marker=evidence-src .*mac-match=yes/);
    assert.deepEqual(evidence.identity?.expected, { hostname: 'evidence-dr', mac: MAC, ip: '192.0.2.31/24' });
    assert.equal(evidence.identity?.action, 'written');

    // Each check passed, at a time inside the run.
    assert.ok(evidence.checks.length >= 1);
    const [start, end] = [Date.parse(report.startedAt), Date.parse(report.endedAt!)];
    for (const c of evidence.checks) {
      assert.equal(c.passed, true, JSON.stringify(c));
      assert.ok(Date.parse(c.at) >= start && Date.parse(c.at) <= end, `${c.check} at ${c.at}, run ${report.startedAt}..${report.endedAt}`);
    }
    assert.ok(evidence.checks.some((c) => c.check === 'serial'));

    // The point booted, its age at boot: after the point was taken, within this suite's life.
    assert.equal(evidence.point?.id, vmReport.point?.id);
    assert.ok(evidence.point!.ageMs > 0 && evidence.point!.ageMs < 10 * 60_000, `point age ${evidence.point!.ageMs} ms`);

    // The console's last lines: what the guest really printed, without control characters.
    assert.ok(evidence.console.length >= 1 && evidence.console.length <= 40, `${evidence.console.length} lines`);
    assert.ok(
      evidence.console.some((line) => /^VMDR-GUEST ready hostname=evidence-dr .*marker=evidence-src/.test(line)),
      evidence.console.join('\n'),
    );
    for (const line of evidence.console) assert.doesNotMatch(line, /[\x00-\x08\x0a-\x1f\x7f]/);

    // The screenshot: a PNG that decodes, not one colour, 0600 in a 0700 directory, as hashed.
    const shot = evidence.screenshot as { file: string; sha256: string; width: number; height: number };
    assert.ok(shot && 'file' in shot, JSON.stringify(evidence.screenshot));
    const bytes = await readFile(shot.file);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), shot.sha256);
    const png = PNG.sync.read(bytes);
    assert.ok(png.width > 0 && png.height > 0);
    assert.deepEqual([png.width, png.height], [shot.width, shot.height]);
    const first = png.data.readUInt32BE(0);
    let colours = 1;
    for (let i = 4; i < png.data.length && colours < 2; i += 4) if (png.data.readUInt32BE(i) !== first) colours++;
    assert.equal(colours, 2, 'the screenshot is not all one colour');
    assert.equal((await stat(shot.file)).mode & 0o777, 0o600);
    assert.equal((await stat(dirname(shot.file))).mode & 0o777, 0o700);
    assert.equal(dirname(shot.file), join(vm.dir, 'reports', report.id));
    // Kept for a person to look at: the drill VM's screen, as the report has it.
    await copyFile(shot.file, await artifactPath('drill-evidence-screen.png'));
    await writeFile(await artifactPath('drill-evidence.json'), `${JSON.stringify(evidence, null, 2)}\n`);

    // The CLI's description of the run names the screenshot in one line of the VM.
    const text = describeFailover(report);
    assert.match(text, new RegExp(`\\n      evidence: screenshot ${shot.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(${shot.width}x${shot.height}\\); ${evidence.checks.length}/${evidence.checks.length} checks passed; \\d+ console lines, point [\\d.]+ s old at boot\\n`));
  });

  it('a drill VM without a display still passes; its screenshot is missing, and the CLI says why', async () => {
    const template = join(vm.dir, 'headless.xml');
    await writeFile(template, HEADLESS);
    const headless = join(vm.dir, 'headless.yaml');
    await writeFile(headless, (await readFile(config, 'utf8')).replace('      hostname: evidence-dr\n', `      hostname: evidence-dr\n      template: ${template}\n`));
    const r = await vmdr(headless, 'failover', p(), '--test');
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout.split('\n').find((l) => l.trim().startsWith('evidence:'));
    assert.match(line ?? '', /^ {6}evidence: no screenshot \(VM ".*-dr-drill-[\w-]{6}" on qemu:\/\/\/system has no display to take a screenshot of\); (\d+)\/\1 checks passed; \d+ console lines, point [\d.]+ s old at boot$/, r.stdout);
  });

  it('a drill VM that fails its health check: the evidence has the failed check, its console and its screen', async () => {
    const never = join(vm.dir, 'never-healthy.yaml');
    await writeFile(never, (await readFile(config, 'utf8')).replace('health: { serial: "^VMDR-GUEST ready", timeout: 90s }', 'health: { serial: "^NEVER PRINTED", timeout: 8s }'));
    const r = await vmdr(never, 'failover', p(), '--test', '--json');
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    const evidence = report.vms[0]!.evidence!;
    assert.equal(report.vms[0]!.status, 'failed');
    assert.equal(evidence.checks.length, 1);
    assert.equal(evidence.checks[0]!.passed, false);
    assert.match(evidence.checks[0]!.detail!, /failed its serial health check: no line matching \/\^NEVER PRINTED\/ .* within 8 s/);
    assert.ok(evidence.console.some((line) => /^VMDR-GUEST ready hostname=evidence-dr /.test(line)), evidence.console.join('\n'));
    assert.equal(evidence.identity?.printed, undefined, 'no health check saw the guest say who it is');
    assert.equal(evidence.identity?.hostname, 'evidence-dr', 'what vmdr gave it');
    const shot = evidence.screenshot as { file: string };
    assert.ok('file' in shot, JSON.stringify(shot));
    PNG.sync.read(await readFile(shot.file));
  });

  it('a drill killed after its evidence step resumes without taking it again; killed before it, the resumed drill takes it', async () => {
    for (const [failpoint, takenBefore] of [['failover-after-evidence', true], ['failover-before-evidence', false]] as const) {
      const killed = await runVmdr(['failover', p(), '--test', '--json', '--config', config], { VMDR_FAILPOINT: failpoint });
      assert.equal(killed.signal, 'SIGKILL', `${failpoint}: ${killed.stderr}`);
      const runs = await readdir(join(vm.dir, 'reports'));
      const before = new Map<string, { sha256: string; mtimeMs: number }>();
      for (const run of runs) {
        const file = join(vm.dir, 'reports', run, `screenshot-${p()}.png`);
        const bytes = await readFile(file).catch(() => undefined);
        if (bytes) before.set(file, { sha256: createHash('sha256').update(bytes).digest('hex'), mtimeMs: (await stat(file)).mtimeMs });
      }
      const r = await vmdr(config, 'failover', p(), '--resume', '--json');
      assert.equal(r.code, 0, `${failpoint}: ${r.stderr}`);
      const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
      assert.equal(report.kind, 'test');
      const evidence = report.vms[0]!.evidence!;
      const shot = evidence.screenshot as { file: string; sha256: string };
      assert.ok('file' in shot, `${failpoint}: ${JSON.stringify(shot)}`);
      const events = jsonLines<ProgressEvent>(r.stdout).filter((e) => e.phase === 'evidence' && e.done === 1);
      if (takenBefore) {
        assert.deepEqual(events.map((e) => e.detail), ['resumed'], failpoint);
        assert.deepEqual(before.get(shot.file), { sha256: shot.sha256, mtimeMs: (await stat(shot.file)).mtimeMs }, 'the screenshot of the first run, untouched');
      } else {
        assert.deepEqual(events.map((e) => e.detail), ['done'], failpoint);
        assert.equal(before.has(shot.file), false, 'no screenshot before the step');
        assert.ok(evidence.console.some((line) => /^VMDR-GUEST ready hostname=evidence-dr /.test(line)));
      }
      assert.equal(report.vms[0]!.status, 'healthy', failpoint);
      await assert.rejects(vm.adapter.getVm(`${vm.name}-dr-drill-${report.id.slice(-6)}`), 'the resumed drill removed its VM');
    }
  });
});
