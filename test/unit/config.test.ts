import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../plugin/config/load.js';
import { ConfigInvalid } from '../../plugin/config/errors.js';

const LAB = 'templates/examples/lab.yaml';

function expectInvalid(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(text, 'vmdr.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigInvalid, `expected ConfigInvalid, got ${String(err)}`);
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.match(err.message, pattern);
      return true;
    },
  );
}

const minimal = (extra = '') => `version: 1
sites:
  - name: prod
    uri: test:///default
${extra}`;

describe('config', () => {
  it('loads the lab example with its defaults filled in', async () => {
    const { config } = await loadConfig(LAB);
    assert.equal(config.sites.length, 2);
    const db = config.protections.find((p) => p.name === 'acme-db')!;
    assert.equal(db.rpo, 5 * 60_000);
    assert.equal(db.retention.maxAge, 7 * 86_400_000);
    assert.equal(db.target.nics[0]!.mac, '52:54:00:d7:00:01');
    const web = config.protections.find((p) => p.name === 'acme-web')!;
    assert.equal(web.retention.keep, 24);
    assert.deepEqual(config.plans[0]!.groups.map((g) => g.parallel), [4, 4]);
  });

  it('names the file, line, column and key path of a wrong type', () => {
    expectInvalid(minimal('protections:\n  - name: 5\n'), /^vmdr\.yaml:6:11: protections\[0\]\.name: expected string$/);
  });

  it('names a missing required key with the place of its parent', () => {
    expectInvalid('version: 1\nsites:\n  - name: prod\n', /^vmdr\.yaml:3:5: sites\[0\]\.uri: missing; expected string$/);
  });

  it('refuses unknown keys, naming them', () => {
    expectInvalid(minimal('colour: blue\n'), /^vmdr\.yaml:1:1: unknown key "colour"$/);
  });

  it('reports YAML syntax errors with line and column', () => {
    expectInvalid('version: 1\nsites: [\n  name: x\n', /^vmdr\.yaml:\d+:\d+: not valid YAML: /);
  });

  it('refuses references to sites, tenants and plans that do not exist', () => {
    const protection = `protections:
  - name: web
    tenant: nobody
    source: { site: prod, vm: web }
    target: { site: elsewhere, vm: web-dr, nics: [{ network: dr }] }
`;
    expectInvalid(minimal(protection), /protections\[0\]\.tenant: unknown tenant "nobody"$/);
    expectInvalid(minimal(protection.replace('    tenant: nobody\n', '')), /protections\[0\]\.target\.site: unknown site "elsewhere"$/);
    expectInvalid(minimal('drills:\n  - { name: d, plan: none, schedule: "0 3 * * 1" }\n'), /drills\[0\]\.plan: unknown plan "none"$/);
  });

  it('refuses two DR NICs asking for the same MAC', () => {
    const two = ['a', 'b']
      .map((n) => `  - name: ${n}
    source: { site: prod, vm: ${n} }
    target: { site: prod, vm: ${n}-dr, nics: [{ network: dr, mac: "52:54:00:AA:00:01" }] }
`)
      .join('');
    expectInvalid(minimal(`protections:\n${two}`), /protections\[1\]\.target\.nics\[0\]\.mac: MAC 52:54:00:aa:00:01 is already used by protection "a"$/);
  });

  it('explains malformed values: duration, MAC, address, cron', () => {
    const p = (target: string, rest = '') => minimal(`protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, ${target} }
${rest}`);
    expectInvalid(p('nics: [{ network: dr }]', '    rpo: 10 minutes\n'), /rpo: a duration such as 30s, 15m, 4h or 7d$/);
    expectInvalid(p('nics: [{ network: dr, mac: "52:54:00" }]'), /mac: a MAC address such as 52:54:00:12:34:56$/);
    expectInvalid(p('nics: [{ network: dr, addresses: [192.0.2.300/24] }]'), /addresses\[0\]: an IPv4 address with prefix/);
    expectInvalid(p('nics: []'), /target\.nics: at least one NIC$/);
    expectInvalid(minimal('drills:\n  - { name: d, plan: p, schedule: "every day" }\n'), /drills\[0\]\.schedule: a cron expression/);
  });

  describe('health checks', () => {
    const withHealth = (health?: string) =>
      minimal(`protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, nics: [{ network: dr }] }
${health === undefined ? '' : `    health: ${health}\n`}`);

    it('defaults to: running within 2 minutes, no other check', () => {
      const web = parseConfig(withHealth(), 'vmdr.yaml').protections[0]!;
      assert.deepEqual(web.health, { timeout: 2 * 60_000, agent: false, tcp: [], http: [] });
    });

    it('reads every kind of check, with durations in milliseconds', () => {
      const health = '{ timeout: 90s, serial: "^VMDR-GUEST ready", agent: true, tcp: ["192.0.2.11:5432"], http: [{ url: "https://192.0.2.12/health", status: 204 }, { url: "http://192.0.2.12/" }] }';
      const web = parseConfig(withHealth(health), 'vmdr.yaml').protections[0]!;
      assert.deepEqual(web.health, {
        timeout: 90_000,
        serial: '^VMDR-GUEST ready',
        agent: true,
        tcp: ['192.0.2.11:5432'],
        http: [{ url: 'https://192.0.2.12/health', status: 204 }, { url: 'http://192.0.2.12/' }],
      });
    });

    it('gives the lab example a serial check on the ready line', async () => {
      const { config } = await loadConfig(LAB);
      for (const p of config.protections) assert.deepEqual(p.health, { timeout: 120_000, serial: '^VMDR-GUEST ready', agent: false, tcp: [], http: [] }, p.name);
    });

    it('refuses a serial pattern that is not a regular expression, naming its place', () => {
      expectInvalid(withHealth('{ serial: "VMDR-GUEST (ready" }'), /^vmdr\.yaml:9:\d+: protections\[0\]\.health\.serial: a regular expression$/);
    });

    it('refuses a tcp check without a port, naming the entry', () => {
      expectInvalid(withHealth('{ tcp: ["192.0.2.11:5432", "192.0.2.11"] }'), /^vmdr\.yaml:9:\d+: protections\[0\]\.health\.tcp\[1\]: host:port$/);
    });

    it('refuses other URL schemes, impossible statuses and unknown keys', () => {
      expectInvalid(withHealth('{ http: [{ url: "ftp://192.0.2.12/" }] }'), /health\.http\[0\]\.url: an http:\/\/ or https:\/\/ URL$/);
      expectInvalid(withHealth('{ http: [{ url: "http://192.0.2.12/", status: 700 }] }'), /health\.http\[0\]\.status: an HTTP status from 100 to 599$/);
      expectInvalid(withHealth('{ timeout: soon }'), /health\.timeout: a duration such as 30s/);
      expectInvalid(withHealth('{ ping: true }'), /unknown key "ping"$/);
    });
  });

  describe('files', () => {
    let dir: string;
    before(async () => (dir = await mkdtemp(join(tmpdir(), 'test-vmdr-config-'))));
    after(() => rm(dir, { recursive: true, force: true }));

    it('says when the file does not exist', async () => {
      await assert.rejects(loadConfig(join(dir, 'nope.yaml')), /nope\.yaml: no such file$/);
    });

    it('says when the file is empty', async () => {
      const file = join(dir, 'empty.yaml');
      await writeFile(file, '');
      await assert.rejects(loadConfig(file), /empty\.yaml: version: missing; expected 1$/);
    });
  });
});
