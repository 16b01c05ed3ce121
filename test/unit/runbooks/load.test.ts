/**
 * Runbook files as `vmdr runbook check` and `vmdr config check` read them: each wrong step is one
 * error naming the file, the step (index and name) and the field.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../plugin/config/load.js';
import { RunbookInvalid } from '../../../plugin/runbooks/errors.js';
import { drillRunbookFile, loadRunbook, parseRunbook } from '../../../plugin/runbooks/load.js';
import { rejectsWith } from '../../helpers/assertions.js';

function refused(text: string, message: string): void {
  assert.throws(
    () => parseRunbook(text, 'runbooks/web.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof RunbookInvalid, String(err));
      assert.equal(err.code, 'RUNBOOK_INVALID');
      assert.equal(err.message, message);
      return true;
    },
  );
}

const steps = (...lines: string[]) => `steps:\n${lines.join('\n')}\n`;
const boot = '  - name: boot\n    start: web';

describe('runbook files', () => {
  it('reads every kind of step with its defaults', () => {
    const runbook = parseRunbook(
      steps(
        boot,
        '  - name: healthy\n    wait-health: web\n    timeout: 5m',
        '  - name: check\n    for: web\n    script: { path: /usr/local/bin/check, args: [-v] }\n    onFailure: continue',
        '  - name: notify\n    http: { url: "http://127.0.0.1:8080/x", body: \'{"run":"${run.id}","kind":"${run.kind}","plan":"${plan}"}\' }',
        '  - name: ok\n    approval: { message: go? }',
        '  - name: both\n    parallel:\n      - name: a\n        script: { path: /bin/true }\n      - name: b\n        http: { method: GET, url: "https://127.0.0.1/", expect: { status: 204 } }',
      ),
      'r.yaml',
    );
    assert.deepEqual(
      runbook.steps.map((s) => [s.kind, s.name, s.onFailure, s.timeout]),
      [
        ['start', 'boot', 'stop', undefined],
        ['wait-health', 'healthy', 'stop', 300_000],
        ['script', 'check', 'continue', undefined],
        ['http', 'notify', 'stop', undefined],
        ['approval', 'ok', 'stop', undefined],
        ['parallel', 'both', 'stop', undefined],
      ],
    );
    const script = runbook.steps[2]!;
    assert.ok(script.kind === 'script');
    assert.deepEqual(script.script, { path: '/usr/local/bin/check', args: ['-v'], env: {} });
    assert.equal(script.for, 'web');
    const http = runbook.steps[3]!;
    assert.ok(http.kind === 'http');
    assert.equal(http.http.method, 'POST');
    const parallel = runbook.steps[5]!;
    assert.ok(parallel.kind === 'parallel');
    assert.deepEqual(parallel.steps.map((s) => s.where), ['steps[5] "both": parallel[0] "a"', 'steps[5] "both": parallel[1] "b"']);
  });

  it('refuses a step of an unknown kind, naming the step and the kinds it knows', () => {
    refused(steps(boot, '  - name: nap\n    sleep: 10'), 'runbooks/web.yaml: steps[1] "nap": unknown step kind "sleep": expected one of start, wait-health, script, http, approval, parallel');
    refused(steps('  - name: nothing'), 'runbooks/web.yaml: steps[0] "nothing": no step kind: expected one of start, wait-health, script, http, approval, parallel');
    refused(steps('  - name: two\n    start: web\n    wait-health: web'), 'runbooks/web.yaml: steps[0] "two": one kind per step, not start and wait-health');
  });

  it('names the step and the field that is missing or wrong', () => {
    refused(steps(boot, boot.replace('boot', 'x'), '  - name: notify-dns\n    http: { method: POST }'), 'runbooks/web.yaml: steps[2] "notify-dns": field "url": missing');
    refused(steps(boot, boot.replace('boot', 'x'), '  - name: notify-dns\n    http: { url: "ftp://dns/" }'), 'runbooks/web.yaml: steps[2] "notify-dns": field "url": an http:// or https:// URL');
    refused(steps('  - script: { path: /bin/true }'), 'runbooks/web.yaml: steps[0]: field "name": missing');
    refused(steps('  - name: s\n    script: { path: check.sh }'), 'runbooks/web.yaml: steps[0] "s": field "path": an absolute path');
    refused(steps('  - name: s\n    script: { path: /bin/true }\n    timeout: soon'), 'runbooks/web.yaml: steps[0] "s": field "timeout": a duration such as 30s, 15m, 4h or 7d');
    refused(steps('  - name: s\n    script: { path: /bin/true }\n    onFailure: retry'), 'runbooks/web.yaml: steps[0] "s": field "onFailure": expected one of "stop", "continue", "rollback"');
    refused(steps('  - name: s\n    script: { path: /bin/true, shell: yes }'), 'runbooks/web.yaml: steps[0] "s": field "script": unknown field "shell"');
    refused(steps('  - name: p\n    parallel:\n      - name: q\n        approval: {}'), 'runbooks/web.yaml: steps[0] "p": parallel[0] "q": field "message": missing');
    refused(steps(boot, boot), 'runbooks/web.yaml: steps[1] "boot": field "name": "boot" is already the name of steps[0] "boot": each step has its own');
    refused('steps: []\n', 'runbooks/web.yaml: steps: at least one step');
  });

  it('refuses a body template with an unknown variable or an unclosed ${', () => {
    const http = (body: string) => steps(`  - name: notify\n    http: { url: "http://127.0.0.1/", body: '${body}' }`);
    refused(http('{"id": "${run.idd}"}'), 'runbooks/web.yaml: steps[0] "notify": field "body": unknown variable ${run.idd}: a template knows ${run.id}, ${run.kind}, ${plan}');
    refused(http('{"id": "${run.id'), 'runbooks/web.yaml: steps[0] "notify": field "body": "${" without its closing "}": a template knows ${run.id}, ${run.kind}, ${plan}');
  });

  it('says a runbook file is missing or not YAML', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'test-vmdr-runbook-'));
    try {
      const missing = await rejectsWith(loadRunbook(join(dir, 'none.yaml')), 'RUNBOOK_INVALID');
      assert.equal(missing.message, `${join(dir, 'none.yaml')}: no such file`);
      await writeFile(join(dir, 'bad.yaml'), 'steps: [\n');
      assert.match((await rejectsWith(loadRunbook(join(dir, 'bad.yaml')), 'RUNBOOK_INVALID')).message, /bad\.yaml: not valid YAML: /);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe('in the config', () => {
    let dir: string;
    const config = (runbooks: string, plan = '    runbook: web') => `version: 1
sites: [{ name: s, uri: "test:///default" }]
protections:
  - name: web1
    source: { site: s, vm: test }
    target: { site: s, vm: web1-dr, nics: [{ network: n }] }
plans:
  - name: p
    groups: [{ name: web, vms: [web1] }]
${plan}
runbooks:
${runbooks}
`;
    const check = async (text: string) => {
      await writeFile(join(dir, 'vmdr.yaml'), text);
      return loadConfig(join(dir, 'vmdr.yaml'));
    };
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'test-vmdr-runbook-config-'));
    });
    after(() => rm(dir, { recursive: true, force: true }));

    it('loads a plan\'s runbook with the config, and fails the config on a missing file or a bad step', async () => {
      await writeFile(join(dir, 'web.yaml'), steps(boot));
      const loaded = (await check(config(`  - { name: web, file: ${join(dir, 'web.yaml')} }`))).config;
      assert.deepEqual(loaded.runbooks, [{ name: 'web', file: join(dir, 'web.yaml') }]);
      assert.equal(loaded.plans[0]!.runbook, 'web');

      const missing = await rejectsWith(check(config(`  - { name: web, file: ${join(dir, 'gone.yaml')} }`)), 'RUNBOOK_INVALID');
      assert.equal(missing.message, `${join(dir, 'gone.yaml')}: no such file`);

      await writeFile(join(dir, 'other.yaml'), steps('  - name: boot-db\n    start: databases'));
      const wrongGroup = await rejectsWith(check(config(`  - { name: web, file: ${join(dir, 'other.yaml')} }`)), 'RUNBOOK_INVALID');
      assert.equal(wrongGroup.message, `${join(dir, 'other.yaml')}: steps[0] "boot-db": field "start": plan "p" has no group "databases" (its groups: web)`);
    });

    it("gives a drill its own runbook, else its plan's", async () => {
      await writeFile(join(dir, 'web.yaml'), steps(boot));
      await writeFile(join(dir, 'drill.yaml'), steps(boot, '  - name: ok\n    approval: { message: fine? }'));
      const refs = `  - { name: web, file: ${join(dir, 'web.yaml')} }\n  - { name: drill, file: ${join(dir, 'drill.yaml')} }`;
      const drills = `drills:\n  - { name: own, plan: p, schedule: "0 3 * * *", runbook: drill }\n  - { name: plans, plan: p, schedule: "0 4 * * *" }\n`;
      const file = join(dir, 'vmdr.yaml');
      const loaded = (await check(config(refs) + drills)).config;
      assert.deepEqual(loaded.drills.map((d) => drillRunbookFile(loaded, file, d)), [join(dir, 'drill.yaml'), join(dir, 'web.yaml')]);
    });

    it('refuses a plan naming a runbook the config does not have', async () => {
      const err = await rejectsWith(check(config('  []', '    runbook: nightly')), 'CONFIG_INVALID');
      assert.match(err.message, /plans\[0\]\.runbook: unknown runbook "nightly"$/);
    });
  });
});
