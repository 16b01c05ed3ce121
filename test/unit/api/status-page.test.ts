/**
 * The status page of `vmdr serve` in a real browser (Debian's headless Chromium) against the real
 * API over HTTPS on libvirt's test driver, with two tenants: what a person sees after typing a
 * token (protections, failovers and drills), that another tenant's protections and runs appear
 * nowhere on the page, that nothing from the API is ever taken as HTML, and the headers that keep
 * the page's script the only one that runs. The bandwidth limit in force is said in `vmdr status`'s
 * words: the dr link is limited in a window around now, odd-acme to 5 MB/s of its own, and
 * ops-spare (the operators', replicated onto src) has no limit.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { endFailover, insertFailover } from '../../../plugin/state/failovers.js';
import { setRole } from '../../../plugin/state/roles.js';
import { recordSyncEnd, recordSyncStart } from '../../../plugin/state/sync-runs.js';
import { apiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';
import { artifactPath, launchChromium, newVisitor } from '../../helpers/browser.js';
import { runVmdr } from '../../helpers/lab.js';

// A source VM name is free text in the config: markup in it must reach the page as text.
const MARKUP_VM = '<img src=x id=pwned>';
const MARKUP_ERROR = '<script>document.title="pwned"</script> source went away';
const pad = (n: number) => String(n).padStart(2, '0');
/** "HH:MM" on this host's clock (the browser's and the CLI's). */
const hhmm = (d: Date) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;

describe('status page (headless Chromium, test:///default, HTTPS)', function () {
  this.timeout(120_000);
  let t: TestApi;
  let browser: Browser;
  const visitors: BrowserContext[] = [];

  // The dr link's window: from an hour ago to an hour from now (past midnight near it: still one window).
  const now = new Date();
  now.setSeconds(0, 0);
  const windowEnd = new Date(now.getTime() + 3_600_000);
  /** What `vmdr status` says of a protection held by the dr link's window (its end named by weekday on another day). */
  const linkWindow = new RegExp(`^20 MB/s \\(link to dr\\) until (\\w{3} )?${hhmm(windowEnd)}, then unlimited$`);

  before(async () => {
    t = await startTestApi({
      dr: `, bandwidth: [{ limit: "20MB/s", from: "${hhmm(new Date(now.getTime() - 3_600_000))}", to: "${hhmm(windowEnd)}" }]`,
      moreProtections: `  - name: odd-acme
    tenant: acme
    bandwidth: 5MB/s
    source: { site: src, vm: "${MARKUP_VM}" }
    target: { site: dr, vm: odd-acme-dr, nics: [{ network: default }] }
  - name: ops-spare
    source: { site: src, vm: test }
    target: { site: src, vm: ops-spare-dr, nics: [{ network: default }] }
`,
    });
    // History the page shows, in the state file as vmdr writes it: a sync of web-acme that failed
    // (its message carries markup), and odd-acme failed over by a run onto a point.
    const run = recordSyncStart(t.state, { protection: 'web-acme', kind: 'incremental', checkpoint: 'vmdr-cp-1', since: 'vmdr-cp-0' });
    recordSyncEnd(t.state, run, { outcome: 'failed', error: { code: 'SOURCE_UNREACHABLE', message: MARKUP_ERROR } });
    setRole(t.state.db, 'odd-acme', 'failed-over', { failover: 'fo-test-1', point: 'pt-test-7' });
    // Failover runs as the runner records them: a drill of web-acme, the failover of odd-acme, and a failed drill of globex's.
    const runs = [
      { id: 'fo-drill-acme', kind: 'test', protection: 'web-acme', ago: 3_600_000, error: undefined },
      { id: 'fo-test-1', kind: 'unplanned', protection: 'odd-acme', ago: 600_000, error: undefined },
      { id: 'fo-drill-globex', kind: 'test', protection: 'db-globex', ago: 300_000, error: { code: 'HEALTH_CHECK_FAILED', message: 'no ready line within 60 s' } },
    ] as const;
    for (const r of runs) {
      insertFailover(t.state.db, { id: r.id, kind: r.kind, plan: null, request: JSON.stringify({ protections: [r.protection] }), startedAtMs: Date.now() - r.ago, failureAtMs: Date.now() - r.ago });
      endFailover(t.state.db, r.id, r.error ? 'failed' : 'succeeded', r.error);
    }
    browser = await launchChromium();
  });

  after(async () => {
    for (const v of visitors) await v.close();
    await browser?.close();
    await t?.close();
  });

  /** Opens the page as a new person, types the token, and waits for the protections table. */
  async function signIn(token: string): Promise<{ page: Page; visitor: BrowserContext; cspViolations: string[] }> {
    const visitor = await newVisitor(browser);
    visitors.push(visitor);
    const page = await visitor.newPage();
    const cspViolations: string[] = [];
    page.on('console', (m) => {
      if (/Content Security Policy|Trusted Type/i.test(m.text())) cspViolations.push(m.text());
    });
    await page.goto(`${t.api.url}/`);
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Show status' }).click();
    await page.locator('body[data-loaded="yes"] #protections tbody tr').first().waitFor({ timeout: 15_000 });
    return { page, visitor, cspViolations };
  }

  const rowOf = (page: Page, protection: string) => page.locator('#protections tbody tr', { has: page.locator('td.name', { hasText: protection }) });
  /** A row's Limit cell as one line (its second part, the next change, is a line of its own on the page). */
  const limitOf = async (page: Page, protection: string) => (await rowOf(page, protection).locator('td.limit').innerText()).replace(/\s*\n\s*/g, ' ');

  it('serves a page that holds no data, without a token, under a CSP that allows only its own script by hash', async () => {
    const root = await apiCall(t.api.url, t.ca, '/');
    assert.equal(root.status, 302);
    assert.equal(root.headers.location, '/status');
    const page = await apiCall(t.api.url, t.ca, '/status');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html; charset=utf-8/);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['referrer-policy'], 'no-referrer');
    const csp = String(page.headers['content-security-policy']);
    const script = /<script>([\s\S]*?)<\/script>/.exec(page.text)![1]!;
    const hash = createHash('sha256').update(script, 'utf8').digest('base64');
    assert.match(csp, /(^|; )default-src 'none'(;|$)/);
    assert.match(csp, new RegExp(`(^|; )script-src 'sha256-${hash.replace(/[+/]/g, '\\$&')}'(;|$)`), csp);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.match(csp, /connect-src 'self'/);
    for (const name of ['web-acme', 'db-globex', 'infra', 'ops-spare', 'acme', 'globex']) assert.ok(!page.text.includes(name), `the page itself names no ${name}`);
  });

  it("shows a tenant's token its own protections with tenant and role, and another tenant's nowhere", async () => {
    const { page, visitor, cspViolations } = await signIn(t.tokens.acmeRead);
    assert.equal(await page.locator('#scope').textContent(), 'Tenant: acme');
    assert.match((await page.locator('#token-name').textContent())!, /acme-portal \(read\)/);

    const web = rowOf(page, 'web-acme');
    assert.equal(await web.count(), 1);
    const cells = await web.locator('td').allInnerTexts();
    assert.equal(cells[1], 'acme', 'the tenant column');
    assert.match(cells[2]!, /replicating/, 'the role column');
    assert.match(cells[3]!, /RPO breached/, 'no recovery point yet: past its RPO, and marked so');
    assert.match(cells[3]!, /RPO 15 min/, 'the default RPO');
    assert.match(cells[4]!.replace(/\n/, ' '), linkWindow, 'the limit in force: the dr link\'s window, and when it closes');
    assert.match(cells[5]!, /none/, 'no recovery point yet');
    assert.match(cells[6]!, /running\s+src \/ test/, "the source VM's state");
    assert.match(cells[7]!, /missing\s+dr \/ web-acme-dr/, "the target VM's state");
    assert.match(cells[8]!, /failed\s+incremental, \d+ s ago/, 'the last sync and its outcome');
    assert.ok(cells[8]!.includes(`SOURCE_UNREACHABLE: ${MARKUP_ERROR}`), cells[8]);
    assert.equal(await web.getAttribute('class'), 'breach');

    const odd = await rowOf(page, 'odd-acme').locator('td').allInnerTexts();
    assert.match(odd[2]!, /failed over\s+run fo-test-1/);
    assert.match(odd[3]!, /paused: failed over/);
    assert.doesNotMatch(odd[3]!, /RPO breached/, 'a failed-over protection is not past its RPO: replication is paused on purpose');
    assert.equal(odd[4], '5 MB/s (protection)', 'its own limit, tighter than the link in the window and out of it: no change to name');
    assert.deepEqual(await page.locator('#failed-over tbody td').allInnerTexts(), ['odd-acme', 'acme', 'fo-test-1', 'pt-test-7']);
    const runs = await page.locator('#failover-runs tbody tr').allInnerTexts();
    assert.equal(runs.length, 2, runs.join('\n'));
    assert.match(runs[0]!, /^fo-test-1\s+unplanned failover\s+odd-acme\s+succeeded\s+10 min ago/);
    assert.match(runs[1]!, /^fo-drill-acme\s+drill \(test failover\)\s+web-acme\s+succeeded\s+60 min ago/);
    assert.match(await page.locator('#summary').innerText(), /2 protections\s+1 past RPO\s+1 failed over/);

    const text = await page.locator('body').innerText();
    const html = await page.content();
    for (const foreign of ['db-globex', 'globex', 'infra', 'ops-spare']) {
      assert.ok(!text.includes(foreign), `"${foreign}" is nowhere in the page's text`);
      assert.ok(!html.includes(foreign), `"${foreign}" is nowhere in the page's document`);
    }
    assert.deepEqual(await page.locator('#protections td.name').allInnerTexts(), ['web-acme', 'odd-acme']);

    // The token is kept in this tab's session storage only: not in the URL, not in a cookie.
    assert.ok(!page.url().includes(t.tokens.acmeRead) && !page.url().includes('?'), page.url());
    assert.deepEqual(await visitor.cookies(), []);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('vmdr-token')), t.tokens.acmeRead);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(cspViolations, []);

    const shot = await artifactPath('status-page-tenant.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`      screenshot: ${shot}`);
  });

  it('shows markup from the API (a VM name, an error message) as text, never as HTML', async () => {
    const { page, cspViolations } = await signIn(t.tokens.acmeRead);
    const odd = rowOf(page, 'odd-acme');
    assert.match((await odd.locator('td').nth(6).innerText()), new RegExp(`src / ${MARKUP_VM.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.equal(await page.locator('#pwned').count(), 0);
    assert.notEqual(await page.title(), 'pwned', 'the markup in the last sync error ran no script');
    assert.equal(await page.locator('td script').count(), 0);
    const sink = await page.evaluate(() => {
      try {
        document.body.insertAdjacentHTML('beforeend', '<b id="late">x</b>');
        return 'parsed';
      } catch (err) {
        return (err as Error).name;
      }
    });
    assert.equal(sink, 'TypeError', 'Trusted Types with no policy: the browser refuses any string as HTML on this page');
    assert.equal(await page.locator('img').count(), 0);
    assert.deepEqual(cspViolations, []);
  });

  it("shows an operator's token every tenant's protections, and a sync started meanwhile on its next refresh", async () => {
    const { page, cspViolations } = await signIn(t.tokens.operatorRead);
    assert.equal(await page.locator('#scope').textContent(), 'Operator: all tenants');
    assert.deepEqual(await page.locator('#protections td.name').allInnerTexts(), ['web-acme', 'db-globex', 'infra', 'odd-acme', 'ops-spare']);
    assert.equal(await rowOf(page, 'db-globex').locator('td').nth(1).innerText(), 'globex');
    assert.equal(await rowOf(page, 'infra').locator('td').nth(1).innerText(), "none (operators')");
    assert.match(await limitOf(page, 'db-globex'), linkWindow);
    assert.equal(await limitOf(page, 'ops-spare'), 'unlimited', 'no limit of its own, and its DR site (src) has no link limit');
    const runs = await page.locator('#failover-runs tbody tr').allInnerTexts();
    assert.deepEqual(runs.map((r) => r.split(/\s/)[0]), ['fo-drill-globex', 'fo-test-1', 'fo-drill-acme'], 'every run, newest first');
    assert.match(runs[0]!, /drill \(test failover\)\s+db-globex\s+failed\s+HEALTH_CHECK_FAILED: no ready line within 60 s/);

    const started = await apiCall(t.api.url, t.ca, '/api/v1/protections/db-globex/sync', { method: 'POST', token: t.tokens.globex, body: {} });
    assert.equal(started.status, 202, started.text);
    const op = page.locator('#operations tbody tr', { hasText: started.json.id });
    await op.waitFor({ timeout: 15_000 });
    assert.match(await op.innerText(), /sync\s+protection db-globex/);
    // The sync fails on the test driver (no backup jobs); the page says so on a later refresh.
    await page.locator('#operations tbody tr', { hasText: started.json.id }).filter({ hasText: 'failed' }).waitFor({ timeout: 15_000 });
    assert.deepEqual(cspViolations, []);

    const shot = await artifactPath('status-page-operator.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`      screenshot: ${shot}`);
  });

  it("says each protection's limit in force in the words of `vmdr status`'s LIMIT column", async () => {
    const { page } = await signIn(t.tokens.operatorRead);
    const cli = await runVmdr(['status', '--config', join(t.dir, 'vmdr.yaml')]);
    assert.equal(cli.code, 0, cli.stderr);
    for (const name of ['web-acme', 'db-globex', 'infra', 'odd-acme', 'ops-spare']) {
      const line = cli.stdout.split('\n').find((l) => l.startsWith(`${name} `)) ?? '';
      const words = await limitOf(page, name);
      assert.ok(new RegExp(`\\s${words.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s`).test(line), `${name}: the page says "${words}", the CLI:\n${line}`);
    }
  });

  it("keeps a tenant's page free of another tenant's operation", async () => {
    const { page } = await signIn(t.tokens.acmeRead);
    assert.ok(!(await page.locator('body').innerText()).includes('db-globex'));
    assert.equal(await page.locator('#operations').isHidden(), true);
    assert.match(await page.locator('#no-operations').innerText(), /No operation/);
  });

  it('refuses a wrong token on the page itself and keeps no trace of it', async () => {
    const visitor = await newVisitor(browser);
    visitors.push(visitor);
    const page = await visitor.newPage();
    await page.goto(`${t.api.url}/status`);
    await page.getByLabel('API token').fill('vmdr_nope_nope');
    await page.getByRole('button', { name: 'Show status' }).click();
    await page.locator('#login-error', { hasText: 'TOKEN_INVALID' }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('#dashboard').isHidden(), true);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('vmdr-token')), null);
  });
});
