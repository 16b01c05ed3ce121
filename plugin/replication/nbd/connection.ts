/**
 * Opens the socket to an NBD server and runs the handshake under one deadline and the caller's
 * AbortSignal. The socket reads into a buffer of its own (`onread`), so received bytes are copied
 * once, by whoever consumes them, and no chunk is allocated per read.
 */
import { connect, type Socket } from 'node:net';
import type { NbdListen } from '../../../hypervisors/types.js';
import { NbdConnectFailed, NbdHandshakeFailed } from './errors.js';
import { HandshakeReader, negotiate, type NegotiatedExport } from './handshake.js';

const RECEIVE_BUFFER = 1024 * 1024;

export interface OpenConnection {
  socket: Socket;
  info: NegotiatedExport;
  /** Routes every later received chunk to `receive`; the chunk is only valid during the call. */
  setReceiver(receive: (chunk: Buffer) => void): void;
  /** Bytes that arrived after the handshake, before the receiver was set. */
  leftover: Buffer;
}

export async function openConnection(
  target: NbdListen,
  options: { exportName: string; metaContexts: readonly string[]; signal: AbortSignal | undefined; timeoutMs: number },
): Promise<OpenConnection> {
  options.signal?.throwIfAborted();
  const reader = new HandshakeReader();
  let receive = (chunk: Buffer) => reader.push(Buffer.from(chunk));
  const inbox = Buffer.allocUnsafe(RECEIVE_BUFFER);
  const socket = connect({
    ...(target.transport === 'tcp' ? { host: target.host, port: target.port } : { path: target.socket }),
    onread: {
      buffer: inbox,
      callback: (n) => {
        receive(inbox.subarray(0, n));
        return true;
      },
    },
  });
  socket.setNoDelay(true);

  let connected = false;
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const stop = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  let onAbort!: () => void;
  let onError!: (err: NodeJS.ErrnoException) => void;
  let onClose!: () => void;
  const failure = new Promise<never>((_, reject) => {
    onAbort = () => {
      const seconds = `${options.timeoutMs / 1000} s`;
      reject(options.signal?.aborted ? options.signal.reason
        : connected ? new NbdHandshakeFailed(target, options.exportName, `no complete handshake within ${seconds}`)
        : new NbdConnectFailed(target, `timed out after ${seconds}`));
    };
    onError = (err) => reject(connected
      ? new NbdHandshakeFailed(target, options.exportName, err.message, err)
      : new NbdConnectFailed(target, err.code ?? err.message, err));
    onClose = () => reject(new NbdHandshakeFailed(target, options.exportName, 'the server closed the connection during the handshake'));
  });
  failure.catch(() => undefined);
  stop.addEventListener('abort', onAbort, { once: true });
  socket.on('error', onError);
  socket.on('close', onClose);
  try {
    await Promise.race([new Promise<void>((resolve) => socket.once('connect', resolve)), failure]);
    connected = true;
    const info = await Promise.race([
      negotiate(reader, (buf) => socket.write(buf), target, options.exportName, options.metaContexts),
      failure,
    ]);
    return {
      socket,
      info,
      setReceiver: (next) => {
        receive = next;
      },
      leftover: reader.rest(),
    };
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    stop.removeEventListener('abort', onAbort);
    socket.off('error', onError);
    socket.off('close', onClose);
  }
}
