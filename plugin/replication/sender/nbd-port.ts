import { createServer } from 'node:net';

/**
 * A free TCP port on loopback for a backup's NBD export. QEMU (running as libvirt-qemu) cannot
 * bind a unix socket in root's temp dirs, so the export listens on 127.0.0.1; the short window
 * between closing this probe and QEMU binding the port is harmless: backup-begin fails clearly.
 */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
