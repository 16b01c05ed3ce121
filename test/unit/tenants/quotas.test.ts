/**
 * A tenant's storage directory and quotas on the DR site, held to real parts: the receiver over
 * HTTPS on loopback with the ReceiverClient a source host uses, SQLite, qemu-nbd and qemu-img.
 * What is checked is what a user would: where the replica's files are and their modes, the
 * error code and message a refused cycle brings back, that the replica stays at its newest point
 * with its bytes, and that `du` agrees with the usage reported.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { ReplicaStore, type RecoveryPoint } from '../../../plugin/replication/replica/store.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import type { StreamHeader } from '../../../plugin/replication/stream/format.js';
import { ensureIdentity, type SiteIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { StateStore } from '../../../plugin/state/store.js';
import { tenantUsage } from '../../../plugin/tenants/usage.js';
import { rejectsWith } from '../../helpers/assertions.js';
import {
  DiskModel,
  MiB,
  assertPointHolds,
  chunks,
  encodeStream,
  receiverConfigYaml,
  streamBytes,
  streamHeader,
  type DiskSpec,
  type Op,
  type ProtectionSpec,
} from '../../helpers/receiver-lab.js';

const exec = promisify(execFile);
const DISKS: DiskSpec[] = [{ name: 'vda', sizeBytes: 32 * MiB }];
/** 16 MiB: a first cycle of 6 MiB fits, a second of 12 MiB does not. */
const QUOTA_GIB = 16 / 1024;

/** A patterned write of `length` bytes at `offset` of vda. */
const write = (offset: number, length: number, byte: number): Op => ({ kind: 'data', disk: 0, offset, data: Buffer.alloc(length, byte) });

/** What `du` says the files under `dir` occupy, in bytes. */
async function du(dir: string): Promise<number> {
  const { stdout } = await exec('sh', ['-c', 'find "$1" -type f -print0 | du -c --block-size=1 --files0-from=- | tail -n 1', 'du', dir]);
  return Number(stdout.split('\t')[0]);
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
}

/** A receiver of site `dr` on `root`'s storage and state, for `protections` and `tenants` (YAML list items). */
class Site {
  app!: FastifyInstance;
  client!: ReceiverClient;
  config!: Config;
  replicas!: ReplicaStore;
  state!: StateStore;
  private cycle = 0;
  readonly models = new Map<string, DiskModel>();

  constructor(
    readonly root: string,
    private readonly credentials: SiteIdentity,
  ) {}

  get storage(): string {
    return join(this.root, 'replicas');
  }

  async start(protections: ProtectionSpec[], tenants: string): Promise<void> {
    const statePath = join(this.root, 'state', 'vmdr.db');
    const yaml = receiverConfigYaml({ statePath, storage: this.storage, listen: '127.0.0.1:8443', credentials: this.credentials.dir, protections, tenants });
    this.config = parseConfig(yaml, join(this.root, 'vmdr.yaml'));
    this.state = StateStore.open(statePath);
    this.replicas = new ReplicaStore(this.storage, this.state, { config: this.config });
    const { app, port } = await startReceiver({ config: this.config, site: 'dr', replicas: this.replicas, credentials: this.credentials }, { host: '127.0.0.1', port: 0 });
    this.app = app;
    this.client = new ReceiverClient(`https://127.0.0.1:${port}`, 'dr', asThisSite(this.credentials));
  }

  async stop(): Promise<void> {
    this.client?.close();
    await this.app?.close();
    this.state?.close();
  }

  /** Ships one cycle of `protection` on its newest point; `announce` overrides the header's dataBytes (null: none, as an older sender). */
  async sync(protection: string, ops: Op[], announce?: number | null): Promise<RecoveryPoint> {
    this.cycle += 1;
    const newest = this.replicas.latestPoint(protection);
    const header: StreamHeader = streamHeader({ protection, disks: DISKS, base: newest?.id ?? null, n: this.cycle });
    const data = ops.reduce((sum, op) => sum + (op.kind === 'data' ? op.data.length : 0), 0);
    if (announce !== null) header.dataBytes = announce ?? data;
    const point = await this.client.sendCycle(protection, chunks(streamBytes(encodeStream(header, ops))));
    this.models.set(`${protection}/${point.id}`, (newest ? this.model(newest) : DiskModel.empty(DISKS)).after(ops));
    return point;
  }

  /** The bytes `point` must hold. */
  model(point: RecoveryPoint): DiskModel {
    return this.models.get(`${point.protection}/${point.id}`)!;
  }
}

describe("tenants' storage directories and quotas on the DR site (real receiver, qemu-nbd, SQLite)", function () {
  this.timeout(60_000);
  let root: string;
  let credentials: SiteIdentity;
  let site: Site;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-quotas-'));
    credentials = await ensureIdentity(join(root, 'receiver'), 'dr');
  });
  after(async () => {
    await site?.stop();
    await rm(root, { recursive: true, force: true });
  });
  afterEach(async () => site?.stop());

  const fresh = async (name: string, protections: ProtectionSpec[], tenants: string) => {
    site = new Site(join(root, name), credentials);
    await site.start(protections, tenants);
    return site;
  };

  describe('the config', () => {
    const yaml = (tenants: string, protections: ProtectionSpec[], name = 'cfg') =>
      receiverConfigYaml({ statePath: join(root, name, 'state.db'), storage: join(root, name, 'replicas'), listen: '127.0.0.1:8443', credentials: credentials.dir, protections, tenants });

    it('refuses a tenant with more protections than quota.vms, naming the path', () => {
      const tenants = '  - { name: acme, quota: { vms: 1 } }';
      assert.doesNotThrow(() => parseConfig(yaml(tenants, [{ name: 'web', tenant: 'acme' }, { name: 'other' }]), 'vmdr.yaml'));
      assert.throws(
        () => parseConfig(yaml(tenants, [{ name: 'web', tenant: 'acme' }, { name: 'other' }, { name: 'db', tenant: 'acme' }]), 'vmdr.yaml'),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'CONFIG_INVALID');
          assert.match(err.message, /^vmdr\.yaml.*protections\[2\]\.tenant: tenant "acme" may have 1 protected VM \(quota\.vms\): protection "db" is its 2nd$/);
          return true;
        },
      );
    });

    it('refuses a protection named "tenants": it would be the directory of the tenants', () => {
      assert.throws(() => parseConfig(yaml('', [{ name: 'tenants' }]), 'vmdr.yaml'), /protections\[0\]\.name: "tenants" is reserved/);
    });
  });

  describe('where a replica lives', () => {
    it("a tenant's replica is under tenants/<tenant>/, 0700 directories and 0600 images; one without a tenant at the top", async () => {
      // vmdr's own (scripts/vmdr.ts): qemu-img makes the images through it.
      const umask = process.umask(0o077);
      try {
        await fresh('layout', [{ name: 'web', tenant: 'acme' }, { name: 'plain' }], '  - { name: acme }');
        await site.sync('web', [write(0, MiB, 0x11)]);
      } finally {
        process.umask(umask);
      }
      const web = site.replicas.latestPoint('web')!;
      const plain = await site.sync('plain', [write(0, MiB, 0x22)]);
      assert.equal(web.disks[0]!.image, join(site.storage, 'tenants', 'acme', 'web', 'vda', 'point-1.qcow2'));
      assert.equal(plain.disks[0]!.image, join(site.storage, 'plain', 'vda', 'point-1.qcow2'));
      await assertPointHolds(web, site.model(web), DISKS);
      for (const dir of ['tenants', 'tenants/acme', 'tenants/acme/web', 'tenants/acme/web/vda']) {
        assert.equal((await stat(join(site.storage, dir))).mode & 0o777, 0o700, `${dir} is 0700`);
      }
      for (const file of await filesUnder(join(site.storage, 'tenants'))) assert.equal((await stat(file)).mode & 0o777, 0o600, `${file} is 0600`);

      // What a crash leaves in a tenant's replica is found there when the receiver starts again.
      const stray = join(site.storage, 'tenants', 'acme', 'web', 'vda', 'point-9.qcow2');
      await copyFile(web.disks[0]!.image, stray);
      await site.stop();
      await site.start([{ name: 'web', tenant: 'acme' }, { name: 'plain' }], '  - { name: acme }');
      // (with the overlays made ahead for the next points, which a restart discards too)
      assert.ok((await site.replicas.recover()).discarded.includes(stray));
      await assert.rejects(stat(stray), { code: 'ENOENT' });
    });

    it('a replica made before tenants had directories keeps working where it is', async () => {
      // Made when the protection had no tenant (or by a vmdr before this change): at the top.
      await fresh('legacy', [{ name: 'web' }], '  - { name: acme }');
      const first = await site.sync('web', [write(0, MiB, 0x33)]);
      await site.stop();
      // The protection is now the tenant's: its points stay readable, the next one joins them.
      await site.start([{ name: 'web', tenant: 'acme' }], '  - { name: acme }');
      assert.equal(site.replicas.latestPoint('web')!.disks[0]!.image, first.disks[0]!.image);
      const second = await site.sync('web', [write(MiB, MiB, 0x44)]);
      assert.equal(second.disks[0]!.image, join(site.storage, 'web', 'vda', 'point-2.qcow2'));
      await assertPointHolds(second, site.model(second), DISKS);
      await assert.rejects(stat(join(site.storage, 'tenants', 'acme', 'web')), { code: 'ENOENT' });
      // Counted as the tenant's all the same.
      assert.equal((await tenantUsage(site.storage, site.config)).get('acme'), await du(join(site.storage, 'web')));
    });
  });

  describe('quota.storageGiB', () => {
    const tenants = `  - { name: acme, quota: { storageGiB: ${QUOTA_GIB} } }`;

    it('refuses a cycle that would pass it before writing anything; the next one fits after the quota is raised', async () => {
      await fresh('storage', [{ name: 'web', tenant: 'acme' }, { name: 'db', tenant: 'acme' }], tenants);
      const first = await site.sync('web', [write(0, 6 * MiB, 0x55)]);
      const dir = join(site.storage, 'tenants', 'acme');
      const used = await du(dir);
      assert.equal((await tenantUsage(site.storage, site.config)).get('acme'), used, 'usage is what du says');
      assert.ok(used >= 6 * MiB && used < 7 * MiB, `6 MiB written occupy ${used} bytes`);
      const before = await filesUnder(dir);

      const err = await rejectsWith(site.sync('web', [write(8 * MiB, 12 * MiB, 0x66)]), 'QUOTA_EXCEEDED');
      assert.match(err.message, new RegExp(`^tenant "acme" would pass its storage quota on site "dr": its replicas use ${used} bytes of ${Math.floor(QUOTA_GIB * 1024 ** 3)} \\(quota.storageGiB ${QUOTA_GIB}\\), and this cycle of protection "web" brings ${12 * MiB}$`));
      assert.equal(err.subject.tenant, 'acme');
      assert.deepEqual([err.subject.usedBytes, err.subject.cycleBytes], [used, 12 * MiB]);
      // The other protection of the tenant shares the room.
      await rejectsWith(site.sync('db', [write(0, 12 * MiB, 0x67)]), 'QUOTA_EXCEEDED');
      // Nothing written, nothing committed: the same files, the newest point the first, its bytes intact.
      assert.deepEqual(await filesUnder(dir), before);
      assert.equal(site.replicas.latestPoint('web')!.id, first.id);
      assert.equal(site.replicas.latestPoint('db'), undefined);
      await assertPointHolds(first, site.model(first), DISKS);

      // Raised (the config edited, the receiver restarted): the same cycle goes through.
      await site.stop();
      await site.start([{ name: 'web', tenant: 'acme' }, { name: 'db', tenant: 'acme' }], '  - { name: acme, quota: { storageGiB: 1 } }');
      const second = await site.sync('web', [write(8 * MiB, 12 * MiB, 0x66)]);
      await assertPointHolds(second, site.model(second), DISKS);
    });

    it('holds a sender to what it announced, and checks one that announced nothing by the space used', async () => {
      await fresh('announce', [{ name: 'web', tenant: 'acme' }], tenants);
      // Announcing less than it sends would slip past the quota: the stream fails, nothing is committed.
      await rejectsWith(site.sync('web', [write(0, 2 * MiB, 0x77)], MiB), 'STREAM_BAD_FRAME');
      assert.equal(site.replicas.latestPoint('web'), undefined);
      // An older sender says nothing: admitted while the tenant is under its quota, refused once it is at it.
      await site.sync('web', [write(0, 17 * MiB, 0x78)], null);
      await rejectsWith(site.sync('web', [write(0, MiB, 0x79)], null), 'QUOTA_EXCEEDED');
    });
  });

  describe('quota.vms', () => {
    it("refuses a tenant's new protected VM while the site holds replicas of as many, even of protections no longer in the config", async () => {
      const tenants = '  - { name: acme, quota: { vms: 1 } }';
      await fresh('vms', [{ name: 'web', tenant: 'acme' }], tenants);
      await site.sync('web', [write(0, MiB, 0x88)]);
      await site.stop();
      // web left the config, its replica (and points) stayed; db takes its place in the config.
      await site.start([{ name: 'db', tenant: 'acme' }], tenants);
      const recorded = await rejectsWith(site.client.recordSource('db', { uuid: '00000000-0000-4000-8000-000000000001', vm: 'db' }), 'QUOTA_EXCEEDED');
      assert.match(recorded.message, /^tenant "acme" may have 1 protected VM \(quota\.vms\) and site "dr" holds replicas of 1 \(web\): protection "db" is refused$/);
      await rejectsWith(site.sync('db', [write(0, MiB, 0x89)]), 'QUOTA_EXCEEDED');
      assert.equal(site.replicas.latestPoint('db'), undefined);
      await assert.rejects(stat(join(site.storage, 'tenants', 'acme', 'db')), { code: 'ENOENT' });
    });
  });

  it('tenantUsage: bytes per tenant as du counts them, untenanted replicas not counted', async () => {
    await fresh('usage', [{ name: 'a1', tenant: 'acme' }, { name: 'a2', tenant: 'acme' }, { name: 'b1', tenant: 'bravo' }, { name: 'c' }], '  - { name: acme }\n  - { name: bravo }');
    await site.sync('a1', [write(0, 3 * MiB, 1)]);
    await site.sync('a2', [write(0, MiB, 2)]);
    await site.sync('b1', [write(0, 2 * MiB, 3)]);
    await site.sync('c', [write(0, 4 * MiB, 4)]);
    await mkdir(join(site.storage, 'tenants', 'empty'), { recursive: true });
    const usage = await tenantUsage(site.storage, site.config);
    assert.deepEqual([...usage.keys()].sort(), ['acme', 'bravo']);
    assert.equal(usage.get('acme'), await du(join(site.storage, 'tenants', 'acme')));
    assert.equal(usage.get('bravo'), await du(join(site.storage, 'tenants', 'bravo')));
  });
});
