/**
 * The Ed25519 key this host signs its reports with: made when first needed (or by
 * `vmdr report key`), kept beside the state file in keys/ (0700; the private key 0600). The
 * public key is what a customer is given to check a report: `vmdr report key` prints it.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import { privateDirectory } from '../control/socket.js';
import { ReportKeyUnusable } from './errors.js';

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The public key as PEM (SPKI), as it is handed to whoever checks the reports. */
  publicPem: string;
  fingerprint: string;
}

export function keysDir(config: Pick<Config, 'state'>): string {
  return join(dirname(config.state.path), 'keys');
}

export const privateKeyFile = (config: Pick<Config, 'state'>) => join(keysDir(config), 'report-signing.key');
export const publicKeyFile = (config: Pick<Config, 'state'>) => join(keysDir(config), 'report-signing.pub');

/**
 * A short name of a public key: the first 16 bytes of the SHA-256 of its raw 32 bytes, in hex
 * pairs (what a person compares by eye, as with SSH host keys).
 */
export function fingerprintOf(publicKey: KeyObject): string {
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const hex = createHash('sha256').update(raw).digest('hex').slice(0, 32);
  return `ed25519:${hex.match(/.{4}/g)!.join(':')}`;
}

/** This host's signing key: read, or made when there is none. */
export async function signingKey(config: Pick<Config, 'state'>): Promise<SigningKey> {
  await privateDirectory(keysDir(config));
  const file = privateKeyFile(config);
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ReportKeyUnusable(file, (err as Error).message, err);
    pem = await makeKey(file);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new ReportKeyUnusable(file, 'not a private key in PEM', err);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new ReportKeyUnusable(file, `an ${privateKey.asymmetricKeyType} key, not Ed25519`);
  const publicKey = createPublicKey(privateKey);
  const publicPem = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  // The public half is derived, never trusted from its file: a missing or stale one is rewritten.
  const pubFile = publicKeyFile(config);
  if ((await readFile(pubFile, 'utf8').catch(() => '')) !== publicPem) await writeFile(pubFile, publicPem, { mode: 0o600 });
  return { privateKey, publicKey, publicPem, fingerprint: fingerprintOf(publicKey) };
}

/** Makes the private key file; two processes making it at once keep the first one's. */
async function makeKey(file: string): Promise<string> {
  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  try {
    await writeFile(file, pem, { mode: 0o600, flag: 'wx' });
    return pem;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFile(file, 'utf8');
    throw new ReportKeyUnusable(file, (err as Error).message, err);
  }
}

/** A public key from a PEM file (`vmdr report verify --key`). */
export async function readPublicKey(file: string): Promise<KeyObject> {
  let key: KeyObject;
  try {
    key = createPublicKey(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ReportKeyUnusable(file, (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'not a public key in PEM', err);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ReportKeyUnusable(file, `an ${key.asymmetricKeyType} key, not Ed25519`);
  return key;
}
