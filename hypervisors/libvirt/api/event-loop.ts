/**
 * The thread that runs libvirt's event loop for the whole process: keepalive pings, the close
 * notice of a connection whose libvirtd went away, and domain lifecycle events. libvirt calls the
 * callbacks on the thread that runs the loop, so they are registered here and what they report
 * is posted to events.ts on the main thread.
 */
import { parentPort } from 'node:worker_threads';
import { CloseCallback, koffi, libvirt, LifecycleCallback, TimeoutCallback, type Handle } from './native.js';
import { VIR_DOMAIN_EVENT_ID_LIFECYCLE } from './codes.js';

export type LoopRequest = { id: number; watch: Handle } | { id: number; unwatch: Handle };
export type LoopMessage =
  | { kind: 'ready' }
  | { kind: 'done'; id: number; error?: string }
  | { kind: 'lifecycle'; conn: Handle; uuid: string; name: string; event: number; detail: number }
  | { kind: 'closed'; conn: Handle; reason: number };

const n = libvirt();
const post = (message: LoopMessage) => parentPort!.postMessage(message);

if (n.virEventRegisterDefaultImpl() < 0) throw new Error('libvirt could not register its event loop');
// The loop returns to JS at least this often, so requests from the main thread are read.
const tick = koffi.register(() => {}, koffi.pointer(TimeoutCallback));
n.virEventAddTimeout(100, tick, null, null);

const lifecycle = koffi.register((conn: Handle, dom: Handle, event: number, detail: number) => {
  const uuid = Buffer.alloc(37);
  n.virDomainGetUUIDString(dom, uuid);
  post({ kind: 'lifecycle', conn, uuid: uuid.toString('latin1', 0, 36), name: (n.virDomainGetName(dom) as string | null) ?? '', event, detail });
  return 0;
}, koffi.pointer(LifecycleCallback));
const closed = koffi.register((conn: Handle, reason: number) => post({ kind: 'closed', conn, reason }), koffi.pointer(CloseCallback));

/** Lifecycle callback ids by connection. */
const watched = new Map<Handle, number>();

parentPort!.on('message', (request: LoopRequest) => {
  let error: string | undefined;
  if ('watch' in request && !watched.has(request.watch)) {
    const id = n.virConnectDomainEventRegisterAny(request.watch, 0, VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, null, null) as number;
    // In-process drivers (test://) have no close callback; -1 there is not an error.
    n.virConnectRegisterCloseCallback(request.watch, closed, null, null);
    n.virResetLastError();
    if (id < 0) error = 'libvirt refused to report domain events on this connection';
    else watched.set(request.watch, id);
  } else if ('unwatch' in request) {
    const id = watched.get(request.unwatch);
    watched.delete(request.unwatch);
    if (id !== undefined) n.virConnectDomainEventDeregisterAny(request.unwatch, id);
    n.virConnectUnregisterCloseCallback(request.unwatch, closed);
    n.virResetLastError();
  }
  post({ kind: 'done', id: request.id, ...(error ? { error } : {}) });
});

post({ kind: 'ready' });
const spin = () => {
  n.virEventRunDefaultImpl();
  setImmediate(spin);
};
spin();
