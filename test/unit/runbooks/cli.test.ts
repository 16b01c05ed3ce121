/**
 * `vmdr runbook check|run --dry-run|resume` and `vmdr config check` as an operator runs them (the
 * built CLI): a dry run names every VM, URL and script without a reachable hypervisor, and every
 * problem is one line.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('vmdr runbook', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-cli-runbook-'));
    config = join(dir, 'vmdr.yaml');
    await writeFile(
      join(dir, 'drill.yaml'),
      `steps:
  - name: boot-web
    start: web
  - name: check-web
    for: web
    script: { path: /opt/checks/web.sh, args: [--deep, "two words"] }
    onFailure: rollback
  - name: confirm
    approval: { message: go on? }
  - name: tell
    parallel:
      - name: notify
        http: { url: "http://127.0.0.1:9/drills", body: '{"run": "\${run.id}", "plan": "\${plan}"}', expect: { status: 201 } }
        timeout: 10s
      - name: healthy
        wait-health: web
`,
    );
    // No hypervisor answers at this URI: a dry run must not need one.
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state', 'vmdr.db')} }
sites: [{ name: dr, uri: "qemu+ssh://nowhere.invalid/system", storage: ${join(dir, 'replicas')} }]
protections:
  - name: web1
    source: { site: dr, vm: web1 }
    target: { site: dr, vm: web1-dr, hostname: www1, nics: [{ network: n, mac: "52:54:00:aa:00:01", addresses: [192.0.2.21/24] }] }
plans:
  - name: p
    groups: [{ name: web, vms: [web1] }]
    runbook: drill
runbooks:
  - { name: drill, file: ${join(dir, 'drill.yaml')} }
`,
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('prints what a run would do, with its VMs, script, URL and approval, and does nothing', async () => {
    const result = await vmdr('runbook', 'run', 'drill', '--plan', 'p', '--test', '--dry-run');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      `runbook ${join(dir, 'drill.yaml')}: test failover of plan "p" (dry run: nothing is done)
1. start "boot-web" (on failure stop): boots group "web", each VM then health-checked:
     web1: web1-dr-drill-<run> (hostname www1, IPs 192.0.2.21/24, MACs 52:54:00:aa:00:01)
2. script "check-web" (timeout 10m, on failure rollback): runs /opt/checks/web.sh --deep "two words" once per VM of group "web":
     web1: web1-dr-drill-<run> (hostname www1, IPs 192.0.2.21/24, MACs 52:54:00:aa:00:01)
3. approval "confirm" (on failure stop): waits for \`vmdr runbook resume <run id>\`: "go on?"
4. parallel "tell" (on failure stop): runs at once:
   4.1. http "notify" (timeout 10s, on failure stop): POST http://127.0.0.1:9/drills with body "{\\"run\\": \\"<run id>\\", \\"plan\\": \\"p\\"}", expects 201
   4.2. wait-health "healthy" (on failure stop): waits until group "web" passes its health checks:
        web1-dr-drill-<run>
`,
    );
    const planned = await vmdr('runbook', 'run', join(dir, 'drill.yaml'), '--plan', 'p', '--planned', '--dry-run');
    assert.match(planned.stdout, /planned failover of plan "p"[^]*web1: web1-dr \(hostname www1/);
  });

  it('checks a runbook file, and says in one line what is wrong with one', async () => {
    const ok = await vmdr('runbook', 'check', join(dir, 'drill.yaml'));
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `${join(dir, 'drill.yaml')}: valid: 6 steps\n`);
    await writeFile(join(dir, 'bad.yaml'), 'steps:\n  - name: boot\n    start: web\n  - name: nap\n    sleep: 5\n');
    assertOneLineError(await vmdr('runbook', 'check', join(dir, 'bad.yaml')), /^vmdr: .*bad\.yaml: steps\[1\] "nap": unknown step kind "sleep": expected one of start, wait-health, script, http, approval, parallel$/);
    for (const example of ['acme-drill.yaml', 'acme-planned.yaml']) {
      const checked = await vmdr('runbook', 'check', join('templates', 'runbooks', example));
      assert.equal(checked.code, 0, `${example}: ${checked.stderr}`);
    }
  });

  it('fails `vmdr config check` on a runbook with a bad step, in that one line', async () => {
    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, 'steps:\n  - name: notify-dns\n    http: { url: "dns.example" }\n');
    const other = join(dir, 'other.yaml');
    await writeFile(other, (await readFile(config, 'utf8')).replace(join(dir, 'drill.yaml'), broken));
    assertOneLineError(await runVmdr(['config', 'check', other]), new RegExp(`^vmdr: ${broken}: steps\\[0\\] "notify-dns": field "url": an http:// or https:// URL$`));
  });

  it('refuses a run without its kind, and an approval for a run that waits for none', async () => {
    const usage = await vmdr('runbook', 'run', 'drill', '--plan', 'p');
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /one of --test, --planned, --unplanned/);
    assertOneLineError(await vmdr('runbook', 'resume', 'fo-20261201T000000-abcd'), /^vmdr: run fo-20261201T000000-abcd has no step waiting for an approval \(/);
  });
});
