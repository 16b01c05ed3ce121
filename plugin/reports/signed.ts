/**
 * A run's report as it is stored and handed out: the report, its tenant, and an Ed25519 signature
 * over its canonical form (keys sorted, no spaces). The screenshots it names are covered through
 * their SHA-256, which is part of the report. report.json holds the same form indented, so any
 * byte changed in the file either changes what was signed or makes the file differ from the one
 * form vmdr writes; either way `vmdr report verify` refuses it.
 */
import { sign, verify, type KeyObject } from 'node:crypto';
import type { FailoverReport } from '../failover/report.js';
import { fingerprintOf, type SigningKey } from './keys.js';

export const REPORT_FORMAT = 'vmdr-report/1';

export interface SignedReport {
  format: typeof REPORT_FORMAT;
  /** The tenant the run belongs to (its plan's, or its protections'); null for the operators' own. */
  tenant: string | null;
  report: FailoverReport;
  signature: { algorithm: 'Ed25519'; key: string; value: string };
}

type Unsigned = Omit<SignedReport, 'signature'>;

/** The value with every object's keys sorted: one text for one content. */
function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted);
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [k, sorted(v)]));
}

/** The bytes the signature is over. */
export function signedBytes(doc: Unsigned | SignedReport): Buffer {
  const { signature: _, ...unsigned } = doc as SignedReport;
  return Buffer.from(JSON.stringify(sorted(unsigned)));
}

/** report.json's text: the canonical form, indented. */
export function reportJsonText(doc: SignedReport): string {
  return `${JSON.stringify(sorted(doc), null, 2)}\n`;
}

export function signReport(unsigned: Unsigned, key: SigningKey): SignedReport {
  const value = sign(null, signedBytes(unsigned), key.privateKey).toString('base64');
  return { ...unsigned, signature: { algorithm: 'Ed25519', key: key.fingerprint, value } };
}

/** Why the signature does not hold for `publicKey`, or undefined when it does. */
export function signatureProblem(doc: SignedReport, publicKey: KeyObject): string | undefined {
  const fingerprint = fingerprintOf(publicKey);
  if (doc.signature.key !== fingerprint) return `signed by ${doc.signature.key}, not by ${fingerprint} (give the signer's public key with --key)`;
  const ok = verify(null, signedBytes(doc), publicKey, Buffer.from(doc.signature.value, 'base64'));
  return ok ? undefined : `changed after it was signed by ${fingerprint} (its signature does not match its content)`;
}
