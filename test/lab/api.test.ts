/**
 * The CLI driving a running `vmdr serve` through its HTTP API (`--server`), on the real lab: a sync
 * started by a tenant's token ships a real recovery point, and `vmdr points` and `vmdr status`
 * read it through the API with the same output as when they do the work themselves; another
 * tenant's token and a read-only token are refused in one line with a non-zero exit. The daemon's
 * status page, in headless Chromium, shows that point and its age to the tenant.
 */
import assert from 'node:assert/strict';
import { appendFile } from 'node:fs/promises';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { artifactPath, launchChromium, newVisitor } from '../helpers/browser.js';
import { bootLabVm, createLabVm, destroyLabVm, runVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

describe('vmdr --server: the CLI through the API of vmdr serve (qemu:///system)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  let config: string;
  let serve: ServeProcess;
  let server: Record<string, string>;
  const tokens: Record<string, string> = {};
  const vmdr = (args: string[], env: Record<string, string> = {}) => runVmdr([...args, '--config', config], env);
  const asTenant = (token: string, ...args: string[]) => vmdr(args, { ...server, VMDR_TOKEN: token });

  before(async () => {
    vm = await createLabVm('api', { marker: 'api-src', diskSize: '32M' });
    await bootLabVm(vm);
    config = await writeOneHostConfig(vm, labProtection(vm, { network: 'default', settings: ['tenant: acme'] }));
    await appendFile(config, `tenants:\n  - { name: acme }\n  - { name: globex }\napi: { listen: "127.0.0.1:${await freeLoopbackPort()}" }\n`);
    for (const [key, args] of Object.entries({
      acme: ['--tenant', 'acme', '--role', 'operate'],
      acmeRead: ['--tenant', 'acme', '--role', 'read'],
      globex: ['--tenant', 'globex', '--role', 'operate'],
    })) {
      const made = await vmdr(['token', 'create', '--name', key, ...args, '--json']);
      assert.equal(made.code, 0, made.stderr);
      tokens[key] = (JSON.parse(made.stdout) as { token: string }).token;
    }
    serve = await serveAndRun(config, [['protect', vm.name]]);
    const api = serve.events.find((e) => e.event === 'api')!;
    server = { VMDR_SERVER: api.url as string, VMDR_SERVER_FINGERPRINT: api.fingerprint as string };
  });

  after(async () => {
    await serve?.stop();
    await destroyLabVm(vm);
  });

  it('syncs through the API with a tenant token: a real point, listed by `vmdr points --server` as without it', async () => {
    const r = await asTenant(tokens.acme!, 'sync', vm.name, '--json');
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as { event: string; kind: string; point: { id: string } };
    assert.equal(result.event, 'result');
    assert.equal(result.kind, 'incremental');

    const through = await asTenant(tokens.acmeRead!, 'points', vm.name, '--json');
    assert.equal(through.code, 0, through.stderr);
    const local = await vmdr(['points', vm.name, '--json']);
    const strip = (text: string) => (JSON.parse(text) as { disks: { image?: string }[] }[]).map((p) => ({ ...p, disks: p.disks.map(({ image: _, ...d }) => d) }));
    assert.deepEqual(strip(through.stdout), strip(local.stdout), 'the same points, without the DR host\'s paths');
    assert.equal((JSON.parse(through.stdout) as { id: string }[]).at(-1)!.id, result.point.id);

    const text = await asTenant(tokens.acmeRead!, 'points', vm.name);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`${result.point.id} .* incremental`));
  });

  it('shows status through the API: the protection, its newest point', async () => {
    const r = await asTenant(tokens.acmeRead!, 'status', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { protection: string; tenant: string; lastPoint: { id: string } | null }[];
    assert.deepEqual(rows.map((x) => [x.protection, x.tenant]), [[vm.name, 'acme']]);
    assert.ok(rows[0]!.lastPoint);
    const theirs = await asTenant(tokens.globex!, 'status', '--json');
    assert.deepEqual(JSON.parse(theirs.stdout), [], "another tenant's token sees none of it");
  });

  it("shows the tenant the real point, its age and the sync's outcome on the daemon's status page (Chromium)", async () => {
    const browser = await launchChromium();
    try {
      const page = await (await newVisitor(browser)).newPage();
      await page.goto(`${server.VMDR_SERVER}/status`);
      await page.getByLabel('API token').fill(tokens.acmeRead!);
      await page.getByRole('button', { name: 'Show status' }).click();
      await page.locator('body[data-loaded="yes"] #protections tbody tr').first().waitFor({ timeout: 30_000 });
      assert.equal(await page.locator('#scope').textContent(), 'Tenant: acme');
      const cells = await page.locator('#protections tbody tr').first().locator('td').allInnerTexts();
      const points = JSON.parse((await asTenant(tokens.acmeRead!, 'points', vm.name, '--json')).stdout) as { id: string }[];
      assert.equal(cells[0], vm.name);
      assert.match(cells[2]!, /replicating/);
      assert.doesNotMatch(cells[3]!, /RPO breached/, 'a point just made is within the RPO');
      assert.equal(cells[4], 'unlimited', 'no bandwidth limit in this config: the limit in force, as `vmdr status` says it');
      assert.match(cells[5]!, /^\d+ (s|min) ago\n/, 'the newest point\'s age');
      assert.ok(cells[5]!.includes(points.at(-1)!.id), cells[5]);
      assert.match(cells[6]!, new RegExp(`running\\s+prod / ${vm.name}`));
      assert.match(cells[8]!, /committed\s+incremental, \d+ (s|min) ago/);
      const shot = await artifactPath('status-page-lab.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`      screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
  });

  it("refuses another tenant's token as for a protection that does not exist, and a read-only token, in one line", async () => {
    const theirs = await asTenant(tokens.globex!, 'sync', vm.name);
    assert.equal(theirs.code, 1);
    assert.equal(theirs.stderr.trim().split('\n').length, 1, theirs.stderr);
    assert.match(theirs.stderr, new RegExp(`no protection "${vm.name}"`));
    const nobodys = await asTenant(tokens.globex!, 'sync', 'no-such-vm');
    assert.equal(nobodys.stderr.replaceAll('no-such-vm', vm.name), theirs.stderr);

    const readOnly = await asTenant(tokens.acmeRead!, 'sync', vm.name);
    assert.equal(readOnly.code, 1);
    assert.match(readOnly.stderr, /^vmdr: token [0-9a-f]+ may only read: this needs a token of role "operate"\n$/);

    const none = await vmdr(['sync', vm.name], { VMDR_SERVER: server.VMDR_SERVER!, VMDR_SERVER_FINGERPRINT: server.VMDR_SERVER_FINGERPRINT! });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no token/);
  });

  it('runs a drill through the API (`vmdr failover --test --server`): the report, and the run listed for its tenant only', async () => {
    const r = await asTenant(tokens.acme!, 'failover', vm.name, '--test', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { id: string; kind: string; status: string; vms: { protection: string }[] };
    assert.equal(report.kind, 'test');
    assert.equal(report.status, 'succeeded');
    assert.deepEqual(report.vms.map((v) => v.protection), [vm.name]);

    const call = async (token: string, path: string) => {
      const { ApiClient } = await import('../../plugin/api/client.js');
      const client = new ApiClient({ url: server.VMDR_SERVER!, fingerprint: server.VMDR_SERVER_FINGERPRINT!, token });
      try {
        return await client.get<unknown>(path);
      } catch (err) {
        return { code: (err as { code: string }).code };
      } finally {
        client.close();
      }
    };
    const mine = (await call(tokens.acmeRead!, '/api/v1/failovers')) as { id: string; status: string }[];
    assert.deepEqual(mine.map((x) => [x.id, x.status]), [[report.id, 'succeeded']]);
    assert.deepEqual(await call(tokens.globex!, '/api/v1/failovers'), []);
    assert.deepEqual(await call(tokens.globex!, `/api/v1/failovers/${report.id}`), { code: 'FAILOVER_UNKNOWN' });
    const stored = (await call(tokens.acmeRead!, `/api/v1/failovers/${report.id}`)) as { id: string; vms: unknown[]; rtoMs: number | null };
    assert.equal(stored.id, report.id);
    assert.deepEqual(stored.vms, report.vms, 'the stored timeline is the one the run printed');
  });

  it('refuses a daemon whose certificate is not the one named, before the token leaves', async () => {
    const r = await vmdr(['status'], { ...server, VMDR_SERVER_FINGERPRINT: `SHA256:${'AB:'.repeat(31)}AB`, VMDR_TOKEN: tokens.acme! });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not SHA256:AB:AB/);
  });
});
