/**
 * `vmdr status` names the bandwidth limit each protection's cycles are held to now, whose it is
 * (the protection's own or its DR site link's window, the tighter) and when it next changes, in
 * the table, with --json and in the API's status (a tenant sees its own rows only). On libvirt's
 * test driver, with the API's test config: the dr link limited to 20 MB/s in a window around now,
 * and one of acme's protections held to 5 MB/s of its own.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ProtectionStatus } from '../../../plugin/protections/status.js';
import { apiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';
import { runVmdr } from '../../helpers/lab.js';

const MB = 1e6;
const pad = (n: number) => String(n).padStart(2, '0');
/** "HH:MM" on this host's clock (the CLI's child reads the same TZ). */
const hhmm = (d: Date) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;

describe('vmdr status: the bandwidth limit in force', function () {
  this.timeout(60_000);
  let t: TestApi;
  let file: string;
  // A window from an hour ago to an hour from now (past midnight near it: still one window).
  const now = new Date();
  now.setSeconds(0, 0);
  const from = new Date(now.getTime() - 3_600_000);
  const to = new Date(now.getTime() + 3_600_000);

  before(async () => {
    t = await startTestApi({
      dr: `, bandwidth: [{ limit: "20MB/s", from: "${hhmm(from)}", to: "${hhmm(to)}" }]`,
      moreProtections: `  - name: shop-acme
    tenant: acme
    bandwidth: 5MB/s
    source: { site: src, vm: test }
    target: { site: dr, vm: shop-acme-dr, nics: [{ network: default }] }
`,
    });
    file = join(t.dir, 'vmdr.yaml');
  });
  after(() => t?.close());

  const linkWindow = { limit: 20 * MB, source: 'site-link', site: 'dr', next: { at: to.toISOString(), limit: null, source: null } };
  const ownLimit = { limit: 5 * MB, source: 'protection', site: 'dr', next: null };

  it('--json: the limit, its source, and the next change (the link window closing); the tighter own limit never changes', async () => {
    const r = await runVmdr(['status', '--json', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as ProtectionStatus[];
    const of = (name: string) => rows.find((row) => row.protection === name)?.bandwidth;
    assert.deepEqual(of('web-acme'), linkWindow);
    assert.deepEqual(of('infra'), linkWindow);
    assert.deepEqual(of('shop-acme'), ownLimit, 'its own 5 MB/s is tighter than the link inside the window and out of it');
  });

  it('the table: a LIMIT column naming the rate, whose it is and until when', async () => {
    const r = await runVmdr(['status', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.match(lines[0]!, /\bRPO\s+LIMIT\s+LAST POINT\b/);
    const line = (name: string) => lines.find((l) => l.startsWith(`${name} `)) ?? '';
    const until = new RegExp(`\\b20 MB/s \\(link to dr\\) until (\\w{3} )?${hhmm(to)}, then unlimited\\b`);
    assert.match(line('web-acme'), until);
    assert.match(line('shop-acme'), /\b5 MB\/s \(protection\)\s/);
    assert.doesNotMatch(line('shop-acme'), /until/);
  });

  it("the API's status: each tenant's rows carry their limit, and no other tenant's row", async () => {
    const status = (token: string) => apiCall(t.api.url, t.ca, '/api/v1/status', { token }).then((a) => a.json as { protections: ProtectionStatus[] });
    const acme = await status(t.tokens.acmeRead);
    assert.deepEqual(
      acme.protections.map((p) => [p.protection, p.bandwidth]),
      [
        ['web-acme', linkWindow],
        ['shop-acme', ownLimit],
      ],
    );
    const globex = await status(t.tokens.globex);
    assert.deepEqual(
      globex.protections.map((p) => [p.protection, p.bandwidth]),
      [['db-globex', linkWindow]],
    );
  });
});
