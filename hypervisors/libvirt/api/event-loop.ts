/**
 * The thread that runs libvirt's event loop for the whole process: keepalive pings, the close
 * notice of a connection whose libvirtd went away, and domain lifecycle events. libvirt calls
 * event and timer callbacks on the thread that runs the loop, so they are registered here and what
 * they report is posted to events.ts on the main thread.
 *
 * Why a connection's closing is polled and not a close callback: libvirt runs the close callback
 * on whichever thread notices the socket closed, often a call thread of pool.ts. A JS callback of
 * this thread's isolate run there aborts the process (V8: "Entering the V8 API without proper
 * locking"), seen in the lab. virConnectIsAlive only reads the client's state, so asking it for
 * each watched connection a few times a second costs nothing.
 */
import { parentPort } from 'node:worker_threads';
import { koffi, libvirt, LifecycleCallback, type Handle } from './native.js';
import { VIR_DOMAIN_EVENT_ID_LIFECYCLE } from './codes.js';

export type LoopRequest = { id: number; watch: Handle } | { id: number; unwatch: Handle };
export type LoopMessage =
  | { kind: 'ready' }
  | { kind: 'done'; id: number; error?: string }
  | { kind: 'lifecycle'; conn: Handle; uuid: string; name: string; event: number; detail: number }
  | { kind: 'closed'; conn: Handle };

const n = libvirt();
const post = (message: LoopMessage) => parentPort!.postMessage(message);

if (n.virEventRegisterDefaultImpl() < 0) throw new Error('libvirt could not register its event loop');
/** Lifecycle callback ids by connection. */
const watched = new Map<Handle, number>();

// The loop returns to JS at least this often, so requests from the main thread are read. The
// timer's callback is a C no-op (getpid, as for the error handler in native.ts), not a JS
// function: libvirt would call a JS callback from native code also while Node tears this thread
// down (at exit), and V8 aborts the process then.
n.virEventAddTimeout(100, n.dlsym(null, 'getpid'), null, null);

const CHECK_ALIVE_MS = 300;
let checkedAt = 0;
/** Each watched connection is asked whether it is still open (see the header: no close callback). */
function checkAlive(): void {
  if (Date.now() - checkedAt < CHECK_ALIVE_MS) return;
  checkedAt = Date.now();
  for (const conn of watched.keys()) {
    if (n.virConnectIsAlive(conn) !== 0) continue;
    n.virResetLastError();
    unwatch(conn);
    post({ kind: 'closed', conn });
  }
}

const lifecycle = koffi.register((conn: Handle, dom: Handle, event: number, detail: number) => {
  const uuid = Buffer.alloc(37);
  n.virDomainGetUUIDString(dom, uuid);
  post({ kind: 'lifecycle', conn, uuid: uuid.toString('latin1', 0, 36), name: (n.virDomainGetName(dom) as string | null) ?? '', event, detail });
  return 0;
}, koffi.pointer(LifecycleCallback));

function unwatch(conn: Handle): void {
  const id = watched.get(conn);
  watched.delete(conn);
  if (id !== undefined && id >= 0) n.virConnectDomainEventDeregisterAny(conn, id);
  n.virResetLastError();
}

parentPort!.on('message', (request: LoopRequest) => {
  let error: string | undefined;
  if ('watch' in request && !watched.has(request.watch)) {
    const id = n.virConnectDomainEventRegisterAny(request.watch, 0, VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, null, null) as number;
    n.virResetLastError();
    if (id < 0) error = 'libvirt refused to report domain events on this connection';
    else watched.set(request.watch, id);
  } else if ('unwatch' in request) {
    unwatch(request.unwatch);
  }
  post({ kind: 'done', id: request.id, ...(error ? { error } : {}) });
});

post({ kind: 'ready' });
const spin = () => {
  n.virEventRunDefaultImpl();
  checkAlive();
  setImmediate(spin);
};
spin();
