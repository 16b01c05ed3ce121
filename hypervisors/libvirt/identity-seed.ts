/**
 * The NoCloud seed that gives a libvirt guest its identity: an ISO 9660 image labelled `cidata`
 * holding meta-data, user-data and a version 2 network-config. cloud-init (Linux) and
 * cloudbase-init (Windows) both read this format from an attached disk, so one seed gives any
 * guest its DR hostname and addresses. It holds a customer's addresses: 0600, like the images.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { VmdrError } from '../errors.js';
import type { GuestIdentity, GuestNicIdentity } from '../types.js';

const exec = promisify(execFile);
const XORRISO_TIMEOUT_MS = 60_000;

/** A checked identity whose every NIC has the MAC the VM now gives it. */
export type SeedIdentity = Omit<GuestIdentity, 'nics'> & { nics: (GuestNicIdentity & { mac: string })[] };

/** The seed's file: beside `disk` (the VM's first disk image), named by the identity it holds. */
export function seedPath(disk: string, instanceId: string): string {
  return join(dirname(disk), `seed-${instanceId}.iso`);
}

/** Only a file named as seedPath names them is deleted as a seed, whatever a definition points at. */
export function isSeedFile(path: string): boolean {
  return /^seed-[\w.:-]{1,128}\.iso$/.test(basename(path));
}

export function networkConfig(identity: SeedIdentity): Record<string, unknown> {
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

/** Writes the seed under a temporary name and renames it: `outPath` is whole or absent. */
export async function writeIdentitySeed(outPath: string, identity: SeedIdentity): Promise<void> {
  const work = await mkdtemp(join(dirname(outPath), '.seed-'));
  const tmp = `${outPath}.tmp`;
  try {
    await writeFile(join(work, 'meta-data'), stringify({ 'instance-id': identity.instanceId, 'local-hostname': identity.hostname }));
    await writeFile(join(work, 'user-data'), `#cloud-config\n${stringify({ hostname: identity.hostname, preserve_hostname: false })}`);
    await writeFile(join(work, 'network-config'), stringify(networkConfig(identity)));
    await exec('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', tmp, work], { timeout: XORRISO_TIMEOUT_MS });
    await chmod(tmp, 0o600);
    await rename(tmp, outPath);
  } catch (err) {
    await rm(tmp, { force: true });
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

/** Deletes a seed vmdr wrote; a file not named like one is left alone. */
export async function deleteIdentitySeed(path: string): Promise<void> {
  if (isSeedFile(path)) await rm(path, { force: true });
}
