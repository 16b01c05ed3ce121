/**
 * One capture at a time per source VM in this process. Several protections of one VM (fan-out to
 * several DR sites) each run their own loop, but libvirt runs one job per VM: a second backup
 * waits 30 s for the first's state change lock and fails, a leftover sweep would take the other
 * protection's running job for its own, and a checkpoint cannot be deleted while a backup job runs.
 * Held from a cycle's first look at the VM's checkpoints until its backup job has ended, and again
 * for the checkpoint deletion after the DR site's acknowledgement; not while the DR site commits.
 * The capture lasts as long as the shipping (no cycle is buffered): a slow link to one DR site
 * delays the other copy's cycles by as long. Waiters go first come, first served: back-to-back
 * cycles of one protection never starve the other.
 */
const tails = new Map<string, Promise<void>>();

/** Resolves, once every earlier holder of `key` released it, with the release (safe to call twice). */
export async function holdSource(key: string, signal?: AbortSignal): Promise<() => void> {
  const before = tails.get(key) ?? Promise.resolve();
  let open!: () => void;
  const mine = new Promise<void>((resolve) => (open = resolve));
  const tail = before.then(() => mine);
  tails.set(key, tail);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    open();
    if (tails.get(key) === tail) tails.delete(key);
  };
  await before;
  if (signal?.aborted) {
    release();
    signal.throwIfAborted();
  }
  return release;
}

/** The key of a protection's source VM: its site and its identity (a renamed VM is the same one). */
export function sourceKey(site: string, uuid: string): string {
  return `${site}/${uuid}`;
}
