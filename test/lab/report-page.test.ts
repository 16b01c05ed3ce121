/**
 * The HTML report of a real drill of the lab guest, as a customer sees it in a browser (Debian's
 * Chromium, headless): the run, the RTO against the plan's target, each VM with its pass/fail, and
 * a timeline; the page verifies as signed. A screenshot of the page is kept in test-artifacts/.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import type { SignedReport } from '../../plugin/reports/signed.js';
import { artifactPath, launchChromium, newVisitor } from '../helpers/browser.js';
import { runVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const MAC = `52:54:00:d8:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('the HTML report of a drill on the lab (qemu:///system, Chromium)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let drNetwork: string;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);

  before(async () => {
    ({ vm, drNetwork, config } = await createProtectedLabVm('report', {
      hostname: 'report-dr',
      nic: { mac: MAC, addresses: ['192.0.2.31/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] },
      more: (vm) => `plans:\n  - { name: shop, rto: 10m, rpo: 1h, groups: [{ name: all, vms: [${vm.name}] }] }\n`,
    }));
    receiver = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
  });

  after(async () => {
    await receiver?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it("a drill of the plan ends by saying where its page is; the page shows the run, the RTO against the target, each VM's pass/fail", async () => {
    const started = Date.now();
    const r = await vmdr('failover', '--plan', 'shop', '--test');
    console.log(`      drill: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.equal(r.code, 0, r.stderr);
    const html = /\nreport: (\/\S+\/report\.html)\n$/.exec(r.stdout)?.[1];
    assert.ok(html, `the last line says where the report is:\n${r.stdout}`);
    assert.match(r.stdout, /: succeeded in \d+\.\d s; RTO \d+\.\d s \(within the plan's rto of 600\.0 s\)\n/);
    assert.match(r.stdout, /data-loss window \d+\.\d s within the rpo\)/);
    const verified = await vmdr('report', 'verify', html);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /: signed by ed25519:\S+, unchanged\n$/);

    const doc = JSON.parse(await readFile(html.replace(/\.html$/, '.json'), 'utf8')) as SignedReport;
    const report = doc.report;
    assert.equal(report.status, 'succeeded');
    assert.equal(report.rtoMet, true);
    const browser = await launchChromium();
    try {
      const context = await newVisitor(browser);
      // A self-contained page: any request beyond the file itself is a failure of the page.
      const requests: string[] = [];
      context.on('request', (req) => requests.push(req.url()));
      const page = await context.newPage();
      await page.goto(pathToFileURL(html).href);
      assert.deepEqual(requests, [pathToFileURL(html).href]);
      assert.equal(await page.locator('h1').innerText(), `Drill (test failover) ${report.id}`);
      assert.match(await page.locator('#run').innerText(), /Status\s+succeeded/);
      const rto = page.locator('#objectives tbody tr').first();
      const rtoCells = await rto.locator('td').allInnerTexts();
      assert.equal(rtoCells[0], 'RTO (start to last VM healthy)');
      assert.equal(rtoCells[1], `${(report.rtoMs! / 1000).toFixed(1)} s`);
      assert.equal(rtoCells[2], '10 min 0 s');
      assert.equal(rtoCells[3], 'PASS');
      const lossCells = await page.locator('#objectives tbody tr').nth(1).locator('td').allInnerTexts();
      assert.equal(lossCells[0], `Data-loss window of ${report.vms[0]!.vm}`);
      assert.equal(lossCells[3], 'PASS', 'a point a few seconds old is within an hour');
      for (const v of report.vms) {
        assert.equal(await page.getByRole('heading', { name: `VM ${v.vm}` }).count(), 1);
        const facts = await page.locator('section.vm').first().innerText();
        assert.match(facts, /Status\s+healthy/);
        assert.match(facts, /Health check\s+PASS/);
        assert.ok(facts.includes(v.point!.id), facts);
      }
      const bars = await page.locator('#timeline svg rect.step').count();
      assert.equal(bars, report.run.length + report.vms.reduce((n, v) => n + v.steps.length, 0), 'a bar per step');
      const shot = await artifactPath('report-page-lab-drill.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`      screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
  });
});
