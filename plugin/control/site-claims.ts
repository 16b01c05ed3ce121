/**
 * One `vmdr serve` per site of a state file. Two daemons serving the same site from one state file
 * would run the same replication loops and receivers twice over the same replicas; the second is
 * refused in one line, before it starts anything. Daemons of different sites may share a state file
 * (one host playing two sites, as the lab does with `--site`).
 *
 * A claim is a Unix socket the daemon listens on for as long as it runs (named after the state
 * file's real path and the site): a daemon killed with -9 leaves a socket nobody accepts on, which
 * the next daemon takes over.
 */
import { createHash } from 'node:crypto';
import { chmod, realpath, unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { VmdrError } from '../../hypervisors/errors.js';
import { controlDir } from './address.js';
import { privateDirectory, takeOver } from './socket.js';

export class StateInUse extends VmdrError {
  constructor(state: string, site: string, socket: string) {
    super('SERVE_ALREADY_RUNNING', `another vmdr serve runs site "${site}" on state file ${state} (it holds ${socket})`, {
      subject: { file: state, site, path: socket },
      remedy: 'stop that one first, or give each daemon its own sites with --site',
    });
  }
}

export interface SiteClaims {
  release(): Promise<void>;
}

export async function claimSites(statePath: string, sites: string[]): Promise<SiteClaims> {
  const dir = controlDir();
  await privateDirectory(dir);
  const real = await realpath(statePath).catch(() => statePath);
  const key = createHash('sha256').update(real).digest('hex').slice(0, 16);
  const held: { server: Server; socket: string }[] = [];
  const release = async () => {
    await Promise.all(held.map(({ server, socket }) => new Promise<void>((resolve) => server.close(() => resolve())).then(() => unlink(socket).catch(() => undefined))));
  };
  try {
    for (const site of sites) {
      const socket = join(dir, `serve-${key}-${site}.sock`);
      await takeOver(socket, () => new StateInUse(real, site, socket));
      const server = createServer((c) => c.destroy());
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socket, () => resolve());
      });
      held.push({ server, socket });
      await chmod(socket, 0o600);
    }
  } catch (err) {
    await release();
    throw err;
  }
  return { release };
}
