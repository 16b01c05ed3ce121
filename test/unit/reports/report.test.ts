/**
 * A run's signed report as a customer checks it (the built CLI, a real state file, a journal
 * written by the real FailoverJournal): the page and the JSON verify; one byte changed in either,
 * or in the screenshot they name, and `vmdr report verify` says which file and what; another
 * host's report fails with this host's key and verifies with that host's; what the customer's
 * guest printed is escaped on the page. And the runner stores a report for a run that failed,
 * without its result changing when the report cannot be written.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PNG } from 'pngjs';
import { loadConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import type { VmEvidence } from '../../../plugin/failover/evidence.js';
import { FailoverJournal, RUN } from '../../../plugin/failover/journal.js';
import { buildReport, type FailoverReport } from '../../../plugin/failover/report.js';
import { runFailover } from '../../../plugin/failover/runner.js';
import { ensureRunReportDir } from '../../../plugin/reports/paths.js';
import { writeRunReport, type ReportFiles } from '../../../plugin/reports/store.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { endFailover, insertFailover } from '../../../plugin/state/failovers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { artifactPath, launchChromium, newVisitor } from '../../helpers/browser.js';
import { runVmdr } from '../../helpers/lab.js';

const HOSTILE_CONSOLE = '</pre><script>alert("console")</script><img src=x onerror=alert(1)>';
const HOSTILE_VM = '<b onmouseover="alert(2)">web</b>';

/** A small PNG of one colour, as the drill's screenshot would be. */
function png(): Buffer {
  const image = new PNG({ width: 64, height: 48 });
  image.data.fill(0x5a);
  return PNG.sync.write(image);
}

async function site(dir: string, name: string): Promise<{ file: string; config: Config; state: StateStore }> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    `version: 1
state: { path: ${join(dir, name, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, name, 'replicas')} }
tenants:
  - { name: acme }
protections:
  - { name: web, tenant: acme, source: { site: src, vm: test }, target: { site: dr, vm: web-dr, nics: [{ network: default }] } }
  - { name: db, tenant: acme, source: { site: src, vm: test }, target: { site: dr, vm: db-dr, nics: [{ network: default }] } }
plans:
  - { name: shop, tenant: acme, rto: 10m, rpo: 1s, groups: [{ name: all, vms: [web, db] }] }
`,
  );
  const loaded = await loadConfig(file);
  return { file, config: loaded.config, state: StateStore.open(loaded.config.state.path) };
}

/** A drill of plan shop as the journal records it: web healthy with its evidence, db failing its health check. */
async function recordedDrill(config: Config, state: StateStore): Promise<FailoverReport> {
  const id = 'fo-20261201T100000-beef';
  const now = Date.now();
  insertFailover(state.db, { id, kind: 'test', plan: 'shop', request: JSON.stringify({ kind: 'test', plan: 'shop', protections: ['web', 'db'] }), startedAtMs: now, failureAtMs: now });
  const j = new FailoverJournal(state, id);
  await j.step(RUN, 'preflight', async () => ({}));
  await j.step(RUN, 'group all', async () => {
    await j.step('web', 'choose-point', async () => ({ id: 'rp-7', time: new Date(now - 40_000).toISOString(), checkpoint: 'vmdr-web-7', disks: [] }));
    await j.step('web', 'health', async () => ({ healthyAt: new Date(now + 5).toISOString(), guest: HOSTILE_CONSOLE, checks: [] }));
    await j.step('db', 'choose-point', async () => ({ id: 'rp-3', time: new Date(now - 500).toISOString(), checkpoint: 'vmdr-db-3', disks: [] }));
    await j.step('db', 'health', async () => {
      throw new Error('no "VMDR-GUEST ready" on the console within 90 s');
    });
  }).catch(() => undefined);
  endFailover(state.db, id, 'failed', { code: 'FAILOVER_STEP_FAILED', message: 'db: health failed' });
  const plan = config.plans[0]!;
  const report = buildReport(state, id, [{ name: 'all', protections: [{ name: 'web', targetVm: 'web-dr', sourceVm: 'test' }, { name: 'db', targetVm: 'db-dr', sourceVm: 'test' }] }], plan);
  // What the drill helper records as the VM's evidence (evidence.ts): the report carries it.
  const dir = await ensureRunReportDir(config, id);
  const shot = png();
  await writeFile(join(dir, 'web-screenshot.png'), shot, { mode: 0o600 });
  const evidence: VmEvidence = {
    identity: { hostname: 'web-drill', mac: '52:54:00:00:00:01', ip: '192.0.2.10/24', printed: HOSTILE_CONSOLE },
    checks: [
      { check: 'serial', passed: true, at: new Date(now + 5).toISOString() },
      { check: 'tcp 22', passed: false, at: new Date(now + 6).toISOString(), detail: 'refused' },
    ],
    point: { id: 'rp-7', time: new Date(now - 40_000).toISOString(), ageMs: 40_000 },
    console: ['Booting', HOSTILE_CONSOLE, 'VMDR-GUEST ready'],
    screenshot: { file: 'web-screenshot.png', sha256: createHash('sha256').update(shot).digest('hex'), width: 64, height: 48 },
    capturedAt: new Date(now + 7).toISOString(),
  };
  report.vms[0]!.evidence = evidence;
  report.vms[0]!.vm = HOSTILE_VM;
  return report;
}

describe('signed run reports (vmdr report)', function () {
  this.timeout(120_000);
  let dir: string;
  let here: Awaited<ReturnType<typeof site>>;
  let elsewhere: Awaited<ReturnType<typeof site>>;
  let report: FailoverReport;
  let files: ReportFiles;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', here.file]);
  /** Runs `check` with one byte of `file` changed, then puts the byte back. */
  const withByteFlipped = async (file: string, at: (bytes: Buffer) => number, check: () => Promise<void>) => {
    const original = await readFile(file);
    const changed = Buffer.from(original);
    const i = at(changed);
    changed[i] = changed[i]! ^ 0x01;
    await writeFile(file, changed);
    try {
      await check();
    } finally {
      await writeFile(file, original);
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-reports-'));
    here = await site(dir, 'here');
    elsewhere = await site(dir, 'elsewhere');
    report = await recordedDrill(here.config, here.state);
    files = await writeRunReport(here.config, report);
  });
  after(async () => {
    here?.state.close();
    elsewhere?.state.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports the plan\'s targets and whether the RTO and each VM\'s data-loss window met them', () => {
    assert.deepEqual(report.targets, { rtoMs: 600_000, rpoMs: 1_000 });
    assert.ok(report.rtoMs !== null && report.rtoMs < 600_000);
    assert.equal(report.rtoMet, true);
    assert.deepEqual(
      report.vms.map((v) => [v.protection, v.status, v.dataLossWindowMet]),
      [
        ['web', 'healthy', false],
        ['db', 'failed', true],
      ],
    );
  });

  it('stores report.json and report.html 0600 in a 0700 directory, and a key 0600 in keys/ 0700', async () => {
    for (const f of [files.json, files.html, join(dir, 'here', 'keys', 'report-signing.key')]) assert.equal((await stat(f)).mode & 0o777, 0o600, f);
    for (const d of [join(dir, 'here', 'reports', report.id), join(dir, 'here', 'keys')]) assert.equal((await stat(d)).mode & 0o777, 0o700, d);
    const shown = await vmdr('report', 'show', report.id);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(shown.stdout, `report.json: ${files.json}\nreport.html: ${files.html}\n`);
    assert.equal((await vmdr('report', 'show', report.id, '--html')).stdout, await readFile(files.html, 'utf8'));
    assert.equal((await vmdr('report', 'show', report.id, '--json')).stdout, await readFile(files.json, 'utf8'));
    assertOneLineError(await vmdr('report', 'show', 'fo-20000101T000000-0000'), /^vmdr: run fo-20000101T000000-0000 has no report: no such run in this state file$/);
  });

  it('verifies both files, unchanged, and prints the key that signed them', async () => {
    const key = await vmdr('report', 'key');
    assert.equal(key.code, 0, key.stderr);
    const fingerprint = /fingerprint (ed25519:[0-9a-f:]+)/.exec(key.stdout)![1]!;
    assert.match(key.stdout, /^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\nfingerprint ed25519:([0-9a-f]{4}:){7}[0-9a-f]{4} \(file \S+report-signing\.pub\)\n$/);
    for (const f of [files.json, files.html]) {
      const r = await vmdr('report', 'verify', f);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${f}: signed by ${fingerprint}, unchanged\n`);
    }
  });

  it('fails verify when one byte changes: in report.json, in report.html, in the screenshot', async () => {
    const json = await readFile(files.json, 'utf8');
    await withByteFlipped(files.json, () => Buffer.byteLength(json.slice(0, json.indexOf('"rp-7"') + 4)), async () => {
      assertOneLineError(await vmdr('report', 'verify', files.json), /^vmdr: report\.json: changed after it was signed by ed25519:\S+ \(its signature does not match its content\)$/);
    });
    await withByteFlipped(files.json, (b) => b.indexOf('\n  "') + 1, async () => {
      assertOneLineError(await vmdr('report', 'verify', files.json), /^vmdr: report\.json: not a vmdr report \(its JSON does not parse\)$/);
    });
    // Only spacing changed: the content and its signature hold, the bytes are not the ones vmdr wrote.
    await writeFile(files.json, json.replace('\n}\n', '\n}\n\n'));
    assertOneLineError(await vmdr('report', 'verify', files.json), /^vmdr: report\.json: its bytes differ from the form vmdr wrote \(spacing or order changed\)$/);
    await writeFile(files.json, json);
    const html = await readFile(files.html, 'utf8');
    await withByteFlipped(files.html, () => Buffer.byteLength(html.slice(0, html.indexOf('<h2>Timeline'))) + 5, async () => {
      assertOneLineError(await vmdr('report', 'verify', files.html), /^vmdr: report\.html: the page differs from the one vmdr made of the signed report it holds$/);
    });
    await withByteFlipped(files.html, () => Buffer.byteLength(html.slice(0, html.indexOf('"rp-3"') + 4)), async () => {
      assertOneLineError(await vmdr('report', 'verify', files.html), /^vmdr: report\.html: changed after it was signed/);
    });
    await withByteFlipped(files.html, () => Buffer.byteLength(html.slice(0, html.indexOf('base64,') + 60)), async () => {
      assertOneLineError(await vmdr('report', 'verify', files.html), /^vmdr: report\.html: the screenshot of VM 1 changed after it was signed/);
    });
    const shot = join(dir, 'here', 'reports', report.id, 'web-screenshot.png');
    await withByteFlipped(shot, (b) => b.length - 20, async () => {
      assertOneLineError(await vmdr('report', 'verify', files.json), /^vmdr: web-screenshot\.png: changed after it was signed \(its SHA-256 is not the one report\.json names\)$/);
    });
    // Everything put back: both verify again.
    for (const f of [files.json, files.html]) assert.equal((await vmdr('report', 'verify', f)).code, 0);
  });

  it("refuses another host's report with this host's key, and verifies it with that host's public key", async () => {
    const theirs = await writeRunReport(elsewhere.config, { ...report, id: 'fo-20261201T100000-cafe', vms: report.vms.map((v) => ({ ...v, evidence: null })) });
    const key = (await runVmdr(['report', 'key', '--json', '--config', elsewhere.file])).stdout;
    const { fingerprint, file } = JSON.parse(key) as { fingerprint: string; file: string };
    const mine = await vmdr('report', 'verify', theirs.html);
    assertOneLineError(mine, new RegExp(`^vmdr: report\\.html: signed by ${fingerprint}, not by ed25519:\\S+ \\(give the signer's public key with --key\\)$`));
    const copied = join(dir, 'their-key.pem');
    await writeFile(copied, await readFile(file));
    const withKey = await vmdr('report', 'verify', theirs.html, '--key', copied);
    assert.equal(withKey.code, 0, withKey.stderr);
    assert.equal(withKey.stdout, `${theirs.html}: signed by ${fingerprint}, unchanged\n`);
  });

  it('escapes what the customer\'s guest printed and the VM names: the page holds one script element, of JSON', async () => {
    const html = await readFile(files.html, 'utf8');
    assert.equal(html.match(/<script/g)?.length, 1);
    assert.ok(!html.includes('<img src=x'), 'no element from the console');
    assert.ok(!html.includes('<b onmouseover'), 'no element from the VM name');
    assert.ok(html.includes('&lt;/pre&gt;&lt;script&gt;alert(&quot;console&quot;)&lt;/script&gt;'));
    assert.ok(html.includes('<h2>VM &lt;b onmouseover=&quot;alert(2)&quot;&gt;web&lt;/b&gt;</h2>'));
    assert.ok(html.includes('\\u003c/pre>'.replace('>', '\\u003e')), 'the embedded JSON cannot close its script element');
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no external asset');
  });

  it("shows a person each VM's pass/fail, the evidence and its screenshot, and the hostile strings as text (Chromium)", async () => {
    const browser = await launchChromium();
    try {
      const page = await (await newVisitor(browser)).newPage();
      const dialogs: string[] = [];
      page.on('dialog', (d) => (dialogs.push(d.message()), void d.dismiss()));
      await page.goto(pathToFileURL(files.html).href);
      assert.match(await page.locator('#run').innerText(), /Tenant\s+acme\s+Status\s+failed/);
      const [web, db] = [page.locator('section.vm').nth(0), page.locator('section.vm').nth(1)];
      assert.match(await web.innerText(), /Status\s+healthy[\s\S]*Health check\s+PASS/);
      assert.match(await db.innerText(), /Status\s+failed[\s\S]*Health check\s+FAIL/);
      assert.equal(await page.getByRole('heading', { name: `VM ${HOSTILE_VM}` }).count(), 1, 'the VM name shown as the text it is');
      assert.equal(await web.locator('pre.console').innerText(), ['Booting', HOSTILE_CONSOLE, 'VMDR-GUEST ready'].join('\n'));
      assert.deepEqual(await web.locator('table.checks tbody tr').allInnerTexts().then((rows) => rows.map((r) => r.split('\t').slice(0, 2))), [
        ['serial', 'PASS'],
        ['tcp 22', 'FAIL'],
      ]);
      assert.equal(await web.locator('img.shot').evaluate((img: HTMLImageElement) => img.naturalWidth), 64, 'the screenshot is in the page');
      assert.equal(await page.locator('#timeline rect.step.failed').count(), 2, 'the failed health step and the group it stopped');
      assert.deepEqual(dialogs, [], 'nothing from the report ran');
      const shot = await artifactPath('report-page-evidence.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`      screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
  });

  it('the runner stores the report of a run that failed, and a report it cannot store does not change the run\'s result', async () => {
    const sites = new SiteConnections(here.config, here.file);
    try {
      const failed = await runFailover({ config: here.config, file: here.file, sites, state: here.state }, { kind: 'test', vm: 'web' }).then(
        () => assert.fail('a drill without a point must fail'),
        (err: { code: string; report: FailoverReport }) => err,
      );
      assert.equal(failed.code, 'NO_RECOVERY_POINT');
      assert.ok(failed.report.stored && 'html' in failed.report.stored, JSON.stringify(failed.report.stored));
      assert.equal((await vmdr('report', 'verify', failed.report.stored.html)).code, 0);

      // reports/ is a file: nothing can be stored there; the run fails as it did, saying why.
      const blocked = await site(dir, 'blocked');
      await mkdir(join(dir, 'blocked'), { recursive: true });
      await rm(join(dir, 'blocked', 'reports'), { recursive: true, force: true });
      await writeFile(join(dir, 'blocked', 'reports'), 'not a directory');
      const again = await runFailover({ config: blocked.config, file: blocked.file, sites, state: blocked.state }, { kind: 'test', vm: 'web' }).then(
        () => assert.fail('a drill without a point must fail'),
        (err: { code: string; report: FailoverReport }) => err,
      );
      blocked.state.close();
      assert.equal(again.code, 'NO_RECOVERY_POINT');
      assert.ok(again.report.stored && 'error' in again.report.stored, JSON.stringify(again.report.stored));
    } finally {
      await sites.close();
    }
  });
});
