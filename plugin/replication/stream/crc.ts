/**
 * CRC-32 (ISO-HDLC, zlib's) of two byte strings joined, from the CRC of each: zlib's
 * crc32_combine, which Node does not expose. A frame's CRC covers its header and then its payload;
 * with this the payload's CRC, computed once where the payload is made (a worker), serves both the
 * data CRC of a raw frame and its frame CRC, and no byte of the payload is read twice.
 */

/** The reflected polynomial. */
const POLY = 0xedb88320;

/** a × b modulo the CRC polynomial, both reflected (bit 31 is x^0). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^k) modulo the polynomial, k = 0..31. */
const X2N = new Uint32Array(32);
X2N[0] = 0x40000000; // x^1
for (let k = 1; k < 32; k += 1) X2N[k] = multModP(X2N[k - 1]!, X2N[k - 1]!);

/** x^(n × 2^k) modulo the polynomial. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  while (n > 0) {
    if (n % 2) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k += 1;
  }
  return p;
}

/** CRC-32 of A followed by B, given crc32(A), crc32(B) and B's length in bytes. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (multModP(x2nModP(lengthB, 3), crcA) ^ crcB) >>> 0;
}
