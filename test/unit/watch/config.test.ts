/**
 * The watch's config as an operator meets it: `vmdr config check` (the built CLI) takes a watch with
 * its defaults and refuses each bad one in one line naming its place, with exit code 1.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../plugin/config/load.js';
import { watchOf } from '../../../plugin/watch/watched.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('watch config', function () {
  this.timeout(60_000);
  let dir: string;
  let n = 0;
  const yaml = (web: string, plan = '', sites = '  - { name: src, uri: "qemu+ssh://src.invalid/system" }\n  - { name: dr, uri: "qemu+ssh://dr.invalid/system" }\n') => `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
${sites}protections:
  - name: web
    source: { site: src, vm: web }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
${web}  - name: db
    source: { site: src, vm: db }
    target: { site: src, vm: db-dr, nics: [{ network: n }] }
plans:
  - name: shop
    groups: [{ name: all, vms: [web, db] }]
${plan}`;
  const check = async (text: string) => {
    const file = join(dir, `vmdr-${++n}.yaml`);
    await writeFile(file, text);
    return { file, result: await runVmdr(['config', 'check', file]) };
  };
  const refused = async (text: string, message: RegExp) => {
    const { file, result } = await check(text);
    assert.equal(result.code, 1, result.stderr);
    const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assertOneLineError(result, new RegExp(`^vmdr: ${escaped}.*${message.source}`));
  };

  before(async () => (dir = await mkdtemp(join(tmpdir(), 'test-vmdr-watch-config-'))));
  after(() => rm(dir, { recursive: true, force: true }));

  it('takes a watch with its defaults: notify, every 5 s, down after 3 missed beats and 15 s', async () => {
    const { result } = await check(yaml('    watch: {}\n'));
    assert.equal(result.code, 0, result.stderr);
    const config = parseConfig(yaml('    watch: { interval: 2s, missed: 4, guest: { agent: true, tcp: "127.0.0.1:22" } }\n'), 'x.yaml');
    const web = watchOf(config, config.protections[0]!)!;
    assert.deepEqual(web.watch, { policy: 'notify', interval: 2000, missed: 4, after: 8000, guest: { agent: true, tcp: '127.0.0.1:22' } });
    assert.deepEqual(parseConfig(yaml('    watch: {}\n'), 'x.yaml').protections[0]!.watch, { policy: 'notify', interval: 5000, missed: 3, after: 15_000 });
    // A plan's watch is its protections'.
    const planned = parseConfig(yaml('', '    watch: { interval: 1s, after: 10s }\n'), 'x.yaml');
    assert.deepEqual(
      planned.protections.map((p) => [p.name, watchOf(planned, p)?.plan, watchOf(planned, p)?.watch.after]),
      [['web', 'shop', 10_000], ['db', 'shop', 10_000]],
    );
  });

  it('refuses an interval of zero or below a second, and missed: 0, naming the path', async () => {
    await refused(yaml('    watch: { interval: 0s }\n'), /protections\[0\]\.watch\.interval.*a duration from 1s to 1h/);
    await refused(yaml('    watch: { interval: 500ms }\n'), /protections\[0\]\.watch\.interval.*a duration such as 30s/);
    await refused(yaml('    watch: { missed: 0 }\n'), /protections\[0\]\.watch\.missed.*at least 1 beat/);
    await refused(yaml('', '    watch: { interval: 0s }\n'), /plans\[0\]\.watch\.interval.*a duration from 1s to 1h/);
  });

  it('refuses an unknown policy, naming the ones there are', async () => {
    await refused(yaml('    watch: { policy: reboot }\n'), /protections\[0\]\.watch\.policy: expected one of "notify", "confirm", "automatic"$/);
  });

  it("refuses automatic failover onto the source's own host: the same site, or the same URI from one host", async () => {
    await refused(yaml('', '    watch: { policy: automatic }\n'), /plans\[0\]\.watch\.policy.*plan "shop": automatic failover of protection "db" would start its DR copy on the source's own host \(site "src"\)/);
    const oneUri = '  - { name: src, uri: "qemu:///system" }\n  - { name: dr, uri: "qemu:///system" }\n';
    await refused(yaml('    watch: { policy: automatic }\n', '', oneUri), /protections\[0\]\.watch\.policy.*protection "web": automatic failover of protection "web" would start its DR copy on the source's own host/);
  });

  it('takes confirm on any protection, and automatic onto another host', async () => {
    for (const web of ['    watch: { policy: confirm }\n', '    watch: { policy: automatic, interval: 1s, missed: 3 }\n']) {
      const { result } = await check(yaml(web));
      assert.equal(result.code, 0, result.stderr);
    }
    // confirm on a plan whose db fails over onto its own host: a person decides, so it may.
    const { result } = await check(yaml('', '    watch: { policy: confirm }\n'));
    assert.equal(result.code, 0, result.stderr);
  });

  it('refuses a protection watched twice (by itself and by its plan)', async () => {
    await refused(yaml('    watch: {}\n', '    watch: {}\n'), /plans\[0\]\.watch.*protection "web" is already watched by protection "web": give its watch in one place/);
  });
});
