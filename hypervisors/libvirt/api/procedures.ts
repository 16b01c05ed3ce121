/**
 * The typed binding: each procedure is a few libvirt calls made synchronously on one worker thread
 * (pool.ts runs them), so that a failure's virGetLastError() is read on the thread that failed:
 * libvirt keeps the last error per thread. A procedure takes and returns plain values (handles are
 * numbers), looks up what it works on and frees it again, so nothing but the connection outlives
 * one call.
 */
import {
  VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK,
  VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY,
  VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL,
  VIR_DOMAIN_STATE,
  VIR_DOMAIN_XML,
  VIR_ERR,
  VIR_TYPED_PARAM,
} from './codes.js';
import { FRAME_HEADER_BYTES, frameLimit } from '../../screenshot-image.js';
import { eventsShim } from './events-shim.js';
import { BlockInfoStruct, ErrorStruct, koffi, libvirt, TypedParameterStruct, type Handle } from './native.js';

/** What libvirt said about a failed call, as posted back to the main thread. */
export interface FailureDetail {
  /** The C function that failed: "virDomainCreate". */
  call: string;
  code: number;
  domain: number;
  message: string;
}

export class ProcedureFailed extends Error {
  constructor(readonly detail: FailureDetail) {
    super(detail.message);
  }
}

export interface OpenedConnection {
  conn: Handle;
  /** The shim's number for this connection in its records; 0: none come. */
  watch: number;
  /** The pipe the shim writes its records to, the same for every connection of the process. */
  events: number;
}

/** A VM by UUID or name: a VM named like a UUID is still found by its name. */
export type DomainRef = string;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function fail(call: string): never {
  const n = libvirt();
  const err = n.virGetLastError();
  const e = err ? (koffi.decode(err, ErrorStruct) as { code: number; domain: number; message: string | null }) : undefined;
  n.virResetLastError();
  throw new ProcedureFailed({ call, code: e?.code ?? VIR_ERR.INTERNAL_ERROR, domain: e?.domain ?? 0, message: e?.message?.trim() || `${call} failed and libvirt gave no reason` });
}

/** A handle or string: NULL (0) is failure. */
function ok<T>(call: string, value: T): T {
  if (value === 0 || value === null) fail(call);
  return value;
}

/** An int: -1 is failure; counts and flags are 0 or more. */
function rc(call: string, value: number): number {
  if (value < 0) fail(call);
  return value;
}

function lookupDomain(conn: Handle, ref: DomainRef): Handle {
  const n = libvirt();
  n.virResetLastError();
  if (UUID.test(ref)) {
    const byUuid = n.virDomainLookupByUUIDString(conn, ref) as Handle;
    if (byUuid) return byUuid;
    if (lastErrorCode('virDomainLookupByUUIDString') !== VIR_ERR.NO_DOMAIN) fail('virDomainLookupByUUIDString');
  }
  return ok('virDomainLookupByName', n.virDomainLookupByName(conn, ref) as Handle);
}

/** The code of the error the call just left, which stays set (fail() reads it again). */
function lastErrorCode(call: string): number {
  return (koffi.decode(libvirt().virGetLastError() ?? fail(call), ErrorStruct) as { code: number }).code;
}

function withDomain<T>(conn: Handle, ref: DomainRef, fn: (dom: Handle) => T): T {
  const dom = lookupDomain(conn, ref);
  try {
    return fn(dom);
  } finally {
    libvirt().virDomainFree(dom);
  }
}

function withNetwork<T>(conn: Handle, name: string, fn: (net: Handle) => T): T {
  const n = libvirt();
  const net = ok('virNetworkLookupByName', n.virNetworkLookupByName(conn, name) as Handle);
  try {
    return fn(net);
  } finally {
    n.virNetworkFree(net);
  }
}

/**
 * Each handle of a list read by `read`, and every one freed, those after a read that failed too:
 * a handle holds its connection, which virConnectClose then does not close (a libvirtd socket
 * left open; on the test driver, its state kept for the process).
 */
function readEach<T>(handles: Handle[], read: (h: Handle) => T[], free: (h: Handle) => unknown): T[] {
  try {
    return handles.flatMap(read);
  } finally {
    for (const h of handles) free(h);
  }
}

/** A C array of handles libvirt allocated: read, then freed (the handles themselves by the caller). */
function takeHandles(array: unknown, count: number): Handle[] {
  if (count <= 0 || !array) return [];
  const handles = (koffi.decode(array, 'uintptr_t', count) as (number | bigint)[]).map(Number);
  libvirt().free(array);
  return handles;
}

/** Each checkpoint of the VM, parents before children, read by `read` and freed. */
function withCheckpoints<T>(conn: Handle, ref: DomainRef, read: (cp: Handle) => T): T[] {
  return withDomain(conn, ref, (dom) => {
    const n = libvirt();
    const out: unknown[] = [null];
    const count = rc('virDomainListAllCheckpoints', n.virDomainListAllCheckpoints(dom, out, VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL) as number);
    const handles = takeHandles(out[0], count);
    try {
      return handles.map(read);
    } finally {
      for (const cp of handles) n.virDomainCheckpointFree(cp);
    }
  });
}

function stateOf(dom: Handle): number {
  const state = [0];
  rc('virDomainGetState', libvirt().virDomainGetState(dom, state, [0], 0));
  return state[0]!;
}

function uuidOf(dom: Handle): string {
  const buf = Buffer.alloc(37);
  rc('virDomainGetUUIDString', libvirt().virDomainGetUUIDString(dom, buf));
  return buf.toString('latin1', 0, 36);
}

function autostartOf(get: (h: Handle, out: number[]) => number, call: string, h: Handle): boolean {
  const out = [0];
  rc(call, get(h, out));
  return out[0] === 1;
}

export interface DomainDescription {
  uuid: string;
  name: string;
  state: number;
  autostart: boolean;
  /** The live definition of a running VM, the persistent one of a shut-off VM. */
  xml: string;
  /** The persistent definition when the VM is not shut off (labels are written there). */
  inactiveXml?: string;
}

function describe(dom: Handle, flags: number): DomainDescription {
  const n = libvirt();
  const state = stateOf(dom);
  const description: DomainDescription = {
    uuid: uuidOf(dom),
    name: ok('virDomainGetName', n.virDomainGetName(dom) as string),
    state,
    autostart: autostartOf(n.virDomainGetAutostart, 'virDomainGetAutostart', dom),
    xml: ok('virDomainGetXMLDesc', n.virDomainGetXMLDesc(dom, flags) as string),
  };
  if (state !== VIR_DOMAIN_STATE.SHUTOFF) description.inactiveXml = ok('virDomainGetXMLDesc', n.virDomainGetXMLDesc(dom, flags | VIR_DOMAIN_XML.INACTIVE) as string);
  return description;
}

/** The VM described, or nothing when it was undefined meanwhile. */
function describeUnlessGone(dom: Handle, flags: number): DomainDescription[] {
  try {
    return [describe(dom, flags)];
  } catch (err) {
    if (err instanceof ProcedureFailed && err.detail.code === VIR_ERR.NO_DOMAIN) return [];
    throw err;
  }
}

export interface JobInfo {
  /** virDomainJobType */
  type: number;
  /** virDomainJobOperation, when libvirt says. */
  operation?: number;
}

export interface NetworkDescription {
  name: string;
  active: boolean;
  autostart: boolean;
  xml: string;
}

function describeNetwork(net: Handle): NetworkDescription {
  const n = libvirt();
  const active = rc('virNetworkIsActive', n.virNetworkIsActive(net) as number);
  return {
    name: ok('virNetworkGetName', n.virNetworkGetName(net) as string),
    active: active === 1,
    autostart: autostartOf(n.virNetworkGetAutostart, 'virNetworkGetAutostart', net),
    xml: ok('virNetworkGetXMLDesc', n.virNetworkGetXMLDesc(net, 0) as string),
  };
}

export const procedures = {
  /**
   * Opens a connection and watches it: its VMs' lifecycle and its closing come as records on the
   * pipe `events` under the number `watch` (events.ts); `watch` is 0 when the driver has no
   * lifecycle events. Without libvirt's keepalive: when keepalive gives a connection up while
   * several threads wait on it, libvirt 9.0's client leaves the I/O watch of the thread that gave
   * up on the connection's GLib context, pointing into that thread's stack; the thread waiting
   * next runs it once libvirtd answers, and the process crashes (docs/libvirt.md, "A frozen
   * libvirtd"). A silent libvirtd is noticed by calls timing out instead (connection.ts).
   * `watched: false` opens one without notices (a VM start's own connection, connection.ts).
   */
  open(uri: string, watched = true): OpenedConnection {
    const n = libvirt();
    const shim = eventsShim();
    // Events need libvirt's event loop registered before the first open.
    const events = rc('vmdr_events_start', shim.vmdr_events_start() as number);
    const conn = ok('virConnectOpen', n.virConnectOpen(uri) as Handle);
    if (!watched) return { conn, watch: 0, events };
    const watch = shim.vmdr_events_watch(conn) as number;
    if (watch < 0) n.virResetLastError();
    return { conn, watch: Math.max(watch, 0), events };
  },

  /** Unwatches the connection first: a callback of libvirt's on a freed connection would crash the process. */
  close(conn: Handle): void {
    eventsShim().vmdr_events_unwatch(conn);
    libvirt().virConnectClose(conn);
    libvirt().virResetLastError();
  },

  isAlive(conn: Handle): boolean {
    return libvirt().virConnectIsAlive(conn) === 1;
  },

  capabilities(conn: Handle): string {
    return ok('virConnectGetCapabilities', libvirt().virConnectGetCapabilities(conn) as string);
  },

  /**
   * Every VM (`listFlags` 0) or those virConnectListAllDomains' flags pick (ACTIVE: the running
   * ones), described; one undefined while the list is read is left out.
   */
  describeAllDomains(conn: Handle, flags: number, listFlags = 0): DomainDescription[] {
    const n = libvirt();
    const out: unknown[] = [null];
    const count = rc('virConnectListAllDomains', n.virConnectListAllDomains(conn, out, listFlags) as number);
    return readEach(takeHandles(out[0], count), (dom) => describeUnlessGone(dom, flags), (dom) => n.virDomainFree(dom));
  },

  describeDomain(conn: Handle, ref: DomainRef, flags: number): DomainDescription {
    return withDomain(conn, ref, (dom) => describe(dom, flags));
  },

  /** The VMs of these names, described, in one call; a name no VM has is left out. */
  describeDomainsNamed(conn: Handle, names: string[], flags: number): DomainDescription[] {
    const n = libvirt();
    return names.flatMap((name) => {
      n.virResetLastError();
      const dom = n.virDomainLookupByName(conn, name) as Handle;
      if (dom) return readEach([dom], (d) => describeUnlessGone(d, flags), (d) => n.virDomainFree(d));
      if (lastErrorCode('virDomainLookupByName') !== VIR_ERR.NO_DOMAIN) fail('virDomainLookupByName');
      n.virResetLastError();
      return [];
    });
  },

  identifyDomain(conn: Handle, ref: DomainRef): { uuid: string; name: string } {
    return withDomain(conn, ref, (dom) => ({ uuid: uuidOf(dom), name: ok('virDomainGetName', libvirt().virDomainGetName(dom) as string) }));
  },

  domainState(conn: Handle, ref: DomainRef): number {
    return withDomain(conn, ref, stateOf);
  },

  /** The state and libvirt's reason for it (a paused VM's: VIR_DOMAIN_PAUSED). */
  domainStateReason(conn: Handle, ref: DomainRef): { state: number; reason: number } {
    return withDomain(conn, ref, (dom) => {
      const state = [0];
      const reason = [0];
      rc('virDomainGetState', libvirt().virDomainGetState(dom, state, reason, 0));
      return { state: state[0]!, reason: reason[0]! };
    });
  },

  domainXml(conn: Handle, ref: DomainRef, flags: number): string {
    return withDomain(conn, ref, (dom) => ok('virDomainGetXMLDesc', libvirt().virDomainGetXMLDesc(dom, flags) as string));
  },

  /** Defines (or redefines, for the same name and UUID) a VM; returns its UUID. */
  defineDomain(conn: Handle, xml: string): string {
    const n = libvirt();
    const dom = ok('virDomainDefineXML', n.virDomainDefineXML(conn, xml) as Handle);
    try {
      return uuidOf(dom);
    } finally {
      n.virDomainFree(dom);
    }
  },

  undefineDomain(conn: Handle, ref: DomainRef, flags: number): void {
    withDomain(conn, ref, (dom) => rc('virDomainUndefineFlags', libvirt().virDomainUndefineFlags(dom, flags)));
  },

  /**
   * With `handOff` (pool.ts), the shim's own thread looks the VM up and starts it, and this returns
   * at once: the outcome comes as the shim's record numbered `handOff` (events.ts).
   */
  startDomain(conn: Handle, ref: DomainRef, handOff?: number): void {
    if (handOff === undefined) {
      withDomain(conn, ref, (dom) => rc('virDomainCreate', libvirt().virDomainCreate(dom)));
      return;
    }
    if ((eventsShim().vmdr_start_domain(conn, ref, handOff) as number) < 0) {
      throw new ProcedureFailed({ call: 'vmdr_start_domain', code: VIR_ERR.INTERNAL_ERROR, domain: 0, message: 'no thread could be made to start the VM' });
    }
  },

  shutdownDomain(conn: Handle, ref: DomainRef): void {
    withDomain(conn, ref, (dom) => rc('virDomainShutdown', libvirt().virDomainShutdown(dom)));
  },

  destroyDomain(conn: Handle, ref: DomainRef): void {
    withDomain(conn, ref, (dom) => rc('virDomainDestroy', libvirt().virDomainDestroy(dom)));
  },

  /** Stops the VM's vCPUs (its disks see no write until resumeDomain): the consistency group's instant. */
  suspendDomain(conn: Handle, ref: DomainRef): void {
    withDomain(conn, ref, (dom) => rc('virDomainSuspend', libvirt().virDomainSuspend(dom)));
  },

  resumeDomain(conn: Handle, ref: DomainRef): void {
    withDomain(conn, ref, (dom) => rc('virDomainResume', libvirt().virDomainResume(dom)));
  },

  setDomainAutostart(conn: Handle, ref: DomainRef, autostart: boolean): void {
    withDomain(conn, ref, (dom) => rc('virDomainSetAutostart', libvirt().virDomainSetAutostart(dom, autostart ? 1 : 0)));
  },

  /** Virtual sizes of the named disks, as QEMU (or the image header) reports them. */
  diskCapacities(conn: Handle, ref: DomainRef, disks: string[]): Record<string, number> {
    return withDomain(conn, ref, (dom) => {
      const sizes: Record<string, number> = {};
      for (const disk of disks) {
        const info = { capacity: 0 as number | bigint };
        rc('virDomainGetBlockInfo', libvirt().virDomainGetBlockInfo(dom, disk, info, 0));
        sizes[disk] = Number(info.capacity);
      }
      return sizes;
    });
  },

  /** One QEMU guest agent command (JSON); its JSON answer. */
  agentCommand(conn: Handle, ref: DomainRef, command: string, timeoutSeconds: number): string {
    return withDomain(conn, ref, (dom) => ok('virDomainQemuAgentCommand', libvirt().virDomainQemuAgentCommand(dom, command, timeoutSeconds, 0) as string));
  },

  /**
   * One QMP command (JSON) on the VM's QEMU monitor, through libvirt (transient-bitmaps.ts says
   * why); QEMU's JSON answer, an `error` member included: the caller reads it.
   */
  monitorCommand(conn: Handle, ref: DomainRef, command: string): string {
    return withDomain(conn, ref, (dom) => {
      const n = libvirt();
      const out: unknown[] = [null];
      rc('virDomainQemuMonitorCommand', n.virDomainQemuMonitorCommand(dom, command, out, 0) as number);
      try {
        return koffi.decode(out[0], 'char', -1) as string;
      } finally {
        n.free(out[0]);
      }
    });
  },

  /** One checkpoint's XML. */
  checkpointXml(conn: Handle, ref: DomainRef, name: string): string {
    return withDomain(conn, ref, (dom) => {
      const n = libvirt();
      const cp = ok('virDomainCheckpointLookupByName', n.virDomainCheckpointLookupByName(dom, name, 0) as Handle);
      try {
        return ok('virDomainCheckpointGetXMLDesc', n.virDomainCheckpointGetXMLDesc(cp, 0) as string);
      } finally {
        n.virDomainCheckpointFree(cp);
      }
    });
  },

  /**
   * Freezes (`freeze`) or thaws the guest's mounted filesystems through its agent; the count it
   * froze or thawed. The agent gets `timeoutSeconds` to answer: libvirt keeps that bound per VM
   * (virDomainAgentSetResponseTimeout), so it is set for this one call and put back to libvirt's
   * default (wait without end) after it. An answer that comes later is dropped by libvirt, whose
   * next agent call syncs with the agent first.
   */
  agentFilesystems(conn: Handle, ref: DomainRef, action: 'freeze' | 'thaw', timeoutSeconds: number): number {
    return withDomain(conn, ref, (dom) => {
      const n = libvirt();
      rc('virDomainAgentSetResponseTimeout', n.virDomainAgentSetResponseTimeout(dom, timeoutSeconds, 0));
      try {
        return action === 'freeze' ? rc('virDomainFSFreeze', n.virDomainFSFreeze(dom, null, 0, 0)) : rc('virDomainFSThaw', n.virDomainFSThaw(dom, null, 0, 0));
      } finally {
        // A failure here must not hide the freeze's own: virGetLastError was read by rc already.
        if (n.virDomainAgentSetResponseTimeout(dom, VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK, 0) < 0) n.virResetLastError();
      }
    });
  },

  /**
   * The picture on the VM's screen `screen` (0: the first display), as libvirt streams it: its
   * MIME type and its bytes. The frame's own header bounds how much is read (screenshot-image.ts):
   * a frame larger than it says, or than any screen, is refused (`refused`, the stream aborted)
   * before more of it is buffered.
   */
  screenshot(conn: Handle, ref: DomainRef, screen: number): { mime: string; data: Uint8Array } | { mime: string; refused: string } {
    return withDomain(conn, ref, (dom) => {
      const n = libvirt();
      const st = ok('virStreamNew', n.virStreamNew(conn, 0) as Handle);
      let finished = false;
      try {
        const mime = ok('virDomainScreenshot', n.virDomainScreenshot(dom, st, screen, 0) as string);
        const refuse = (refused: string) => ({ mime, refused });
        const chunks: Buffer[] = [];
        const buffer = Buffer.alloc(256 * 1024);
        let total = 0;
        let limit: number | undefined;
        for (;;) {
          const got = rc('virStreamRecv', n.virStreamRecv(st, buffer, buffer.length) as number);
          if (got === 0) break;
          chunks.push(Buffer.from(buffer.subarray(0, got)));
          total += got;
          if (limit === undefined) {
            const head = Buffer.concat(chunks).subarray(0, FRAME_HEADER_BYTES);
            const frame = frameLimit(mime, head);
            if ('refused' in frame) return refuse(frame.refused);
            if (frame.more) continue;
            limit = frame.maxBytes;
          }
          if (total > limit) return refuse(`the image is larger than its header allows (more than ${limit} bytes)`);
        }
        rc('virStreamFinish', n.virStreamFinish(st));
        finished = true;
        return { mime, data: Buffer.concat(chunks) };
      } finally {
        // A stream read to its end is finished; any other (a failure, a refused frame) is aborted.
        if (!finished) n.virStreamAbort(st);
        n.virStreamFree(st);
        if (!finished) n.virResetLastError();
      }
    });
  },

  /** Parents before children. */
  listCheckpoints(conn: Handle, ref: DomainRef): { name: string; xml: string }[] {
    return withCheckpoints(conn, ref, (cp) => ({
      name: ok('virDomainCheckpointGetName', libvirt().virDomainCheckpointGetName(cp) as string),
      xml: ok('virDomainCheckpointGetXMLDesc', libvirt().virDomainCheckpointGetXMLDesc(cp, 0) as string),
    }));
  },

  listCheckpointNames(conn: Handle, ref: DomainRef): string[] {
    return withCheckpoints(conn, ref, (cp) => ok('virDomainCheckpointGetName', libvirt().virDomainCheckpointGetName(cp) as string));
  },

  deleteCheckpoint(conn: Handle, ref: DomainRef, name: string, metadataOnly: boolean): void {
    withDomain(conn, ref, (dom) => {
      const n = libvirt();
      const cp = ok('virDomainCheckpointLookupByName', n.virDomainCheckpointLookupByName(dom, name, 0) as Handle);
      try {
        rc('virDomainCheckpointDelete', n.virDomainCheckpointDelete(cp, metadataOnly ? VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY : 0));
      } finally {
        n.virDomainCheckpointFree(cp);
      }
    });
  },

  beginBackup(conn: Handle, ref: DomainRef, backupXml: string, checkpointXml: string | null, flags: number): void {
    withDomain(conn, ref, (dom) => rc('virDomainBackupBegin', libvirt().virDomainBackupBegin(dom, backupXml, checkpointXml, flags)));
  },

  backupXml(conn: Handle, ref: DomainRef): string {
    return withDomain(conn, ref, (dom) => ok('virDomainBackupGetXMLDesc', libvirt().virDomainBackupGetXMLDesc(dom, 0) as string));
  },

  abortJob(conn: Handle, ref: DomainRef): void {
    withDomain(conn, ref, (dom) => rc('virDomainAbortJob', libvirt().virDomainAbortJob(dom)));
  },

  jobInfo(conn: Handle, ref: DomainRef): JobInfo {
    return withDomain(conn, ref, (dom) => {
      const n = libvirt();
      const type = [0];
      const params: unknown[] = [null];
      const count = [0];
      rc('virDomainGetJobStats', n.virDomainGetJobStats(dom, type, params, count, 0));
      const info: JobInfo = { type: type[0]! };
      if (params[0] && count[0]! > 0) {
        const list = koffi.decode(params[0], TypedParameterStruct, count[0]!) as { field: string; type: number; value: number | bigint }[];
        const operation = list.find((p) => p.field === 'operation' && p.type === VIR_TYPED_PARAM.INT);
        // The union's low 32 bits hold an int.
        if (operation) info.operation = Number(BigInt.asIntN(32, BigInt(operation.value)));
        n.virTypedParamsFree(params[0], count[0]!);
      }
      return info;
    });
  },

  describeAllNetworks(conn: Handle): NetworkDescription[] {
    const n = libvirt();
    const out: unknown[] = [null];
    const count = rc('virConnectListAllNetworks', n.virConnectListAllNetworks(conn, out, 0) as number);
    const described = (net: Handle): NetworkDescription[] => {
      try {
        return [describeNetwork(net)];
      } catch (err) {
        if (err instanceof ProcedureFailed && err.detail.code === VIR_ERR.NO_NETWORK) return [];
        throw err;
      }
    };
    return readEach(takeHandles(out[0], count), described, (net) => n.virNetworkFree(net));
  },

  describeNetwork(conn: Handle, name: string): NetworkDescription {
    return withNetwork(conn, name, describeNetwork);
  },

  /** Defines a persistent network, then starts it and marks it autostart as asked. */
  defineNetwork(conn: Handle, xml: string, options: { start: boolean; autostart: boolean }): string {
    const n = libvirt();
    const net = ok('virNetworkDefineXML', n.virNetworkDefineXML(conn, xml) as Handle);
    try {
      if (options.autostart) rc('virNetworkSetAutostart', n.virNetworkSetAutostart(net, 1));
      if (options.start && n.virNetworkIsActive(net) !== 1) rc('virNetworkCreate', n.virNetworkCreate(net));
      return ok('virNetworkGetName', n.virNetworkGetName(net) as string);
    } finally {
      n.virNetworkFree(net);
    }
  },

  startNetwork(conn: Handle, name: string): void {
    withNetwork(conn, name, (net) => rc('virNetworkCreate', libvirt().virNetworkCreate(net)));
  },

  setNetworkAutostart(conn: Handle, name: string, autostart: boolean): void {
    withNetwork(conn, name, (net) => rc('virNetworkSetAutostart', libvirt().virNetworkSetAutostart(net, autostart ? 1 : 0)));
  },

  /** Stops it if it runs, then removes its definition. */
  removeNetwork(conn: Handle, name: string): void {
    withNetwork(conn, name, (net) => {
      const n = libvirt();
      if (n.virNetworkIsActive(net) === 1) rc('virNetworkDestroy', n.virNetworkDestroy(net));
      rc('virNetworkUndefine', n.virNetworkUndefine(net));
    });
  },

  /** For tests of the pool: a call that blocks its thread, as a hung libvirtd would. */
  sleepForTest(ms: number): void {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  },
};

export type Procedures = typeof procedures;
