/**
 * The thread that runs libvirt's event loop for the whole process: keepalive pings, and the
 * notice that a connection closed (libvirtd went away, or keepalive gave it up), posted to
 * events.ts on the main thread.
 *
 * libvirt calls nothing of JS here: no close callback, no domain event callback, and the timer
 * that wakes the loop is a C no-op. Measured in this lab, a JS callback that libvirt calls aborts
 * the process (V8: "Entering the V8 API without proper locking"): the close callback runs on
 * whichever thread notices the socket closed, often a call thread of pool.ts; domain lifecycle
 * callbacks ran with another isolate's globals ("Buffer is not defined") once the call threads had
 * loaded koffi after this thread registered them; and a callback during Node's teardown of this
 * thread crashed at exit. So a connection's closing is polled (virConnectIsAlive only reads the
 * client's state) and waits for a VM's state ask its state (power.ts).
 */
import { parentPort } from 'node:worker_threads';
import { libvirt, type Handle } from './native.js';

export type LoopRequest = { id: number; watch: Handle } | { id: number; unwatch: Handle };
export type LoopMessage = { kind: 'ready' } | { kind: 'done'; id: number } | { kind: 'closed'; conn: Handle };

const n = libvirt();
const post = (message: LoopMessage) => parentPort!.postMessage(message);

if (n.virEventRegisterDefaultImpl() < 0) throw new Error('libvirt could not register its event loop');
// The loop returns to JS at least this often, so requests from the main thread are read.
n.virEventAddTimeout(100, n.dlsym(null, 'getpid'), null, null);

const watched = new Set<Handle>();
const CHECK_ALIVE_MS = 300;
let checkedAt = 0;

function checkAlive(): void {
  if (Date.now() - checkedAt < CHECK_ALIVE_MS) return;
  checkedAt = Date.now();
  for (const conn of watched) {
    if (n.virConnectIsAlive(conn) !== 0) continue;
    n.virResetLastError();
    watched.delete(conn);
    post({ kind: 'closed', conn });
  }
}

parentPort!.on('message', (request: LoopRequest) => {
  if ('watch' in request) watched.add(request.watch);
  else watched.delete(request.unwatch);
  post({ kind: 'done', id: request.id });
});

post({ kind: 'ready' });
const spin = () => {
  n.virEventRunDefaultImpl();
  checkAlive();
  setImmediate(spin);
};
spin();
