/**
 * Writes a NoCloud seed: an ISO 9660 image labelled `cidata` holding meta-data, user-data and a
 * version 2 network-config. cloud-init (Linux) and cloudbase-init (Windows) both read this format
 * from an attached disk, so one seed gives any guest its DR hostname and addresses.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { VmdrError } from '../../hypervisors/errors.js';

const exec = promisify(execFile);

export interface GuestNicIdentity {
  mac: string;
  /** IP/PREFIX */
  addresses: string[];
  gateway?: string;
  dns?: string[];
}

export interface GuestIdentity {
  instanceId: string;
  hostname: string;
  nics: GuestNicIdentity[];
}

export class IdentityInvalid extends VmdrError {
  constructor(field: string, value: string, expected: string) {
    super('IDENTITY_INVALID', `identity ${field} ${JSON.stringify(value)} is not ${expected}`, { subject: { field } });
  }
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const IPV4 = /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/;
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

function check(identity: GuestIdentity): void {
  if (!HOSTNAME.test(identity.hostname)) throw new IdentityInvalid('hostname', identity.hostname, 'a hostname');
  if (!/^[\w.:-]{1,128}$/.test(identity.instanceId)) throw new IdentityInvalid('instance id', identity.instanceId, 'an instance id');
  identity.nics.forEach((nic, i) => {
    if (!MAC.test(nic.mac)) throw new IdentityInvalid(`nics[${i}].mac`, nic.mac, 'a lower-case MAC address');
    for (const a of nic.addresses) {
      const [ip, prefix, extra] = a.split('/');
      if (extra !== undefined || !IPV4.test(ip ?? '') || !/^\d+$/.test(prefix ?? '') || Number(prefix) > 32) {
        throw new IdentityInvalid(`nics[${i}].addresses`, a, 'an IPv4 address with prefix');
      }
    }
    for (const ip of [...(nic.gateway ? [nic.gateway] : []), ...(nic.dns ?? [])]) {
      if (!IPV4.test(ip)) throw new IdentityInvalid(`nics[${i}] gateway/dns`, ip, 'an IPv4 address');
    }
  });
}

export function networkConfig(identity: GuestIdentity): Record<string, unknown> {
  return {
    version: 2,
    ethernets: Object.fromEntries(
      identity.nics.map((nic, i) => [
        `eth${i}`,
        {
          match: { macaddress: nic.mac },
          'set-name': `eth${i}`,
          addresses: nic.addresses,
          ...(nic.gateway ? { gateway4: nic.gateway } : {}),
          ...(nic.dns?.length ? { nameservers: { addresses: nic.dns } } : {}),
        },
      ]),
    ),
  };
}

export async function writeIdentitySeed(outPath: string, identity: GuestIdentity): Promise<void> {
  check(identity);
  const work = await mkdtemp(join(dirname(outPath), '.seed-'));
  try {
    await writeFile(join(work, 'meta-data'), stringify({ 'instance-id': identity.instanceId, 'local-hostname': identity.hostname }));
    await writeFile(join(work, 'user-data'), `#cloud-config\n${stringify({ hostname: identity.hostname, preserve_hostname: false })}`);
    await writeFile(join(work, 'network-config'), stringify(networkConfig(identity)));
    const tmp = `${outPath}.tmp`;
    await exec('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', tmp, work]);
    await rename(tmp, outPath);
  } catch (err) {
    if (err instanceof VmdrError) throw err;
    // execFile's message is the command line; what went wrong is on xorriso's stderr.
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n').filter(Boolean).at(-1);
    const detail = stderr ? `xorriso: ${stderr}` : (err as Error).message.split('\n')[0];
    throw new VmdrError('SEED_WRITE_FAILED', `cannot write identity seed ${outPath}: ${detail}`, {
      subject: { file: outPath },
      cause: err,
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
