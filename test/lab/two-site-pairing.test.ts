/**
 * Pairing across the two-site lab: the source site asks the DR site's endpoint over the WAN, as
 * each site's own `vmdr` (its own config with localSite, its own key). A site the DR site unpaired
 * is refused (PEER_UNKNOWN) until the two-command pairing is done again; a DR endpoint that
 * presents another certificate than the one the source pinned is refused by the source
 * (PEER_UNTRUSTED). No VM is needed: `vmdr points` on the source site asks the DR site.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { labScratchDir } from '../helpers/lab.js';
import { twoSites, writeTwoSiteConfigs, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

describe('the two-site lab: sites paired by certificate', function () {
  this.timeout(180_000);
  let lab: TwoSites;
  let dir: string;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  const protection = `test-pair-${process.pid.toString(36)}`;

  const pointsFromSource = (json = true) => lab.source.vmdr(['points', protection, ...(json ? ['--json'] : [])], { config: configs.source });
  const oneLine = (r: { code: number; stderr: string }, pattern: RegExp) => {
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, pattern);
  };
  /** `vmdr site show --json` on `from`, then `vmdr site pair` of it on `on`: the two commands an operator runs. */
  const pair = async (from: 'source' | 'dr', on: 'source' | 'dr') => {
    const shown = await lab[from].vmdr(['site', 'show', '--json'], { config: configs[from] });
    assert.equal(shown.code, 0, shown.stderr);
    const { certificate, fingerprint } = JSON.parse(shown.stdout) as { certificate: string; fingerprint: string };
    const file = join(dir, `${from}-shown.crt`);
    await writeFile(file, certificate);
    const paired = await lab[on].vmdr(['site', 'pair', from, '--cert', file, '--fingerprint', fingerprint], { config: configs[on] });
    assert.equal(paired.code, 0, paired.stderr);
  };

  before(async () => {
    lab = await twoSites();
    dir = await labScratchDir('two-site-pairing');
    configs = await writeTwoSiteConfigs(dir, {
      protections: `  - name: ${protection}
    source: { site: source, vm: ${protection} }
    target: { site: dr, vm: ${protection}-dr, nics: [{ network: default }] }`,
    });
    drServe = await lab.dr.serve(configs.dr);
  });

  after(async () => {
    await drServe?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("the paired source site reads its protection's points on the DR site over the WAN", async () => {
    const r = await pointsFromSource();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), []);
  });

  it('a source site the DR site unpaired is refused until `site show` and `site pair` are run again', async () => {
    const unpaired = await lab.dr.vmdr(['site', 'unpair', 'source'], { config: configs.dr });
    assert.equal(unpaired.code, 0, unpaired.stderr);
    oneLine(await pointsFromSource(false), /^vmdr: site "dr" is not paired with the site presenting certificate SHA256:[0-9A-F:]{95} \(pair the sites/);
    await pair('source', 'dr');
    assert.equal((await pointsFromSource()).code, 0);
  });

  it('the source site refuses a DR endpoint that presents another certificate than the one it pinned', async () => {
    const impostor = await ensureIdentity(join(dir, 'impostor'), 'dr', [lab.dr.wanAddress]);
    const pinned = await lab.source.vmdr(['site', 'pair', 'dr', '--cert', join(impostor.dir, 'tls.crt')], { config: configs.source });
    assert.equal(pinned.code, 0, pinned.stderr);
    oneLine(await pointsFromSource(false), /^vmdr: the endpoint at https:\/\/198\.18\.0\.2:\d+ did not present the certificate pinned for site "dr": /);
    await pair('dr', 'source');
    assert.equal((await pointsFromSource()).code, 0);
  });
});
