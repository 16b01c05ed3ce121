/**
 * The runner's half of the split-brain guard. scripts/hooks/libvirt-qemu, installed as libvirt's
 * qemu hook, refuses to start a VM labelled role=target (a DR replica under replication) or
 * role=fenced (a failed-over source, plugin/sites/fence.ts) unless the one-shot token file /run/vmdr/start-allowed/<domain name>, younger than 120 s, exists. libvirt
 * tells the hook the domain's name, the operation and its XML, never who asked: without the token
 * the hook cannot tell vmdr's start from anyone else's `virsh start`. So the adapter writes the
 * token right before it asks libvirt to start a VM and removes it afterwards (the hook also removes
 * it when it lets a start through). The file is keyed by the domain NAME because that is what
 * libvirt passes the hook as its first argument.
 *
 * The hook runs on the host libvirtd runs on and looks in that host's /run. vmdr can write there only
 * when it runs on the same host, which it knows only from a local URI (qemu:///system). Over a
 * remote URI (qemu+ssh://host/system, qemu+tls://…) vmdr cannot write the token, so nothing is
 * written and the hook on that host refuses vmdr's start of a target like anyone else's.
 *
 * So every start of a VM is vmdr's on the VM's own host: a target (failover, drill) is started by
 * the DR site's runner on the DR host; the source (revert's restart, failback) is started by the
 * source site's own `vmdr serve`, asked over its endpoint (plugin/sites/remote-source.ts), never
 * by the DR host through the source's hypervisor. With two sites (`localSite` set) no vmdr process
 * opens another site's hypervisor at all.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VmdrError } from '../errors.js';

/** Where the hook looks for tokens; scripts/hooks/libvirt-qemu names the same directory. */
export const START_TOKEN_DIR = '/run/vmdr/start-allowed';

/** True when the URI reaches the system libvirtd of this very host: the only one whose hook reads our /run. */
export function startTokenApplies(uri: string): boolean {
  // driver[+transport]://[host]/path[?query]; no host and a local transport means this host.
  const m = /^([a-z0-9]+)(?:\+([a-z0-9]+))?:\/\/([^/?]*)(\/[^?]*)?/i.exec(uri);
  if (!m) return false;
  const [, driver, transport, host, path] = m;
  return driver!.toLowerCase() === 'qemu' && (transport === undefined || transport.toLowerCase() === 'unix') && host === '' && path === '/system';
}

/** Token file for one VM. */
export function startTokenPath(domainName: string): string {
  return join(START_TOKEN_DIR, domainName);
}

/** Runs `start` (the domainCreate call) with vmdr's start token in place for this VM, on a local URI. */
export async function withStartToken<T>(uri: string, domainName: string, start: () => Promise<T>): Promise<T> {
  if (!startTokenApplies(uri)) return start();
  const file = startTokenPath(domainName);
  try {
    await mkdir(START_TOKEN_DIR, { recursive: true, mode: 0o700 });
    // Rewriting an old token refreshes its mtime, which is what the hook's 120 s check reads.
    await writeFile(file, `${process.pid}\n`, { mode: 0o600 });
  } catch (err) {
    throw new VmdrError('START_TOKEN_UNWRITABLE', `write start token ${file}: ${(err as Error).message}`, {
      subject: { vm: domainName, host: uri, file },
      cause: err,
      remedy: `run vmdr as root on the host of ${uri}: the split-brain hook (/etc/libvirt/hooks/qemu) starts a replica target only with this token`,
    });
  }
  try {
    return await start();
  } finally {
    await rm(file, { force: true });
  }
}
