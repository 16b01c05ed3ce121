/**
 * Tenant isolation, as one table: two tenants, each with a protection, a plan, a token, an
 * operation and a failover run; every API route tried by each tenant's token on the other's
 * objects. Every row must be refused exactly as for an object that does not exist (same status,
 * same body but for the name asked), or, for a list, must not show the other's object. The CLI
 * commands that take a token are in the same table. The table is printed with the test's output.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ApiServer } from '../../../plugin/api/server.js';
import type { SiteConnections } from '../../../plugin/sites/connections.js';
import type { SiteIdentity } from '../../../plugin/sites/identity.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall, readEvents, type ApiAnswer } from '../../helpers/api-client.js';
import { startLoopbackApi } from '../../helpers/api-instance.js';
import { closeTestConfig, openTestConfig, testProtections, twoTenants, writeTestConfig } from '../../helpers/test-config.js';

const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', '..', 'dist', 'scripts', 'vmdr.js');
const TENANTS = ['acme', 'globex'] as const;
type Tenant = (typeof TENANTS)[number];

interface Objects {
  protection: string;
  plan: string;
  token: string;
  tokenId: string;
  operation: string;
  failover: string;
  drill: string;
  drillRun: string;
}

interface Row {
  what: string;
  /** The request on the other tenant's object, and the same on a name that exists nowhere; or a list and the name it must not show. */
  check: (as: Tenant, theirs: Objects) => Promise<{ refused: boolean; detail: string }>;
}

describe('tenant isolation: every route and command, each tenant against the other', function () {
  this.timeout(120_000);
  let dir: string;
  let config: string;
  let state: StateStore;
  let sites: SiteConnections;
  let api: ApiServer;
  let ca: Buffer;
  let fingerprint: string;
  const objects = {} as Record<Tenant, Objects>;
  const call = (path: string, token: string, method = 'GET', body?: unknown) => apiCall(api.url, ca, path, { method, token, ...(body !== undefined ? { body } : {}) });
  const other = (t: Tenant): Tenant => (t === 'acme' ? 'globex' : 'acme');

  before(async () => {
    const plans = TENANTS.map((t) => `  - { name: plan-${t}, tenant: ${t}, groups: [{ name: all, vms: [web-${t}] }] }`).join('\n');
    const drills = TENANTS.map((t) => `  - { name: drill-${t}, plan: plan-${t}, schedule: "0 3 * * 1" }`).join('\n');
    ({ dir, file: config } = await writeTestConfig(
      'vmdr-isolation',
      `${twoTenants()}protections:
${testProtections(...TENANTS.map((t): [string, string] => [`web-${t}`, t]))}plans:
${plans}
drills:
${drills}
`,
    ));
    const opened = await openTestConfig(config);
    ({ state, sites } = opened);
    let credentials: SiteIdentity;
    ({ api, credentials } = await startLoopbackApi(dir, { file: config, ...opened, log: false }));
    ca = credentials.cert;
    fingerprint = credentials.fingerprint;
    for (const t of TENANTS) {
      const made = createToken(state, { name: `${t}-ops`, tenant: t, role: 'operate' });
      const sync = await call(`/api/v1/protections/web-${t}/sync`, made.token, 'POST', {});
      const drill = await call('/api/v1/failovers', made.token, 'POST', { protection: `web-${t}`, kind: 'test' });
      await readEvents(api.url, ca, drill.json.links.events, made.token);
      const runs = (await call('/api/v1/failovers', made.token)).json as { id: string }[];
      const drilled = await call(`/api/v1/drills/drill-${t}/runs`, made.token, 'POST', {});
      await readEvents(api.url, ca, drilled.json.links.events, made.token);
      const drillRuns = (await call('/api/v1/drills/history', made.token)).json as { id: string }[];
      objects[t] = {
        protection: `web-${t}`,
        plan: `plan-${t}`,
        token: made.token,
        tokenId: made.record.id,
        operation: sync.json.id,
        failover: runs.find((r) => !r.id.startsWith('dr-'))!.id,
        drill: `drill-${t}`,
        drillRun: drillRuns[0]!.id,
      };
    }
  });

  after(() => closeTestConfig(dir, { api, sites, state }));

  /** The other's object answered as the one that exists nowhere, but for the name. */
  const sameAsNothing = (theirs: ApiAnswer, nothing: ApiAnswer, theirName: string, noName: string) => {
    const same = theirs.status === nothing.status && theirs.text === nothing.text.replaceAll(noName, theirName);
    return { refused: theirs.status === 404 && same, detail: `${theirs.status} ${theirs.json?.error?.code ?? theirs.text.slice(0, 40)}` };
  };
  const absent = (list: ApiAnswer, name: string) => ({ refused: list.status === 200 && !list.text.includes(name), detail: `${list.status}, ${list.text.includes(name) ? 'SHOWN' : 'not in the list'}` });
  const byName = (what: string, method: string, path: (n: string) => string, name: (o: Objects) => string, nothing: string, body?: (n: string) => unknown): Row => ({
    what,
    check: async (as, theirs) => {
      const mine = objects[as].token;
      return sameAsNothing(await call(path(name(theirs)), mine, method, body?.(name(theirs))), await call(path(nothing), mine, method, body?.(nothing)), name(theirs), nothing);
    },
  });
  const list = (what: string, path: string, name: (o: Objects) => string): Row => ({ what, check: async (as, theirs) => absent(await call(path, objects[as].token), name(theirs)) });

  const API_ROWS: Row[] = [
    list('GET /api/v1/status', '/api/v1/status', (o) => o.protection),
    list('GET /api/v1/protections', '/api/v1/protections', (o) => o.protection),
    byName('GET /api/v1/protections/:name', 'GET', (n) => `/api/v1/protections/${n}`, (o) => o.protection, 'web-nobody'),
    byName('GET /api/v1/protections/:name/points', 'GET', (n) => `/api/v1/protections/${n}/points`, (o) => o.protection, 'web-nobody'),
    byName('POST /api/v1/protections/:name/sync', 'POST', (n) => `/api/v1/protections/${n}/sync`, (o) => o.protection, 'web-nobody', () => ({})),
    byName('POST /api/v1/protections/:name/pause', 'POST', (n) => `/api/v1/protections/${n}/pause`, (o) => o.protection, 'web-nobody', () => ({})),
    byName('POST /api/v1/protections/:name/resume', 'POST', (n) => `/api/v1/protections/${n}/resume`, (o) => o.protection, 'web-nobody', () => ({})),
    byName('POST /api/v1/protections (operators only)', 'POST', () => '/api/v1/protections', (o) => o.protection.replace('web-', 'new-'), 'new-nobody', (n) => ({
      name: n,
      source: { site: 'src', vm: 'test' },
      target: { site: 'dr', vm: `${n}-dr`, nics: [{ network: 'default' }] },
    })),
    byName('DELETE /api/v1/protections/:name', 'DELETE', (n) => `/api/v1/protections/${n}`, (o) => o.protection, 'web-nobody'),
    byName('POST /api/v1/tenants (operators only)', 'POST', () => '/api/v1/tenants', (o) => o.protection.replace('web-', 'new-'), 'nobody', (n) => ({ name: n })),
    byName('DELETE /api/v1/tenants/:name (operators only)', 'DELETE', (n) => `/api/v1/tenants/${n}`, (o) => o.protection.replace('web-', ''), 'nobody'),
    list('GET /api/v1/tenants', '/api/v1/tenants', (o) => o.plan.replace('plan-', '')),
    byName('GET /api/v1/tenants/:name', 'GET', (n) => `/api/v1/tenants/${n}`, (o) => o.protection.replace('web-', ''), 'nobody'),
    list('GET /api/v1/tokens', '/api/v1/tokens', (o) => o.tokenId),
    byName('POST /api/v1/tokens (their tenant)', 'POST', () => '/api/v1/tokens', (o) => o.protection.replace('web-', ''), 'nobody', (n) => ({ name: 'x', tenant: n })),
    byName('DELETE /api/v1/tokens/:id', 'DELETE', (n) => `/api/v1/tokens/${n}`, (o) => o.tokenId, '000000000000'),
    list('GET /api/v1/operations', '/api/v1/operations', (o) => o.operation),
    byName('GET /api/v1/operations/:id', 'GET', (n) => `/api/v1/operations/${n}`, (o) => o.operation, 'op-00000000-0000-0000-0000-000000000000'),
    byName('GET /api/v1/operations/:id/events', 'GET', (n) => `/api/v1/operations/${n}/events`, (o) => o.operation, 'op-00000000-0000-0000-0000-000000000000'),
    byName('POST /api/v1/failovers (their protection)', 'POST', () => '/api/v1/failovers', (o) => o.protection, 'web-nobody', (n) => ({ protection: n, kind: 'test' })),
    byName('POST /api/v1/failovers (their plan)', 'POST', () => '/api/v1/failovers', (o) => o.plan, 'plan-nobody', (n) => ({ plan: n, kind: 'test' })),
    list('GET /api/v1/failovers', '/api/v1/failovers', (o) => o.failover),
    byName('GET /api/v1/failovers/:id', 'GET', (n) => `/api/v1/failovers/${n}`, (o) => o.failover, 'fo-20000101T000000-0000'),
    byName('GET /api/v1/failovers/:id/report.html', 'GET', (n) => `/api/v1/failovers/${n}/report.html`, (o) => o.failover, 'fo-20000101T000000-0000'),
    list('GET /api/v1/drills', '/api/v1/drills', (o) => o.drill),
    byName('POST /api/v1/drills/:name/runs', 'POST', (n) => `/api/v1/drills/${n}/runs`, (o) => o.drill, 'drill-nobody', () => ({})),
    list('GET /api/v1/drills/history', '/api/v1/drills/history', (o) => o.drillRun),
    {
      what: 'GET /api/v1/drills/history?tenant=THEIRS',
      check: async (as, theirs) => absent(await call(`/api/v1/drills/history?tenant=${other(as)}`, objects[as].token), theirs.drillRun),
    },
    byName('GET /api/v1/drills/history/:id', 'GET', (n) => `/api/v1/drills/history/${n}`, (o) => o.drillRun, 'dr-20000101T000000-0000'),
    {
      what: 'GET /api/v1/audit (operators only)',
      check: async (as) => {
        const r = await call('/api/v1/audit', objects[as].token);
        return { refused: r.status === 404, detail: `${r.status} ${r.json?.error?.code}` };
      },
    },
  ];

  const cli = async (as: Tenant, ...args: string[]) =>
    exec(process.execPath, [CLI, ...args, '--config', config], {
      env: { ...process.env, VMDR_SERVER: api.url, VMDR_SERVER_FINGERPRINT: fingerprint, VMDR_TOKEN: objects[as].token },
      timeout: 30_000,
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
  const cliByName = (what: string, args: (n: string) => string[]): Row => ({
    what,
    check: async (as, theirs) => {
      const r = await cli(as, ...args(theirs.protection));
      const n = await cli(as, ...args('web-nobody'));
      const refused = r.code === 1 && r.stderr === n.stderr.replaceAll('web-nobody', theirs.protection) && r.stderr.trim().split('\n').length === 1;
      return { refused, detail: `exit ${r.code}: ${r.stderr.trim()}` };
    },
  });
  const cliSameAsNothing = (what: string, args: (n: string) => string[], name: (o: Objects) => string, nothing: string): Row => ({
    what,
    check: async (as, theirs) => {
      const r = await cli(as, ...args(name(theirs)));
      const n = await cli(as, ...args(nothing));
      const refused = r.code === 1 && r.stderr === n.stderr.replaceAll(nothing, name(theirs)) && r.stderr.trim().split('\n').length === 1;
      return { refused, detail: `exit ${r.code}: ${r.stderr.trim()}` };
    },
  });
  const CLI_ROWS: Row[] = [
    cliByName('vmdr sync NAME --server', (n) => ['sync', n]),
    cliByName('vmdr points NAME --server', (n) => ['points', n]),
    cliByName('vmdr failover NAME --test --server', (n) => ['failover', n, '--test']),
    cliByName('vmdr failback NAME --server', (n) => ['failback', n]),
    cliByName('vmdr pause NAME --server', (n) => ['pause', n]),
    cliByName('vmdr resume NAME --server', (n) => ['resume', n]),
    cliSameAsNothing('vmdr drill run NAME --server', (n) => ['drill', 'run', n], (o) => o.drill, 'drill-nobody'),
    cliSameAsNothing('vmdr drill show ID --server', (n) => ['drill', 'show', n], (o) => o.drillRun, 'dr-20000101T000000-0000'),
    {
      what: 'vmdr drill history --server',
      check: async (as, theirs) => {
        const r = await cli(as, 'drill', 'history', '--json');
        return { refused: r.code === 0 && !r.stdout.includes(theirs.drillRun) && !r.stdout.includes(theirs.drill), detail: `exit ${r.code}, ${r.stdout.includes(theirs.drillRun) ? 'SHOWN' : 'not shown'}` };
      },
    },
    {
      what: 'vmdr status --server',
      check: async (as, theirs) => {
        const r = await cli(as, 'status', '--json');
        return { refused: r.code === 0 && !r.stdout.includes(theirs.protection), detail: `exit ${r.code}, ${r.stdout.includes(theirs.protection) ? 'SHOWN' : 'not shown'}` };
      },
    },
  ];

  it("serves a tenant its own run's signed report page, stored by the runner when the drill ended", async () => {
    for (const t of TENANTS) {
      const page = await call(`/api/v1/failovers/${objects[t].failover}/report.html`, objects[t].token);
      assert.equal(page.status, 200, page.text);
      assert.match(String(page.headers['content-type']), /^text\/html/);
      const stored = await readFile(join(dir, 'reports', objects[t].failover, 'report.html'), 'utf8');
      assert.equal(page.text, stored);
      assert.match(page.text, new RegExp(`<dt>Tenant</dt><dd>${t}</dd>`));
    }
  });

  it('refuses every route and command of one tenant on the other\'s objects', async () => {
    const table: { request: string; as: string; on: string; refused: string; answer: string }[] = [];
    for (const row of [...API_ROWS, ...CLI_ROWS]) {
      for (const as of TENANTS) {
        const { refused, detail } = await row.check(as, objects[other(as)]);
        table.push({ request: row.what, as, on: other(as), refused: refused ? 'yes' : 'NO', answer: detail });
      }
    }
    console.table(table);
    assert.deepEqual(table.filter((r) => r.refused !== 'yes'), []);
  });
});
