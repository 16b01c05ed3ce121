/**
 * vmdr's C shim for libvirt's event loop, notices and VM starts (shim/vmdr-events.c), declared for
 * koffi on the call threads: the open procedure starts the loop and watches its connection, the
 * close procedure unwatches it, the start procedure hands a start to a thread of the shim. The
 * main thread never loads it; it reads the records the shim writes (events.ts).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { koffi } from './native.js';

const H = 'uintptr_t';

function declare() {
  const file = fileURLToPath(new URL('./shim/libvmdr-libvirt-events.so', import.meta.url));
  if (!existsSync(file)) throw new Error(`vmdr's libvirt events library ${file} is missing: run npm run build`);
  const lib = koffi.load(file);
  return {
    vmdr_events_start: lib.func('int vmdr_events_start(void)'),
    vmdr_events_watch: lib.func('vmdr_events_watch', 'int', [H]),
    vmdr_events_unwatch: lib.func('vmdr_events_unwatch', 'void', [H]),
    vmdr_start_domain: lib.func('vmdr_start_domain', 'int', [H, 'str', 'uint64_t']),
  };
}

let shim: ReturnType<typeof declare> | undefined;

/** Loaded on first use, once per thread. */
export function eventsShim(): ReturnType<typeof declare> {
  shim ??= declare();
  return shim;
}
