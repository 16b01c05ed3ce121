import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, MAX_ALIASES, MAX_CONFIG_BYTES, MAX_VALUES, parseConfig } from '../../plugin/config/load.js';
import { ConfigInvalid } from '../../plugin/config/errors.js';
import { duration, MAX_TIMER_MS } from '../../plugin/config/schema.js';
import { cycleInterval } from '../../plugin/replication/continuous.js';

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

  it('compresses by default; `compression: off` sends raw; anything else is refused, naming the place', async () => {
    const { config } = await loadConfig(LAB);
    assert.deepEqual([...new Set(config.protections.map((p) => p.compression))], ['auto']);
    const protection = (compression: string) =>
      minimal(`protections:\n  - name: web\n    source: { site: prod, vm: web }\n    compression: ${compression}\n    target: { site: prod, vm: web-dr, nics: [{ network: n }] }\n`);
    assert.equal(parseConfig(protection('off'), 'vmdr.yaml').protections[0]!.compression, 'off');
    expectInvalid(protection('fast'), /^vmdr\.yaml:8:18: protections\[0\]\.compression: expected one of "auto", "off"$/);
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

  it('fan-out: one source VM in several protections loads, to two DR sites or twice to one', () => {
    const copy = (name: string, site: string) => `  - name: ${name}
    source: { site: prod, vm: web }
    target: { site: ${site}, vm: ${name}-dr, nics: [{ network: dr }] }
`;
    const sites = `  - name: dr2
    uri: test:///default
`;
    const two = parseConfig(minimal(`${sites}protections:\n${copy('web-a', 'prod')}${copy('web-b', 'dr2')}`), 'vmdr.yaml');
    assert.deepEqual(two.protections.map((p) => [p.name, p.source.vm, p.target.site]), [['web-a', 'web', 'prod'], ['web-b', 'web', 'dr2']]);
    // A short-lived copy and a long-kept one at one site, say: each its own chain all the same.
    const one = parseConfig(minimal(`${sites}protections:\n${copy('web-a', 'dr2')}${copy('web-b', 'dr2')}`), 'vmdr.yaml');
    assert.deepEqual(one.protections.map((p) => p.target.site), ['dr2', 'dr2']);
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
    expectInvalid(minimal('drills:\n  - { name: d, plan: p, schedule: "every day" }\n'), /drills\[0\]\.schedule: drill "d": "every day" is not a cron expression such as "0 3 \* \* 1" \(expected 5 or 6 fields but got 2\)$/);
  });

  describe('drills', () => {
    const withDrill = (fields: string) =>
      minimal(`protections:
  - name: web
    tenant: acme
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, nics: [{ network: dr }] }
tenants:
  - { name: acme }
  - { name: globex }
plans:
  - { name: p, tenant: acme, groups: [{ name: all, vms: [web] }] }
drills:
  - { name: monthly, plan: p, ${fields} }
`);

    it('names the drill and the part of its schedule that does not parse', () => {
      expectInvalid(withDrill('schedule: "61 3 * * 1"'), /:\d+:\d+: drills\[0\]\.schedule: drill "monthly": "61 3 \* \* 1" is not a cron expression such as "0 3 \* \* 1" \(minute: 61 is a invalid expression for minute\)$/);
    });

    it('takes UTC and a 30 m time limit by default; the limit from 1s to 24h; a time zone by its IANA name', () => {
      const drill = parseConfig(withDrill('schedule: "0 3 * * 1"'), 'vmdr.yaml').drills[0]!;
      assert.equal(drill.timezone, 'UTC');
      assert.equal(drill.timeLimit, 30 * 60_000);
      assert.equal(parseConfig(withDrill('schedule: "* * * * * *", timeLimit: 1s, timezone: Europe/Paris'), 'vmdr.yaml').drills[0]!.timeLimit, 1_000);
      assert.equal(parseConfig(withDrill('schedule: "0 3 * * 1", timeLimit: 24h'), 'vmdr.yaml').drills[0]!.timeLimit, 86_400_000);
      expectInvalid(withDrill('schedule: "0 3 * * 1", timeLimit: 0s'), /drills\[0\]\.timeLimit: a duration from 1s to 24h$/);
      expectInvalid(withDrill('schedule: "0 3 * * 1", timeLimit: 25h'), /drills\[0\]\.timeLimit: a duration from 1s to 24h$/);
      expectInvalid(withDrill('schedule: "0 3 * * 1", timeLimit: soon'), /drills\[0\]\.timeLimit: a duration such as 30s, 15m, 4h or 7d$/);
      expectInvalid(withDrill('schedule: "0 3 * * 1", timezone: Mars/Olympus'), /drills\[0\]\.timezone: an IANA time zone such as UTC or Europe\/Paris$/);
    });

    it('refuses a drill of another tenant\'s plan', () => {
      expectInvalid(withDrill('tenant: globex, schedule: "0 3 * * 1"'), /drills\[0\]\.plan: plan "p" belongs to tenant "acme", not "globex"$/);
    });
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

  describe('limits', () => {
    const protection = (fields = '', target = '') => `protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, nics: [{ network: dr }]${target} }
${fields}`;
    const web = (text: string) => parseConfig(text, 'vmdr.yaml').protections[0]!;

    describe('ports: 1 to 65535 wherever one appears', () => {
      const receiver = (listen: string, url = '') => `version: 1
sites:
  - name: dr
    uri: test:///default
    receiver: { listen: "${listen}"${url ? `, url: "${url}"` : ''} }
`;
      it('takes the edge values', () => {
        for (const port of [1, 65535]) {
          assert.equal(parseConfig(receiver(`127.0.0.1:${port}`, `https://dr.example:${port}/`), 'vmdr.yaml').sites[0]!.endpoint!.listen, `127.0.0.1:${port}`);
          assert.deepEqual(web(minimal(protection(`    health: { tcp: ["192.0.2.11:${port}"], http: [{ url: "http://192.0.2.11:${port}/" }] }\n`))).health.tcp, [`192.0.2.11:${port}`]);
          assert.equal(parseConfig(minimal().replace('test:///default', `"qemu+tcp://192.0.2.1:${port}/system"`), 'vmdr.yaml').sites[0]!.uri, `qemu+tcp://192.0.2.1:${port}/system`);
        }
      });

      for (const port of ['0', '70000', '99999']) {
        it(`refuses port ${port}, naming the place`, () => {
          expectInvalid(receiver(`127.0.0.1:${port}`), /^vmdr\.yaml:5:\d+: sites\[0\]\.receiver\.listen: host:port with a port from 1 to 65535$/);
          expectInvalid(receiver('127.0.0.1:8443', `https://dr.example:${port}/`), /^vmdr\.yaml:5:\d+: sites\[0\]\.receiver\.url: a port from 1 to 65535$/);
          expectInvalid(minimal(protection(`    health: { tcp: ["192.0.2.11:${port}"] }\n`)), /: protections\[0\]\.health\.tcp\[0\]: host:port with a port from 1 to 65535$/);
          expectInvalid(minimal(protection(`    health: { http: [{ url: "http://192.0.2.11:${port}/" }] }\n`)), /: protections\[0\]\.health\.http\[0\]\.url: a port from 1 to 65535$/);
          expectInvalid(minimal().replace('test:///default', `"qemu+tcp://192.0.2.1:${port}/system"`), /^vmdr\.yaml:4:10: sites\[0\]\.uri: a port from 1 to 65535$/);
        });
      }
    });

    describe('durations: each its range, none past a timer', () => {
      it('takes an rpo from 1s to 30d', () => {
        assert.equal(web(minimal(protection('    rpo: 1s\n'))).rpo, 1_000);
        assert.equal(web(minimal(protection('    rpo: 30d\n'))).rpo, 30 * 86_400_000);
      });

      for (const rpo of ['0m', '0s', '31d', '50d', '99999999999999999999d']) {
        it(`refuses rpo: ${rpo}, naming the place`, () => {
          expectInvalid(minimal(protection(`    rpo: ${rpo}\n`)), /^vmdr\.yaml:9:10: protections\[0\]\.rpo: a duration from 1s to 30d$/);
        });
      }

      it('bounds the health timeout (1s to 12h) and the retention age (1m to 3650d)', () => {
        assert.equal(web(minimal(protection('    health: { timeout: 1s }\n'))).health.timeout, 1_000);
        assert.equal(web(minimal(protection('    health: { timeout: 12h }\n'))).health.timeout, 12 * 3_600_000);
        expectInvalid(minimal(protection('    health: { timeout: 0s }\n')), /protections\[0\]\.health\.timeout: a duration from 1s to 12h$/);
        expectInvalid(minimal(protection('    health: { timeout: 13h }\n')), /protections\[0\]\.health\.timeout: a duration from 1s to 12h$/);
        assert.equal(web(minimal(protection('    retention: { maxAge: 3650d }\n'))).retention.maxAge, 3650 * 86_400_000);
        expectInvalid(minimal(protection('    retention: { maxAge: 59s }\n')), /protections\[0\]\.retention\.maxAge: a duration from 1m to 3650d$/);
      });

      it('bounds a site\'s call timeout (1s to 1h, default left to the adapter: 120 s)', () => {
        const site = (line: string) => parseConfig(minimal().replace('uri: test:///default', `uri: test:///default\n    ${line}`), 'vmdr.yaml').sites[0]!;
        assert.equal(site('callTimeout: 2s').callTimeout, 2_000);
        assert.equal(site('callTimeout: 1h').callTimeout, 3_600_000);
        assert.equal(parseConfig(minimal(), 'vmdr.yaml').sites[0]!.callTimeout, undefined);
        expectInvalid(minimal().replace('uri: test:///default', 'uri: test:///default\n    callTimeout: 0s'), /sites\[0\]\.callTimeout: a duration from 1s to 1h$/);
        expectInvalid(minimal().replace('uri: test:///default', 'uri: test:///default\n    callTimeout: soon'), /sites\[0\]\.callTimeout: a duration such as 30s/);
      });

      it('never makes vmdr wait longer than a timer can (2^31-1 ms)', () => {
        const longest = web(minimal(protection('    rpo: 30d\n    health: { timeout: 12h }\n')));
        assert.ok(cycleInterval(longest) <= MAX_TIMER_MS, `rpo/2 = ${cycleInterval(longest)} ms`);
        assert.ok(longest.health.timeout <= MAX_TIMER_MS);
        assert.equal(duration.parse('24d'), 24 * 86_400_000);
        assert.ok(!duration.safeParse('25d').success, 'the CLI duration (--shutdown-timeout) stops before MAX_TIMER_MS');
      });
    });

    describe('paths: no ".." anywhere', () => {
      const lab = () => readFile(LAB, 'utf8');
      for (const [field, from, to] of [
        ['state.path', '/var/lib/vmdr/lab/state.db', '/var/lib/vmdr/../../etc/state.db'],
        ['sites[1].storage', '/var/lib/vmdr/lab/replicas', '/var/lib/vmdr/lab/..'],
        ['sites[1].endpoint.credentials', '/var/lib/vmdr/lab/receiver-dr', '/var/lib/vmdr/lab/../x'],
        ['protections[0].target.boot.kernel', 'kernel: /var/lib/vmdr/lab/vmlinuz', 'kernel: /boot/../vmlinuz'],
        ['protections[0].target.boot.initrd', 'initrd: /var/lib/vmdr/lab/initrd.img', 'initrd: /boot/../initrd.img'],
      ] as const) {
        it(`refuses ".." in ${field}`, async () => {
          expectInvalid((await lab()).replace(from, to), new RegExp(`: ${field.replace(/[[\].]/g, '\\$&')}: a path without "\\.\\." segments$`));
        });
      }

      it('keeps a template name relative to templates/domains/, refusing ".." in it', () => {
        assert.equal(web(minimal(protection('', ', template: libvirt-domain.xml'))).target.template, 'libvirt-domain.xml');
        assert.equal(web(minimal(protection('', ', template: /srv/a..b/domain.xml'))).target.template, '/srv/a..b/domain.xml');
        expectInvalid(minimal(protection('', ', template: ../../etc/domain.xml')), /protections\[0\]\.target\.template: a path without "\.\." segments$/);
      });
    });

    describe('YAML', () => {
      it('refuses an alias bomb, naming the alias that went past the limit', () => {
        const levels = 'abcdefghi'.split('');
        const bomb = [
          'version: 1',
          `a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]`,
          ...levels.slice(1).map((l, i) => `${l}: &${l} [${Array(9).fill(`*${levels[i]}`).join(', ')}]`),
          'sites: *i',
        ].join('\n');
        expectInvalid(bomb, new RegExp(`^vmdr\\.yaml:\\d+:\\d+: [a-i]\\[\\d+\\]: YAML aliases bring the config past ${MAX_VALUES} values$`));
      });

      it("takes a block shared by many protections (past the yaml library's default of 100 uses)", () => {
        const protections = Array.from({ length: 150 }, (_, i) => `  - name: p${i}
    source: { site: prod, vm: vm${i} }
    target: { site: prod, vm: vm${i}-dr, nics: [{ network: dr }] }
    health: ${i === 0 ? '&health { timeout: 5m, tcp: ["192.0.2.11:22"] }' : '*health'}
`).join('');
        const config = parseConfig(minimal(`protections:\n${protections}`), 'vmdr.yaml');
        assert.deepEqual(config.protections[149]!.health.tcp, ['192.0.2.11:22']);
      });

      it('refuses more than 10,000 anchors and aliases (the library resolves each by a scan of those before it)', () => {
        const aliases = (n: number) => `version: 1\nx: [&a 1${', *a'.repeat(n)}]\n`;
        expectInvalid(aliases(MAX_ALIASES), new RegExp(`^vmdr\\.yaml:2:\\d+: x\\[${MAX_ALIASES}\\]: more than ${MAX_ALIASES} YAML anchors and aliases$`));
      });

      it('refuses an alias inside the value it names, and one naming no anchor', () => {
        expectInvalid('version: 1\nsites: &s\n  - *s\n', /^vmdr\.yaml:3:5: sites\[0\]: alias \*s is inside the value it names$/);
        expectInvalid('version: 1\nsites:\n  - *s\n', /^vmdr\.yaml:3:5: sites\[0\]: alias \*s names no anchor before it$/);
      });

      it('refuses a key given twice, naming the second', () => {
        expectInvalid(minimal(protection('    rpo: 5m\n    rpo: 1m\n')), /^vmdr\.yaml:10:5: protections\[0\]\.rpo: duplicate key "rpo"$/);
      });

      it('refuses more than 200,000 values before the schema sees them, naming the first past the limit', () => {
        const list = (n: number) => `version: 1\nx: [${Array(n).fill('1').join(',')}]\n`;
        // The document's mapping, version, 1, x and the list: 5 values besides the items.
        expectInvalid(list(MAX_VALUES - 5), /^vmdr\.yaml:1:1: sites: missing; expected array$/);
        expectInvalid(list(MAX_VALUES - 4), new RegExp(`^vmdr\\.yaml:2:\\d+: x\\[${MAX_VALUES - 5}\\]: more than ${MAX_VALUES} values: a config is a page of settings, not a data set$`));
      });

      it('refuses [ and { nested deeper than 32', () => {
        const nested = (depth: number) => `version: 1\nsites: ${'['.repeat(depth)}${']'.repeat(depth)}\n`;
        expectInvalid(nested(32), /^vmdr\.yaml:2:9: sites\[0\]: expected object$/);
        expectInvalid(nested(33), /^vmdr\.yaml: not valid YAML: \[ and \{ nested more than 32 deep$/);
      });

      it('parses a 1 MiB map of 90,000 keys in seconds (the library alone took 45 s)', function () {
        this.timeout(60_000);
        let text = 'version: 1\nx:\n';
        for (let i = 0; text.length < MAX_CONFIG_BYTES - 20; i++) text += `  k${i}: 1\n`;
        const started = Date.now();
        expectInvalid(text, /^vmdr\.yaml:1:1: sites: missing; expected array$/);
        assert.ok(Date.now() - started < 20_000, `${Date.now() - started} ms`);
      });
    });
  });

  describe('files', () => {
    let dir: string;
    before(async () => (dir = await mkdtemp(join(tmpdir(), 'test-vmdr-config-'))));
    after(() => rm(dir, { recursive: true, force: true }));

    it('says when the file does not exist', async () => {
      await assert.rejects(loadConfig(join(dir, 'nope.yaml')), /nope\.yaml: no such file$/);
    });

    it('refuses a file larger than 1 MiB before reading it, and takes one of exactly 1 MiB', async () => {
      const file = join(dir, 'padded.yaml');
      const valid = await readFile(LAB, 'utf8');
      const padded = `${valid}#${'x'.repeat(MAX_CONFIG_BYTES - valid.length - 2)}\n`;
      await writeFile(file, padded);
      assert.equal((await loadConfig(file)).config.protections.length, 2);
      await writeFile(file, `${padded} `);
      await assert.rejects(loadConfig(file), /^ConfigInvalid: .*padded\.yaml: 1048577 bytes: larger than 1 MiB, the most a config may have$/);
    });

    it('reads no more than 1 MiB of an endless file', async () => {
      await assert.rejects(loadConfig('/dev/zero'), /^ConfigInvalid: \/dev\/zero: larger than 1 MiB, the most a config may have$/);
    });

    it('says when the file is a directory', async () => {
      await assert.rejects(loadConfig(dir), /: is a directory, not a config file$/);
    });

    it('says when the file is empty', async () => {
      const file = join(dir, 'empty.yaml');
      await writeFile(file, '');
      await assert.rejects(loadConfig(file), /empty\.yaml: version: missing; expected 1$/);
    });
  });
});
