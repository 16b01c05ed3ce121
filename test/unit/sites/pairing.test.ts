/**
 * Sites authenticate each other (issue 10, item 2): a DR site's endpoint over real HTTPS on
 * loopback with real openssl certificates, three sites' identities (the DR site, its paired source
 * site "prod", a site "cee" paired for its own protection only) and a stranger, and the CLI's
 * `vmdr site` commands (dist/, as an operator runs them).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { parseConfig } from '../../../plugin/config/load.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { ReplicaStore } from '../../../plugin/replication/replica/store.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { ensureIdentity, type SiteIdentity } from '../../../plugin/sites/identity.js';
import { PeerClient } from '../../../plugin/sites/peer-client.js';
import { pairPeer, unpairPeer } from '../../../plugin/sites/peers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { rejectsWith } from '../../helpers/assertions.js';
import { chunks, encodeStream, streamBytes, streamHeader, KiB, MiB } from '../../helpers/receiver-lab.js';

const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', '..', 'dist', 'scripts', 'vmdr.js');

const configYaml = (root: string, port = 8443) => `version: 1
state: { path: ${join(root, 'dr', 'state.db')} }
localSite: dr
sites:
  - { name: prod, uri: "test:///default", endpoint: { listen: "127.0.0.1:8444", credentials: ${join(root, 'prod')} } }
  - { name: cee, uri: "test:///default", endpoint: { listen: "127.0.0.1:8445", credentials: ${join(root, 'cee')} } }
  - name: dr
    uri: "test:///default"
    storage: ${join(root, 'replicas')}
    endpoint: { listen: "127.0.0.1:${port}", credentials: ${join(root, 'dr', 'site')} }
protections:
  - { name: web, source: { site: prod, vm: web }, target: { site: dr, vm: web-dr, nics: [{ network: n }] } }
  - { name: cweb, source: { site: cee, vm: cweb }, target: { site: dr, vm: cweb-dr, nics: [{ network: n }] } }
`;

describe('sites pair and authenticate each other (mutual TLS, pinned certificates)', function () {
  this.timeout(60_000);
  let root: string;
  let dr: SiteIdentity;
  let prod: SiteIdentity;
  let cee: SiteIdentity;
  let stranger: SiteIdentity;
  let state: StateStore;
  let app: FastifyInstance;
  let url: string;
  const clients: { close(): void }[] = [];
  /** The ReceiverClient site `as` uses to call the DR site, trusting `pinned` as the DR site's certificate. */
  const clientOf = (as: SiteIdentity, pinned = dr.cert) => {
    const c = new ReceiverClient(url, 'dr', { cert: as.cert, key: as.key, pinned });
    clients.push(c);
    return c;
  };
  const oneStream = (protection: string) =>
    chunks(streamBytes(encodeStream(streamHeader({ protection, disks: [{ name: 'vda', sizeBytes: MiB }], base: null, n: 1 }), [{ kind: 'data', disk: 0, offset: 0, data: Buffer.alloc(64 * KiB, 7) }])));

  /** One request on its own connection, with the client certificate given (or none). */
  function raw(path: string, as: SiteIdentity | null): Promise<{ status: number; text: string; connection: string | undefined }> {
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, url), { ca: dr.cert, agent: false, ...(as ? { cert: as.cert, key: as.key } : {}) });
      req.on('error', reject);
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection }));
      });
      req.end();
    });
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-pairing-'));
    [dr, prod, cee, stranger] = await Promise.all([
      ensureIdentity(join(root, 'dr', 'site'), 'dr', ['127.0.0.1']),
      ensureIdentity(join(root, 'prod'), 'prod'),
      ensureIdentity(join(root, 'cee'), 'cee'),
      ensureIdentity(join(root, 'stranger'), 'stranger'),
    ]);
    await pairPeer(dr, 'dr', 'prod', prod.cert, { file: 'prod.crt', fingerprint: prod.fingerprint });
    await pairPeer(dr, 'dr', 'cee', cee.cert, { file: 'cee.crt' });
    const config = parseConfig(configYaml(root), join(root, 'vmdr.yaml'));
    state = StateStore.open(join(root, 'dr', 'state.db'));
    let port: number;
    ({ app, port } = await startReceiver({ config, site: 'dr', replicas: new ReplicaStore(join(root, 'replicas'), state), credentials: dr }, { host: '127.0.0.1', port: 0 }));
    url = `https://127.0.0.1:${port}`;
  });

  after(async () => {
    for (const c of clients) c.close();
    await app?.close();
    state?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('a paired source site writes and reads its protection', async () => {
    const client = clientOf(prod);
    assert.equal(await client.latestPoint('web'), undefined);
    const point = await client.sendCycle('web', oneStream('web'));
    assert.equal(point.id, 'rp-1');
    assert.equal((await client.latestPoint('web'))?.id, 'rp-1');
  });

  it('refuses a client whose certificate is not pinned, and one without a certificate: 401 PEER_UNKNOWN, connection closed', async () => {
    for (const as of [stranger, null]) {
      const answer = await raw('/v1/protections/web/points/latest', as);
      assert.equal(answer.status, 401, answer.text);
      assert.equal((JSON.parse(answer.text) as { error: { code: string } }).error.code, 'PEER_UNKNOWN');
      assert.equal(answer.connection, 'close');
      assert.ok(!answer.text.includes('web'), `the refusal names the protection: ${answer.text}`);
    }
    await rejectsWith(clientOf(stranger).sendCycle('web', oneStream('web')), 'PEER_UNKNOWN');
  });

  it("a site paired as cee neither writes nor reads prod's protection: answered as a protection that does not exist", async () => {
    const asCee = clientOf(cee);
    const err = await rejectsWith(asCee.latestPoint('web'), 'PROTECTION_UNKNOWN');
    await rejectsWith(asCee.sendCycle('web', oneStream('web')), 'PROTECTION_UNKNOWN');
    await rejectsWith(asCee.listPoints('web'), 'PROTECTION_UNKNOWN');
    await rejectsWith(asCee.hashes('web', 'rp-1', 'vda', 64 * KiB), 'PROTECTION_UNKNOWN');
    const unknown = await rejectsWith(asCee.latestPoint('nowhere'), 'PROTECTION_UNKNOWN');
    assert.equal(err.message, unknown.message.replace('nowhere', 'web'), 'the two answers differ beyond the name');
    const [theirs, none] = [await raw('/v1/protections/web/points/latest', cee), await raw('/v1/protections/nowhere/points/latest', cee)];
    assert.equal(theirs.status, 404);
    assert.equal(theirs.text, none.text.replaceAll('nowhere', 'web'));
    // Its own protection it may ask about; prod's replica did not change.
    assert.equal(await asCee.latestPoint('cweb'), undefined);
    await rejectsWith(clientOf(prod).latestPoint('cweb'), 'PROTECTION_UNKNOWN');
    assert.equal((await clientOf(prod).listPoints('web')).length, 1);
  });

  it('a client refuses an endpoint that presents another certificate than the one pinned: PEER_UNTRUSTED', async () => {
    // A self-signed certificate for the very same name and address, made by the same tool.
    const impostor = await ensureIdentity(join(root, 'impostor'), 'dr', ['127.0.0.1']);
    const err = await rejectsWith(clientOf(prod, impostor.cert).latestPoint('web'), 'PEER_UNTRUSTED');
    assert.equal(err.subject.site, 'dr');
    const peer = new PeerClient(url, 'dr', { cert: prod.cert, key: prod.key, pinned: impostor.cert });
    clients.push(peer);
    await rejectsWith(peer.json('GET', '/v1/protections/web/points'), 'PEER_UNTRUSTED');
  });

  it('an unpaired site is refused from its next request on, without a restart', async () => {
    const client = clientOf(cee);
    assert.equal(await client.latestPoint('cweb'), undefined);
    assert.equal(await unpairPeer(dr.dir, 'cee'), true);
    await rejectsWith(client.latestPoint('cweb'), 'PEER_UNKNOWN');
    await pairPeer(dr, 'dr', 'cee', cee.cert, { file: 'cee.crt' });
    assert.equal(await client.latestPoint('cweb'), undefined);
  });

  it('keeps the key 0600 and the credentials and peers directories 0700', async () => {
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    assert.equal(await mode(dr.dir), 0o700);
    assert.equal(await mode(join(dr.dir, 'tls.key')), 0o600);
    assert.equal(await mode(join(dr.dir, 'peers')), 0o700);
    assert.equal(await mode(join(dr.dir, 'peers', 'prod.crt')), 0o600);
  });

  describe('vmdr site', () => {
    const vmdr = (args: string[]) =>
      exec(process.execPath, [CLI, '--config', join(root, 'vmdr.yaml'), ...args]).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
      );
    let prodCert: string;

    before(async () => {
      await writeFile(join(root, 'vmdr.yaml'), configYaml(root));
      prodCert = join(root, 'prod-from-show.crt');
    });

    it('show prints the site, its endpoint and its certificate; pair with the fingerprint pins it', async () => {
      const shown = await vmdr(['site', 'show', '--site', 'prod', '--json']);
      assert.equal(shown.code, 0, shown.stderr);
      const show = JSON.parse(shown.stdout) as { site: string; url: string; fingerprint: string; certificate: string };
      assert.deepEqual([show.site, show.url, show.fingerprint], ['prod', 'https://127.0.0.1:8444', prod.fingerprint]);
      assert.ok(!shown.stdout.includes('PRIVATE KEY'), 'show prints the key');
      await writeFile(prodCert, show.certificate);
      await unpairPeer(dr.dir, 'prod');
      const paired = await vmdr(['site', 'pair', 'prod', '--cert', prodCert, '--fingerprint', show.fingerprint.toLowerCase()]);
      assert.equal(paired.code, 0, paired.stderr);
      assert.equal(paired.stdout, `site dr: paired with site prod, certificate ${prod.fingerprint}\n`);
      assert.equal((await readFile(join(dr.dir, 'peers', 'prod.crt'), 'utf8')).trim(), show.certificate.trim());
      assert.equal((await clientOf(prod).listPoints('web')).length, 1);
    });

    it('pair refuses a wrong fingerprint, this site\'s own certificate and one pinned for another site: one line, exit 1, nothing pinned', async () => {
      const before = await readFile(join(dr.dir, 'peers', 'prod.crt'), 'utf8');
      const wrong = `SHA256:${'AB:'.repeat(31)}AB`;
      const ownCert = join(dr.dir, 'tls.crt');
      for (const [args, pattern] of [
        [['site', 'pair', 'prod', '--cert', prodCert, '--fingerprint', wrong], /^vmdr: the certificate in .*prod-from-show\.crt has fingerprint SHA256:[0-9A-F:]{95}, not the SHA256:AB:AB:.* given: nothing pinned\n$/],
        [['site', 'pair', 'prod', '--cert', ownCert], /^vmdr: .*tls\.crt is the certificate of this site \("dr"\), not of site "prod"\n$/],
        [['site', 'pair', 'cee', '--cert', prodCert], /^vmdr: the certificate in .* is already pinned for site "prod"; unpair it first\n$/],
        [['site', 'pair', 'prod', '--cert', join(root, 'missing.crt')], /^vmdr: cannot read the certificate of site "prod" from .*missing\.crt: ENOENT\n$/],
      ] as const) {
        const r = await vmdr([...args]);
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
        assert.match(r.stderr, pattern);
        assert.equal(r.stderr.split('\n').length, 2, `more than one line: ${r.stderr}`);
      }
      assert.equal(await readFile(join(dr.dir, 'peers', 'prod.crt'), 'utf8'), before);
      assert.equal(await readFile(join(dr.dir, 'peers', 'cee.crt'), 'utf8').then((t) => t.includes('BEGIN CERTIFICATE')), true);
    });

    it('unpair removes the pin; a second unpair says the sites are not paired', async () => {
      assert.equal((await vmdr(['site', 'unpair', 'cee'])).code, 0);
      const again = await vmdr(['site', 'unpair', 'cee']);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /^vmdr: site "cee" is not paired with site "dr" \(run `vmdr site show` on site "cee", then `vmdr site pair cee/);
    });
  });

  it('the peer client streams a request body and reads an NDJSON answer line by line, from an endpoint that sees its certificate', async () => {
    const { createServer } = await import('node:https');
    const server = createServer({ cert: dr.cert, key: dr.key, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const fingerprint = (req.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256;
      let size = 0;
      req.on('data', (c: Buffer) => (size += c.length));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        // Lines cut across writes: the client joins them.
        res.write(`{"step":1,"of":2}\n{"step":2,`);
        setTimeout(() => res.end(`"of":2}\n{"result":{"bytes":${size},"client":"SHA256:${fingerprint}"}}\n`), 20);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { Readable } = await import('node:stream');
    const peer = new PeerClient(`https://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`, 'dr', { cert: prod.cert, key: prod.key, pinned: dr.cert });
    try {
      const lines: unknown[] = [];
      for await (const line of peer.ndjson('POST', '/progress', { body: Readable.from([Buffer.alloc(3 * MiB, 1)]), type: 'application/octet-stream' })) lines.push(line);
      assert.deepEqual(lines, [{ step: 1, of: 2 }, { step: 2, of: 2 }, { result: { bytes: 3 * MiB, client: prod.fingerprint } }]);
    } finally {
      peer.close();
      server.close();
    }
  });

  it('reads `receiver:` as the older spelling of `endpoint:`, and refuses both at once', () => {
    const older = parseConfig(configYaml(root).replace('endpoint: { listen: "127.0.0.1:8443"', 'receiver: { listen: "127.0.0.1:8443"'), 'vmdr.yaml');
    assert.equal(older.sites.find((s) => s.name === 'dr')!.endpoint!.listen, '127.0.0.1:8443');
    assert.throws(
      () => parseConfig(configYaml(root).replace('endpoint: { listen: "127.0.0.1:8443"', 'receiver: { listen: "127.0.0.1:1" }\n    endpoint: { listen: "127.0.0.1:8443"'), 'vmdr.yaml'),
      /sites\[2\]\.receiver: the older spelling of "endpoint": give only one of them/,
    );
  });
});
