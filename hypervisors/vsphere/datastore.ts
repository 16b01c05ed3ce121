/**
 * Files on a datastore: what vmdr puts there (a recovery point's disk) and takes away again.
 * Bytes travel over the datastore HTTP file API (`/folder/<path>?dcPath=<dc>&dsName=<ds>`, the
 * same for ESXi and vCenter) with the session's TLS trust and cookie; everything else (folders,
 * moves, deletes) goes through the FileManager, whose faults and tasks the client core maps.
 *
 * An upload streams: the body is pulled from its source as the socket drains, so a slow
 * datastore slows the reader and nothing is buffered whole (axios' redirect support, which keeps
 * the body for a replay, is off). The body's length is sent up front, as govmomi's uploads send
 * it (soap.Client.Upload): whether hostd takes a chunked PUT is not something the simulator can
 * show. A 401 (the session expired under a long transfer) logs in again once and sends
 * the body again from a fresh source; anything else is an error naming the file.
 */
import type { AxiosResponse } from 'axios';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Unsupported, VmdrError } from '../errors.js';
import type { Progress, ProgressSubject, TaskOptions } from '../types.js';
import { VsphereFault, VsphereFileNotFound, VsphereObjectNotFound } from './errors.js';
import { datacenter as findDatacenter } from './find.js';
import { retrieve } from './property-collector.js';
import type { VsphereSession } from './session.js';
import { waitForTask } from './task.js';
import type { MoRef } from './soap.js';

/** A file (or folder) on a datastore, named as the user sees it: `[datastore] path`. */
export interface DatastoreFile {
  datacenter: string;
  datastore: string;
  /** Slash-separated, relative to the datastore's root. */
  path: string;
}

/** `[LocalDS_0] vmdr/failover-1-vda.vmdk`: how vSphere names a datastore file everywhere. */
export function datastorePath(file: Pick<DatastoreFile, 'datastore' | 'path'>): string {
  return `[${file.datastore}] ${file.path}`;
}

/** The datastore's HTTP file API answered with another status, or the connection broke. */
export class VsphereTransferFailed extends VmdrError {
  constructor(operation: string, file: DatastoreFile, host: string, detail: string, options: { status?: number; cause?: unknown } = {}) {
    super('VSPHERE_TRANSFER_FAILED', `${operation} ${datastorePath(file)} on ${host}: ${detail}`, {
      subject: { file: datastorePath(file), host, ...(options.status !== undefined ? { status: options.status } : {}) },
      cause: options.cause,
      userError: false,
    });
  }
}

/** What an upload sends: opened afresh for each attempt (a 401 sends the body again). */
export interface UploadSource {
  stream: Readable;
  sizeBytes: number;
  close(): Promise<void>;
}

export interface UploadOptions extends TaskOptions {
  phase?: string;
  subject?: ProgressSubject;
  /** How long the upload may make no progress at all before it fails. Default 120 s. */
  idleTimeoutMs?: number;
}

/**
 * How long an upload may make no progress at all (not the whole upload: a large one to a slow
 * datastore takes as long as it takes), and how long a HEAD or a small read may take.
 */
const IDLE_TIMEOUT_MS = 120_000;
/** A PUT's or a HEAD's answer is a status line and a few headers; nothing larger is read. */
const ANSWER_LIMIT_BYTES = 1024 * 1024;

function folderUrl(file: DatastoreFile): string {
  const path = file.path.split('/').filter(Boolean).map(encodeURIComponent).join('/');
  return `/folder/${path}?${new URLSearchParams({ dcPath: file.datacenter, dsName: file.datastore }).toString()}`;
}

/**
 * One HTTP exchange with the file API; a 401 logs in again once and repeats it. Resolves with the
 * response for 2xx, and for 404 when `absentOk`; any other status is an error naming the file.
 */
async function exchange(
  session: VsphereSession,
  operation: string,
  file: DatastoreFile,
  send: () => Promise<AxiosResponse>,
  options: { absentOk?: boolean; signal?: AbortSignal } = {},
): Promise<AxiosResponse | undefined> {
  for (let attempt = 1; ; attempt += 1) {
    let response: AxiosResponse;
    try {
      response = await send();
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (err instanceof VmdrError) throw err;
      const code = (err as { code?: string }).code;
      const detail = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? `no answer within ${IDLE_TIMEOUT_MS / 1000} s` : (err as Error).message;
      // Not the axios error itself: it holds the request, and with it the session cookie.
      throw new VsphereTransferFailed(operation, file, session.endpoint.host, detail, { cause: Object.assign(new Error((err as Error).message), code ? { code } : {}) });
    }
    if (response.status === 401 && attempt === 1) {
      await renewSession(session, options.signal);
      continue;
    }
    if (response.status >= 200 && response.status < 300) return response;
    if (response.status === 404) {
      if (options.absentOk) return undefined;
      throw new VsphereFileNotFound(datastorePath(file), session.endpoint.host);
    }
    throw new VsphereTransferFailed(operation, file, session.endpoint.host, `HTTP ${response.status}`, { status: response.status });
  }
}

/** What HEAD says of a file; undefined when it does not exist. A size the server did not give is absent. */
export async function statFile(session: VsphereSession, file: DatastoreFile, options: { signal?: AbortSignal } = {}): Promise<{ sizeBytes?: number; modified?: Date } | undefined> {
  const response = await exchange(
    session,
    'look up',
    file,
    () => session.transfer.head(folderUrl(file), { signal: options.signal, timeout: IDLE_TIMEOUT_MS, maxContentLength: ANSWER_LIMIT_BYTES, validateStatus: () => true }),
    { absentOk: true, signal: options.signal },
  );
  if (!response) return undefined;
  const modified = response.headers['last-modified'] as string | undefined;
  const length = response.headers['content-length'] as string | undefined;
  return { ...(length !== undefined && /^\d+$/.test(length) ? { sizeBytes: Number(length) } : {}), ...(modified ? { modified: new Date(modified) } : {}) };
}

/** A small file's text (a disk descriptor); undefined when it does not exist. */
export async function readSmallFile(session: VsphereSession, file: DatastoreFile, options: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<string | undefined> {
  const maxBytes = options.maxBytes ?? 64 * 1024;
  const response = await exchange(
    session,
    'read',
    file,
    () =>
      session.transfer.get<ArrayBuffer>(folderUrl(file), {
        responseType: 'arraybuffer',
        maxContentLength: maxBytes,
        signal: options.signal,
        timeout: IDLE_TIMEOUT_MS,
        validateStatus: () => true,
      }),
    { absentOk: true, signal: options.signal },
  );
  return response ? Buffer.from(response.data as ArrayBuffer).toString('utf8') : undefined;
}

/**
 * Writes a file (replacing one of that name) from `body`: bytes, or a source opened for each
 * attempt. Progress in bytes through `onProgress`; the last event of an upload that ended well
 * has done === total. `signal` aborts the transfer; what the datastore got so far stays there
 * under the file's name, so callers write under a name that is only taken as whole once the
 * upload has returned (see boot-disks.ts).
 */
export async function uploadFile(session: VsphereSession, file: DatastoreFile, body: Buffer | (() => Promise<UploadSource>), options: UploadOptions = {}): Promise<void> {
  const open = Buffer.isBuffer(body) ? async (): Promise<UploadSource> => ({ stream: Readable.from([body]), sizeBytes: body.length, close: async () => undefined }) : body;
  const phase = options.phase ?? 'upload';
  const report = (done: number, total: number) =>
    options.onProgress?.({ phase, unit: 'bytes', done, total, ...(options.subject ? { subject: options.subject } : {}) } satisfies Progress);
  const host = session.endpoint.host;
  let last: { done: number; total: number } | undefined;
  await exchange(
    session,
    'upload',
    file,
    async () => {
      options.signal?.throwIfAborted();
      const source = await open();
      const total = source.sizeBytes;
      // An idle deadline of its own: axios' timeout would bound the whole upload, however large.
      const idle = new AbortController();
      const idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
      let timer: NodeJS.Timeout | undefined;
      const progressed = () => {
        clearTimeout(timer);
        timer = setTimeout(() => idle.abort(new VsphereTransferFailed('upload', file, host, `no progress within ${idleMs / 1000} s`)), idleMs);
      };
      let done = 0;
      const counted = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          done += chunk.length;
          progressed();
          report(Math.min(done, total), total);
          callback(null, chunk);
        },
      });
      // The reader's own failure (nbdcopy died) is the upload's, not the broken request it causes.
      let readerFailed: VmdrError | undefined;
      pipeline(source.stream, counted).catch((err: unknown) => {
        if (err instanceof VmdrError) readerFailed ??= err;
      });
      try {
        report(0, total);
        progressed();
        const response = await session.transfer.put(folderUrl(file), counted, {
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(total) },
          maxBodyLength: Infinity,
          maxContentLength: ANSWER_LIMIT_BYTES,
          // Without redirects axios sends the stream as it is read instead of keeping it for a replay.
          maxRedirects: 0,
          signal: options.signal ? AbortSignal.any([options.signal, idle.signal]) : idle.signal,
          validateStatus: () => true,
        });
        if (readerFailed) throw readerFailed;
        if (response.status >= 200 && response.status < 300 && done !== total) {
          throw new VsphereTransferFailed('upload', file, host, `the datastore answered ${response.status} after ${done} of ${total} bytes`);
        }
        last = { done, total };
        return response;
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (idle.signal.aborted) throw idle.signal.reason;
        throw readerFailed ?? err;
      } finally {
        clearTimeout(timer);
        // A request that failed (or was answered early) no longer reads: end the reader too.
        counted.destroy();
        source.stream.destroy();
        await source.close();
      }
    },
    { signal: options.signal },
  );
  if (last) report(last.total, last.total);
}

/**
 * The datacenter's managed object, once it is known to hold the datastore: what FileManager calls
 * take. VSPHERE_OBJECT_NOT_FOUND names a datacenter or datastore that is not there. Callers that
 * make several FileManager calls resolve it once and pass it as `dc`.
 */
export async function resolveDatastore(session: VsphereSession, where: Pick<DatastoreFile, 'datacenter' | 'datastore'>, signal?: AbortSignal): Promise<MoRef> {
  const dc = await findDatacenter(session, where.datacenter);
  const stores = await retrieve(session, { type: 'Datastore', paths: ['name'], container: dc.datastoreFolder, ...(signal ? { signal } : {}) });
  if (!stores.some((store) => store.props.name === where.datastore)) throw new VsphereObjectNotFound('datastore', where.datastore, session.endpoint.host);
  return dc.ref;
}

export interface FileManagerOptions {
  signal?: AbortSignal;
  /** The datacenter, as resolveDatastore found it: saves looking it up again. */
  dc?: MoRef;
}

/**
 * Makes a folder and the folders above it; one that exists is fine. Fails with
 * VSPHERE_OBJECT_NOT_FOUND naming the datastore when the datacenter has none of that name.
 */
export async function makeFolder(session: VsphereSession, folder: DatastoreFile, options: FileManagerOptions = {}): Promise<void> {
  const dc = options.dc ?? (await resolveDatastore(session, folder, options.signal));
  try {
    await session.call('MakeDirectory', fileManager(session), { name: datastorePath(folder), datacenter: dc, createParentDirectories: true }, { signal: options.signal });
  } catch (err) {
    if (!(err instanceof VsphereFault && err.faultType === 'FileAlreadyExists')) throw err;
  }
}

/** Renames a file on its datastore, replacing what has the new name. */
export async function moveFile(session: VsphereSession, from: DatastoreFile, to: DatastoreFile, options: FileManagerOptions = {}): Promise<void> {
  const dc = options.dc ?? (await resolveDatastore(session, from, options.signal));
  const task = await session.call<MoRef>('MoveDatastoreFile_Task', fileManager(session), {
    sourceName: datastorePath(from),
    sourceDatacenter: dc,
    destinationName: datastorePath(to),
    destinationDatacenter: dc,
    force: true,
  }, { signal: options.signal });
  await waitForTask(session, task, { phase: 'move datastore file', signal: options.signal });
}

/** Deletes a file; resolves false when there was none. */
export async function deleteFile(session: VsphereSession, file: DatastoreFile, options: FileManagerOptions = {}): Promise<boolean> {
  const dc = options.dc ?? (await resolveDatastore(session, file, options.signal));
  try {
    const task = await session.call<MoRef>('DeleteDatastoreFile_Task', fileManager(session), { name: datastorePath(file), datacenter: dc }, { signal: options.signal });
    await waitForTask(session, task, { phase: 'delete datastore file', signal: options.signal });
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'VSPHERE_FILE_NOT_FOUND') return false;
    throw err;
  }
}

function fileManager(session: VsphereSession): MoRef {
  const manager = session.content.fileManager;
  if (!manager) throw new Unsupported('datastore file management (the service has no FileManager)', session.endpoint.host);
  return manager;
}

/**
 * A 401 from the file API: the session the cookie names is gone (expired during a long upload, or
 * terminated). One SOAP call that needs a session finds that out the way every call does, and logs
 * in again (shared with concurrent calls); the cookie the next transfer sends is the new one.
 * Reading SessionManager.currentSession would not do: without a session it reads as empty rather
 * than failing, so nothing would log in again. A container view needs a session everywhere.
 */
async function renewSession(session: VsphereSession, signal?: AbortSignal): Promise<void> {
  await retrieve(session, { type: 'Datacenter', paths: ['name'], container: session.content.rootFolder, ...(signal ? { signal } : {}) });
}
