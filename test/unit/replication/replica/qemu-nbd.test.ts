import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { rejectsWith } from '../../../helpers/assertions.js';
import { serveImage } from '../../../../plugin/replication/replica/qemu-nbd.js';
import { KiB, MiB, makeLab, reads, type Lab } from './helpers.js';

const exec = promisify(execFile);

describe('replica store: serveImage (qemu-nbd)', function () {
  this.timeout(60_000);
  let lab: Lab;
  beforeEach(async () => {
    lab = await makeLab();
  });
  afterEach(async () => {
    await lab.cleanup();
  });

  it('serves a pending overlay writable over a unix socket; writes land in the overlay; stop is safe twice', async () => {
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    const image = pending.overlays[0]!.image;
    const served = await serveImage(image);
    const uri = `nbd+unix:///?socket=${served.listen.socket}`;
    try {
      assert.equal(served.listen.transport, 'unix');
      const { stdout } = await exec('nbdinfo', ['--json', uri]);
      assert.equal((JSON.parse(stdout) as { exports: { 'export-size': number }[] }).exports[0]!['export-size'], 16 * MiB);
      await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', uri]);
      // --persistent: a second client after the first one left.
      await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x43 2M 64k', uri]);
    } finally {
      await served.stop();
      await served.stop();
    }
    assert.equal(existsSync(dirname(served.listen.socket)), false, 'the socket directory is removed');
    assert.ok(await reads(image, 0x42, 1 * MiB, 64 * KiB));
    assert.ok(await reads(image, 0x43, 2 * MiB, 64 * KiB));
    const point = await pending.commit({ time: new Date(), checkpoint: 'c1', since: null, kind: 'full', bytesShipped: 0, dataBytes: 128 * KiB, zeroBytes: 0 });
    assert.ok(await reads(point.disks[0]!.image, 0x42, 1 * MiB, 64 * KiB));
  });

  it('serves read-only when asked', async () => {
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 4 * MiB }]);
    const served = await serveImage(pending.overlays[0]!.image, { readOnly: true });
    try {
      const uri = `nbd+unix:///?socket=${served.listen.socket}`;
      await assert.rejects(exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', uri]));
      await exec('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 64k', uri]);
    } finally {
      await served.stop();
      await pending.discard();
    }
  });

  it('says why when the image cannot be served', async () => {
    const missing = join(lab.root, 'no-such.qcow2');
    const err = await rejectsWith(serveImage(missing), 'IMAGE_OPERATION_FAILED');
    assert.equal(err.subject.file, missing);
    assert.match(err.message, /no-such\.qcow2.*(No such file|Could not open)/);
    const notQcow2 = join(lab.root, 'raw.img');
    await exec('qemu-img', ['create', '-q', '-f', 'raw', notQcow2, '1M']);
    const err2 = await rejectsWith(serveImage(notQcow2), 'IMAGE_OPERATION_FAILED');
    assert.match(err2.message, /qcow2|format/i);
  });
});
