/** A target's DR identity and the instance id that names it: the same config, the same id; any change, a new one. */
import assert from 'node:assert/strict';
import { parseConfig } from '../../../plugin/config/load.js';
import { targetIdentity } from '../../../plugin/targets/identity.js';
import { checkGuestIdentity } from '../../../hypervisors/guest-identity.js';

const protection = (target: string) =>
  parseConfig(
    `version: 1
sites:
  - { name: prod, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: /tmp/vmdr-unused }
protections:
  - name: web
    source: { site: prod, vm: web }
    target:
      site: dr
${target}
`,
    'test.yaml',
  ).protections[0]!;

const base = `      vm: web-dr
      hostname: web.example
      boot: { kind: disk }
      nics: [{ mac: "52:54:00:AA:00:01", network: default, addresses: [192.0.2.10/24], gateway: 192.0.2.1, dns: [192.0.2.53] }]`;

describe('target identity', () => {
  it('is the config’s: hostname, NICs (MACs lower-case), and an instance id the adapter accepts', () => {
    const identity = targetIdentity(protection(base));
    assert.match(identity.instanceId, /^vmdr-web-dr-[0-9a-f]{16}$/);
    assert.equal(identity.hostname, 'web.example');
    assert.deepEqual(identity.nics, [{ mac: '52:54:00:aa:00:01', network: 'default', addresses: ['192.0.2.10/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] }]);
    checkGuestIdentity('web-dr', identity);
  });

  it('gives the same config the same instance id, and a new one for any change of what the guest is given', () => {
    const id = (text: string) => targetIdentity(protection(text)).instanceId;
    assert.equal(id(base), id(base));
    assert.equal(id(base), id(base.replace('52:54:00:AA', '52:54:00:aa')), 'a MAC is the same MAC in either case');
    const changes = [
      base.replace('hostname: web.example', 'hostname: web2.example'),
      base.replace('52:54:00:AA:00:01', '52:54:00:AA:00:02'),
      base.replace('192.0.2.10/24', '192.0.2.11/24'),
      base.replace('gateway: 192.0.2.1', 'gateway: 192.0.2.254'),
      base.replace('dns: [192.0.2.53]', 'dns: [192.0.2.54]'),
      base.replace('network: default', 'network: other'),
      // A drill's own VM: never the target's seed.
      base.replace('vm: web-dr', 'vm: web-dr-drill-abc123'),
    ];
    const ids = new Set([id(base), ...changes.map(id)]);
    assert.equal(ids.size, changes.length + 1);
  });
});
