/**
 * The receiver's TLS key, its self-signed certificate and its bearer token, kept in one directory
 * per DR site. Senders pin that certificate (it is their only trust anchor for the receiver) and
 * present the token. Made with openssl, the one X.509 tool on every host of this kind; Node can
 * use certificates but not issue them.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { Config, Site } from '../../config/schema.js';

const exec = promisify(execFile);

export interface ReceiverCredentials {
  dir: string;
  cert: Buffer;
  key: Buffer;
  token: string;
}

/** Where senders reach a site's receiver: its `url`, else https:// on the address it listens on. */
export function receiverUrl(receiver: NonNullable<Site['receiver']>): string {
  return receiver.url ?? `https://${receiver.listen}`;
}

export function credentialsDir(config: Config, site: Site): string {
  return site.receiver?.credentials ?? join(dirname(config.state.path), `receiver-${site.name}`);
}

const files = (dir: string) => ({ cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key'), token: join(dir, 'token') });

/** Makes what is missing (a 10-year self-signed certificate for `host`, a 256-bit token) and loads it. */
export async function ensureReceiverCredentials(dir: string, host: string): Promise<ReceiverCredentials & { made: boolean }> {
  const f = files(dir);
  let made = false;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!(await exists(f.cert)) || !(await exists(f.key))) {
    const san = [...new Set(['DNS:localhost', 'IP:127.0.0.1', isIP(host) ? `IP:${host}` : `DNS:${host}`])].join(',');
    try {
      await exec('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
        '-subj', `/CN=vmdr receiver ${host}`, '-addext', `subjectAltName=${san}`,
        '-keyout', `${f.key}.new`, '-out', `${f.cert}.new`,
      ]);
    } catch (err) {
      throw new VmdrError('CREDENTIALS_UNAVAILABLE', `cannot make the receiver certificate in ${dir}: ${(err as Error).message.split('\n')[0]}`, {
        subject: { file: dir },
        cause: err,
        remedy: 'is openssl installed?',
      });
    }
    await chmod(`${f.key}.new`, 0o600);
    await rename(`${f.key}.new`, f.key);
    await rename(`${f.cert}.new`, f.cert);
    made = true;
  }
  if (!(await exists(f.token))) {
    await writeFile(`${f.token}.new`, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    await rename(`${f.token}.new`, f.token);
    made = true;
  }
  return { ...(await loadReceiverCredentials(dir)), made };
}

export async function loadReceiverCredentials(dir: string): Promise<ReceiverCredentials> {
  return { dir, ...(await loadSenderCredentials(dir)), key: await readCredential(files(dir).key) };
}

/** What a sender needs: the certificate it pins and the token it presents. */
export async function loadSenderCredentials(dir: string): Promise<{ cert: Buffer; token: string }> {
  const f = files(dir);
  return { cert: await readCredential(f.cert), token: (await readCredential(f.token)).toString('utf8').trim() };
}

async function readCredential(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new VmdrError('CREDENTIALS_UNAVAILABLE', `cannot read receiver credential ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
      subject: { file },
      cause: err,
      remedy: 'start `vmdr serve` on the DR site once to make them, and copy tls.crt and token to source hosts',
    });
  }
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
