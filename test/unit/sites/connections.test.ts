/**
 * A host that knows which site it is opens only that site's hypervisor: another site's URI names
 * what that host sees (qemu:///system there), so following it from here would act on the wrong
 * host. Its replica storage is read here only on the DR site itself, whatever paths exist here.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../plugin/config/load.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { assertOneLineError, rejectsWith } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('site connections with localSite', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-sites-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const yaml = (localSite: string | undefined) => `version: 1
${localSite ? `localSite: ${localSite}\n` : ''}state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: source, uri: "test:///default", storage: ${join(dir, 'source')} }
  - { name: dr, uri: "test:///default", storage: ${dir} }
protections:
  - name: web
    source: { site: source, vm: test }
    target: { site: dr, vm: web-dr, nics: [{ network: default }] }
`;

  it("opens this site's hypervisor and refuses another site's, naming both", async () => {
    const sites = new SiteConnections(parseConfig(yaml('source'), 'two.yaml'), 'two.yaml');
    try {
      assert.ok(await sites.adapter('source'));
      const err = await rejectsWith(sites.adapter('dr'), 'SITE_NOT_LOCAL');
      assert.deepEqual(err.subject, { file: 'two.yaml', site: 'dr', localSite: 'source' });
      assert.match(err.message, /site "dr" is another host \(this host is site "source"\)/);
    } finally {
      await sites.close();
    }
  });

  it('holds replica storage by the site it is, not by the paths that exist here', () => {
    // Both storage paths: `dir` exists, `dir/source` does not.
    const at = (local: string | undefined) => new SiteConnections(parseConfig(yaml(local), 'x.yaml'), 'x.yaml');
    assert.equal(at('source').holdsStorage('dr'), false, 'the DR storage path exists here, but this host is the source site');
    assert.equal(at('dr').holdsStorage('dr'), true);
    assert.equal(at(undefined).holdsStorage('dr'), true, 'one host: the path that exists is here');
    assert.equal(at(undefined).holdsStorage('source'), false);
  });

  it('`vmdr target provision` on the source site: one line naming the other host, exit 1', async () => {
    const config = join(dir, 'source.yaml');
    await writeFile(config, yaml('source'));
    assertOneLineError(await runVmdr(['target', 'provision', '--config', config]), /site "dr" is another host \(this host is site "source"\)/);
  });
});
