/**
 * The warm-up of a failover's sites (scripts/cli/warm-up.ts): which URIs it finds in a config's
 * text, and that warming a libvirt URI starts a call thread with libvirt loaded before any call.
 * What it saves is measured by bench:failover, not here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { configArgument, DEFAULT_CONFIG_FILE } from '../../../scripts/cli/config-argument.js';
import { configuredUris } from '../../../scripts/cli/warm-up.js';

const exec = promisify(execFile);
const DIST = join(import.meta.dirname, '..', '..', '..', 'dist');

describe('warming up a command\'s sites', () => {
  it('finds each site\'s URI, quoted or not, and nothing in comments or other keys', () => {
    const text = [
      'sites:',
      '  dr:',
      '    uri: qemu:///system   # the DR host',
      '  src:',
      '    uri: "qemu+ssh://root@src.example/system?keyfile=/k"',
      '  vc:',
      "    - uri: 'vsphere://vmdr@vcenter.example.com/DC1'",
      '# uri: qemu+tcp://old/system',
      'receiver:',
      '  url: https://dr.example:8443',
    ].join('\n');
    assert.deepEqual(configuredUris(text), ['qemu:///system', 'qemu+ssh://root@src.example/system?keyfile=/k', 'vsphere://vmdr@vcenter.example.com/DC1']);
  });

  it('reads --config in both spellings, else the default', () => {
    assert.equal(configArgument(['node', 'vmdr', 'failover', 'web', '--config', '/etc/vmdr/a.yaml']), '/etc/vmdr/a.yaml');
    assert.equal(configArgument(['node', 'vmdr', 'failover', '--config=/etc/vmdr/b.yaml', 'web']), '/etc/vmdr/b.yaml');
    assert.equal(configArgument(['node', 'vmdr', 'failover', 'web']), DEFAULT_CONFIG_FILE);
  });

  it('starts a libvirt call thread ahead of the first call, and ignores what no adapter takes', async () => {
    // A process of its own: the call pool is one per process.
    const script = `
      const { warmUp } = await import(${JSON.stringify(join(DIST, 'hypervisors', 'load.js'))});
      const { callPool } = await import(${JSON.stringify(join(DIST, 'hypervisors', 'libvirt', 'api', 'pool.js'))});
      const before = callPool.threadCount;
      warmUp(['nfs://nowhere/x', 'test:///default']);
      for (let i = 0; i < 100 && callPool.threadCount === 0; i++) await new Promise((r) => setTimeout(r, 20));
      console.log(JSON.stringify({ before, after: callPool.threadCount }));`;
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script]);
    assert.deepEqual(JSON.parse(stdout), { before: 0, after: 1 });
  });
});
