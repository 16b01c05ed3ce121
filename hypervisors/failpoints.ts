/**
 * Crash injection for the crash-recovery tests: VMDR_FAILPOINT=<name>[@<n>] kills this process
 * with SIGKILL (as kill -9 would, no exit handlers) the n-th time (default first) it passes <name>.
 * With `:stop` (<name>[@<n>]:stop) it stops itself with SIGSTOP instead, the n-th time and every
 * time after, until the test sends SIGCONT: a test lines up an outside event (a daemon restart)
 * with that exact moment of the process. Here, not in plugin/: the adapters have points too (a VM
 * paused or frozen by vmdr, hypervisors/libvirt/hold-records.ts), and plugin/ may import this file.
 */
const hits = new Map<string, number>();

export function failpoint(name: string): void {
  const spec = process.env['VMDR_FAILPOINT'];
  if (!spec) return;
  const [point = '', action] = spec.split(':');
  const [wanted, nth] = point.split('@');
  if (wanted !== name) return;
  const count = (hits.get(name) ?? 0) + 1;
  hits.set(name, count);
  if (action === 'stop') {
    if (count >= Number(nth ?? 1)) process.kill(process.pid, 'SIGSTOP');
  } else if (count === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}
