/**
 * The frames a hypervisor hands back for a screenshot, read as a hostile guest could make them:
 * a PPM becomes a PNG with the same pixels, and a frame whose header claims more than any screen,
 * or that is not what its header says, is refused from its first bytes.
 */
import assert from 'node:assert/strict';
import { PNG } from 'pngjs';
import { frameLimit, MAX_SCREEN_SIDE, MIME_PNG, MIME_PPM, toPng } from '../../../hypervisors/screenshot-image.js';

const ppm = (width: number, height: number, pixels: number[], header = `P6\n${width} ${height}\n255\n`) => Buffer.concat([Buffer.from(header, 'latin1'), Buffer.from(pixels)]);

function png(width: number, height: number): Buffer {
  const image = new PNG({ width, height });
  image.data.fill(0x7f);
  return PNG.sync.write(image);
}

describe('screenshot frames (PPM and PNG)', () => {
  it('a PPM becomes a PNG with the same pixels, whatever whitespace and comments its header has', () => {
    const pixels = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90];
    for (const header of ['P6\n3 2\n255\n', 'P6 3 2 255 ', 'P6\n# made by a test\n3\t2\r\n255\n']) {
      const image = toPng(MIME_PPM, ppm(3, 2, pixels, header));
      assert.deepEqual([image.width, image.height], [3, 2]);
      const decoded = PNG.sync.read(image.png);
      const rgb = [...decoded.data].filter((_, i) => i % 4 !== 3);
      assert.deepEqual(rgb, pixels, header);
    }
  });

  it('a PPM with 16-bit samples is scaled to 8 bits', () => {
    const samples = Buffer.alloc(6);
    [65535, 0, 32768].forEach((v, i) => samples.writeUInt16BE(v, i * 2));
    const image = toPng(MIME_PPM, Buffer.concat([Buffer.from('P6 1 1 65535\n'), samples]));
    assert.deepEqual([...PNG.sync.read(image.png).data], [255, 0, 128, 255]);
  });

  it('a PNG is kept as it came, with its dimensions', () => {
    const bytes = png(20, 10);
    const image = toPng(MIME_PNG, bytes);
    assert.deepEqual([image.width, image.height], [20, 10]);
    assert.ok(image.png.equals(bytes));
  });

  it('a header larger than any screen is refused from its first bytes, before the pixels arrive', () => {
    const side = MAX_SCREEN_SIDE + 1;
    assert.match((frameLimit(MIME_PPM, Buffer.from(`P6\n${side} 1\n255\n`)) as { refused: string }).refused, /more than 8192 on a side/);
    const header = png(1, 1).subarray(0, 33);
    header.writeUInt32BE(side, 20);
    assert.match((frameLimit(MIME_PNG, header) as { refused: string }).refused, /1x8193, more than 8192/);
    assert.match((frameLimit(MIME_PPM, Buffer.from('P6 0 5 255 ')) as { refused: string }).refused, /empty/);
  });

  it('bounds what a frame may take by its own header, and asks for more bytes only within a header', () => {
    assert.deepEqual(frameLimit(MIME_PPM, Buffer.from('P6 720 400 255\n')), { maxBytes: 15 + 720 * 400 * 3, width: 720, height: 400 });
    assert.deepEqual(frameLimit(MIME_PPM, Buffer.from('P6 720 4')), { more: true });
    assert.match((frameLimit(MIME_PPM, Buffer.from(`P6 ${'#'.repeat(2000)}`)) as { refused: string }).refused, /does not end/);
    assert.deepEqual(frameLimit(MIME_PNG, png(1, 1).subarray(0, 10)), { more: true });
  });

  it('refuses what is not what it says: another type, a bad signature, missing pixels, a corrupt PNG', () => {
    assert.throws(() => toPng('image/jpeg', Buffer.from([0xff, 0xd8])), /"image\/jpeg", not PNG or PPM/);
    assert.throws(() => toPng(MIME_PPM, Buffer.from('P3 1 1 255\n0 0 0')), /not a binary PPM/);
    assert.throws(() => toPng(MIME_PPM, ppm(2, 2, [1, 2, 3])), /3 bytes of pixels where 2x2 needs 12/);
    assert.throws(() => toPng(MIME_PNG, Buffer.from('GIF89a and then some more bytes of it')), /not a PNG/);
    const corrupt = png(4, 4);
    corrupt[corrupt.length - 20] = corrupt[corrupt.length - 20]! ^ 0xff;
    assert.throws(() => toPng(MIME_PNG, corrupt));
  });
});
