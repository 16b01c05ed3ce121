/**
 * The hook's decision (scripts/hooks/libvirt-qemu, as libvirtd runs it before a QEMU launch) for
 * a source VM labelled source-of: a valid start lease lets it start, a missing or expired one
 * refuses it with one line naming the VM and the override, and leaves the mark the daemon starts a
 * held autostart by; vmdr's start token lets it through; a fenced VM needs the token whatever its
 * lease. The lease files are the adapter's own (StartLeaseFiles), in this host's /run/vmdr.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildXml } from '../../../hypervisors/libvirt/xml.js';
import { labelsElement } from '../../../hypervisors/libvirt/labels.js';
import { START_REFUSED_DIR, StartLeaseFiles } from '../../../hypervisors/libvirt/start-lease.js';
import { START_TOKEN_DIR } from '../../../hypervisors/libvirt/start-token.js';

const HOOK = join(import.meta.dirname, '..', '..', '..', 'scripts', 'hooks', 'libvirt-qemu');

function hook(domain: string, labels: Record<string, string>): Promise<{ code: number | null; stderr: string; ms: number }> {
  const xml = `<domain type='qemu'><name>${domain}</name><metadata>${buildXml(labelsElement(labels))}</metadata></domain>`;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/bash', [HOOK, domain, 'prepare', 'begin', '-'], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr, ms: performance.now() - started }));
    child.stdin.end(xml);
  });
}

describe('the start guard of a source in the qemu hook', () => {
  const domain = `test-sgh-${process.pid.toString(36)}`;
  const leases = new StartLeaseFiles();
  const source = { 'source-of': 'web' };
  const clean = async () => {
    await leases.revoke(domain);
    await leases.clearRefused(domain);
    await rm(join(START_TOKEN_DIR, domain), { force: true });
  };
  beforeEach(clean);
  after(clean);

  it('refuses a source with no lease, with one line naming the VM and the override, and marks it refused', async () => {
    const r = await hook(domain, source);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `vmdr: VM ${domain} is the source of protection web, which its DR site may have failed over, and it holds no start lease: ` +
        'vmdr serve on this host grants it one when the DR site answers that web is not failed over (and then starts the VM if this was its autostart); ' +
        'to let it start without that answer: "vmdr allow-start web"\n',
    );
    assert.deepEqual((await leases.refused()).filter((n) => n === domain), [domain]);
    assert.ok(r.ms < 1000, `the hook took ${r.ms} ms`);
  });

  it('lets a source with a valid lease start, and refuses one whose lease ran out, saying when', async () => {
    await leases.grant(domain, new Date(Date.now() + 60_000));
    assert.equal((await hook(domain, source)).code, 0);
    assert.ok(!(await leases.refused()).includes(domain));

    const past = new Date(Math.floor(Date.now() / 1000) * 1000 - 5_000);
    await leases.grant(domain, past);
    const r = await hook(domain, source);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`and its start lease ran out at ${past.toISOString().replace('.000Z', 'Z')}: `), r.stderr);
  });

  it("lets vmdr's own start through with its token, lease or not", async () => {
    await mkdir(START_TOKEN_DIR, { recursive: true, mode: 0o700 });
    await writeFile(join(START_TOKEN_DIR, domain), '1\n', { mode: 0o600 });
    assert.equal((await hook(domain, source)).code, 0);
    assert.ok(!existsSync(join(START_TOKEN_DIR, domain)), 'the token is used up');
    assert.equal((await hook(domain, source)).code, 1);
  });

  it('refuses a fenced source whatever its lease, and lets it through with the token', async () => {
    const fenced = { ...source, role: 'fenced', protection: 'web', failover: 'fo-1' };
    await leases.grant(domain, new Date(Date.now() + 60_000));
    const r = await hook(domain, fenced);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^vmdr: VM ${domain} is the fenced source of protection web, failed over to its DR site \\(fo-1\\)`));
    await writeFile(join(START_TOKEN_DIR, domain), '1\n', { mode: 0o600 });
    assert.equal((await hook(domain, fenced)).code, 0);
  });

  it('leaves a VM without the label alone', async () => {
    assert.equal((await hook(domain, { protection: 'web' })).code, 0);
    assert.ok(!existsSync(join(START_REFUSED_DIR, domain)));
  });
});
