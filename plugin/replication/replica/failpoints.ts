/**
 * Crash injection for the crash-recovery tests: VMDR_FAILPOINT=<name>[@<n>] kills this process
 * with SIGKILL (as kill -9 would, no exit handlers) the n-th time (default first) it passes <name>.
 */
const hits = new Map<string, number>();

export function failpoint(name: string): void {
  const spec = process.env['VMDR_FAILPOINT'];
  if (!spec) return;
  const [wanted, nth] = spec.split('@');
  if (wanted !== name) return;
  const count = (hits.get(name) ?? 0) + 1;
  hits.set(name, count);
  if (count === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}
