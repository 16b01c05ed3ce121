/**
 * The frames a hypervisor hands back for a screenshot of a VM's display (QEMU: PPM, or PNG since
 * QEMU 7.1 with libvirt 9; vSphere: PNG), read without trusting them: the guest chose what is on
 * its screen and how large it is. The header alone says how many bytes the frame may have, so a
 * reader stops at that bound (or refuses the frame) before it has buffered more; every frame
 * becomes a PNG (pngjs), whose dimensions are checked again when it is decoded.
 */
import { createRequire } from 'node:module';
import type * as Pngjs from 'pngjs';

/**
 * pngjs, loaded at the first picture taken: every libvirt call thread loads this module (a
 * screenshot's frame is bounded there, frameLimit), and few of them ever take a picture.
 */
let pngjs: typeof Pngjs.PNG | undefined;
function loadPng(): typeof Pngjs.PNG {
  pngjs ??= (createRequire(import.meta.url)('pngjs') as typeof Pngjs).PNG;
  return pngjs;
}

/** Larger than any real console (8K is 7680 wide): a frame beyond this on either side is refused. */
export const MAX_SCREEN_SIDE = 8192;

export const MIME_PNG = 'image/png';
export const MIME_PPM = 'image/x-portable-pixmap';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** A PPM header longer than this is not one QEMU wrote (it has no comments). */
const MAX_PPM_HEADER = 1024;

export type FrameLimit =
  /** The header is not complete yet: read more (the reader bounds the wait by `headerBytes`). */
  | { more: true }
  | { more?: false; maxBytes: number; width: number; height: number }
  | { more?: false; refused: string };

/** How many bytes a frame's header is read within before the frame is refused. */
export const FRAME_HEADER_BYTES = MAX_PPM_HEADER;

/** The most bytes the frame that starts with `head` may have, from its own header. */
export function frameLimit(mime: string, head: Uint8Array): FrameLimit {
  const bytes = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (mime === MIME_PNG) return pngLimit(bytes);
  if (mime === MIME_PPM) {
    const header = ppmHeader(bytes);
    if ('more' in header || 'refused' in header) return header;
    const sized = checkSides(header.width, header.height);
    if (sized) return sized;
    return { maxBytes: header.length + header.width * header.height * 3 * header.sampleBytes, width: header.width, height: header.height };
  }
  return { refused: `the hypervisor sent an image of type ${JSON.stringify(mime)}, not PNG or PPM` };
}

export interface ScreenImage {
  png: Buffer;
  width: number;
  height: number;
}

/**
 * The frame as a PNG. A PNG is decoded (which checks its structure and checksums) and kept as it
 * came; a PPM is converted. Throws an Error saying what is wrong with a frame that is not what its
 * header promised; the adapter gives it its own error class.
 */
export function toPng(mime: string, data: Uint8Array): ScreenImage {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const limit = frameLimit(mime, bytes);
  if (limit.more) throw new Error('the image ended inside its header');
  if ('refused' in limit) throw new Error(limit.refused);
  if (mime === MIME_PNG) {
    const decoded = loadPng().sync.read(bytes);
    if (decoded.width !== limit.width || decoded.height !== limit.height) throw new Error('the PNG decodes to other dimensions than its header says');
    return { png: bytes, width: decoded.width, height: decoded.height };
  }
  return ppmToPng(bytes);
}

function checkSides(width: number, height: number): FrameLimit | undefined {
  if (width < 1 || height < 1) return { refused: `the image is ${width}x${height}: empty` };
  if (width > MAX_SCREEN_SIDE || height > MAX_SCREEN_SIDE) return { refused: `the image is ${width}x${height}, more than ${MAX_SCREEN_SIDE} on a side` };
  return undefined;
}

/** The IHDR chunk always comes first: width and height at bytes 16 and 20. */
function pngLimit(bytes: Buffer): FrameLimit {
  if (bytes.length < 26) return bytes.length < PNG_SIGNATURE.length || bytes.subarray(0, 8).equals(PNG_SIGNATURE) ? { more: true } : { refused: 'the image is not a PNG' };
  if (!bytes.subarray(0, 8).equals(PNG_SIGNATURE) || bytes.toString('latin1', 12, 16) !== 'IHDR') return { refused: 'the image is not a PNG' };
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  const sized = checkSides(width, height);
  if (sized) return sized;
  // The most any PNG of these dimensions takes: 8 bytes a pixel (16-bit RGBA) and a filter byte a
  // row, stored without compression (deflate's stored blocks add 5 bytes per 64 KiB, chunks 12
  // bytes each), plus room for the small chunks around them.
  const raw = height * (1 + width * 8);
  return { maxBytes: Math.ceil(raw * 1.01) + 64 * 1024, width, height };
}

interface PpmHeader {
  width: number;
  height: number;
  /** 1 for maxval < 256, else 2 (big-endian samples). */
  sampleBytes: number;
  maxval: number;
  /** Bytes before the first sample. */
  length: number;
}

/** Binary PPM (P6): magic, width, height, maxval, each after whitespace or a comment, then one whitespace byte. */
function ppmHeader(bytes: Buffer): PpmHeader | { more: true } | { refused: string } {
  const incomplete = (): { more: true } | { refused: string } => (bytes.length >= MAX_PPM_HEADER ? { refused: 'the PPM header does not end' } : { more: true });
  if (bytes.length < 2) return { more: true };
  if (bytes[0] !== 0x50 || bytes[1] !== 0x36) return { refused: 'the image is not a binary PPM (P6)' };
  const isSpace = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0x0b || b === 0x0c;
  const fields: number[] = [];
  let i = 2;
  while (fields.length < 3) {
    // Whitespace and comments before each field; at least one separator.
    const start = i;
    for (;;) {
      if (i >= bytes.length) return incomplete();
      if (isSpace(bytes[i]!)) i++;
      else if (bytes[i] === 0x23) {
        while (i < bytes.length && bytes[i] !== 0x0a) i++;
      } else break;
    }
    if (i === start) return { refused: 'the PPM header is malformed' };
    let value = 0;
    const digits = i;
    while (i < bytes.length && bytes[i]! >= 0x30 && bytes[i]! <= 0x39) {
      value = value * 10 + (bytes[i]! - 0x30);
      if (value > 1e6) return { refused: 'the PPM header has a number out of range' };
      i++;
    }
    if (i >= bytes.length) return incomplete();
    if (i === digits) return { refused: 'the PPM header is malformed' };
    fields.push(value);
  }
  if (!isSpace(bytes[i]!)) return { refused: 'the PPM header is malformed' };
  const [width, height, maxval] = fields as [number, number, number];
  if (maxval < 1 || maxval > 65535) return { refused: `the PPM maxval ${maxval} is out of range` };
  return { width, height, maxval, sampleBytes: maxval < 256 ? 1 : 2, length: i + 1 };
}

function ppmToPng(bytes: Buffer): ScreenImage {
  const header = ppmHeader(bytes);
  if ('more' in header || 'refused' in header) throw new Error('refused' in header ? header.refused : 'the image ended inside its header');
  const { width, height, maxval, sampleBytes, length } = header;
  const samples = width * height * 3;
  if (bytes.length < length + samples * sampleBytes) throw new Error(`the PPM has ${bytes.length - length} bytes of pixels where ${width}x${height} needs ${samples * sampleBytes}`);
  const Png = loadPng();
  const png = new Png({ width, height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  const rgb = Buffer.alloc(samples);
  for (let s = 0; s < samples; s++) {
    const v = sampleBytes === 1 ? bytes[length + s]! : bytes.readUInt16BE(length + 2 * s);
    rgb[s] = maxval === 255 ? v : Math.min(255, Math.round((v * 255) / maxval));
  }
  png.data = rgb;
  return { png: loadPng().sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false }), width, height };
}
