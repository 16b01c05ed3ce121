/**
 * A libvirt connection vmdr closes is closed, even after a call that failed half way through a
 * list of VMs: every VM handle the list gave is freed (a handle left holds its connection, which
 * virConnectClose then does not close: a libvirtd socket kept open, and on test:///default the
 * driver's state kept for the rest of the process, its VMs as an earlier test file left them).
 * Seen from outside: once every connection of the process is closed, test:///default opens fresh.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { VmdrError } from '../../hypervisors/errors.js';
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';

const URI = 'test:///default';
const domainXml = (name: string) => `<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`;
/** A flag bit libvirt does not know: the test driver refuses the XML of the first VM listed. */
const UNKNOWN_XML_FLAG = 1 << 30;

describe('closing a libvirt connection (test:///default)', () => {
  it('a list of VMs whose read failed half way leaves no VM handle behind: once closed, the driver opens fresh', async () => {
    const name = `test-closing-${randomBytes(3).toString('hex')}`;
    const conn = new LibvirtConnection(URI);
    try {
      // Two VMs listed (the driver's own `test` and this one): the read fails on the first.
      await conn.call({ operation: 'define', vm: name }, 'defineDomain', domainXml(name));
      await assert.rejects(conn.call({ operation: 'list VMs' }, 'describeAllDomains', UNKNOWN_XML_FLAG), (err: unknown) => err instanceof VmdrError);
      await assert.rejects(conn.call({ operation: 'read VMs' }, 'describeDomainsNamed', [name, 'test'], UNKNOWN_XML_FLAG), (err: unknown) => err instanceof VmdrError);
    } finally {
      await conn.close();
    }
    const fresh = new LibvirtConnection(URI);
    try {
      const names = (await fresh.call({ operation: 'list VMs' }, 'describeAllDomains', 0)).map((d) => d.name);
      assert.deepEqual(names, ['test'], `${name} outlived its connection: a handle (or another connection of this process) still holds the driver`);
    } finally {
      await fresh.close();
    }
  });
});
