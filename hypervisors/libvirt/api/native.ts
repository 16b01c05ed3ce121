/**
 * libvirt's C API, declared for koffi over Debian's libvirt.so.0 (and libvirt-qemu.so.0 for the
 * guest agent and QEMU's monitor). Why an FFI and not an N-API addon: the addon vmdr used (@unraid/libvirt) lacked
 * checkpoints, backups, jobs, networks, autostart and the agent, and dropped libvirt's error code
 * from every failure; libvirt's RPC protocol is not a stable interface to speak ourselves.
 *
 * Every handle (virConnectPtr, virDomainPtr, ...) is declared as uintptr_t, so it is a plain number
 * that can be posted between worker threads: all threads of the process share one libvirt, and a
 * handle made on one thread is valid on every other. This module is loaded by each thread that
 * calls libvirt (see pool.ts); nothing here runs a call.
 */
import koffi from 'koffi';

export type Handle = number;

const H = 'uintptr_t';

/** `char *` results the caller must free(): koffi copies the string and frees the C one. */
const ownedString = koffi.disposable('vmdr_owned_str', 'str');

export const ErrorStruct = koffi.struct('vmdr_virError', {
  code: 'int',
  domain: 'int',
  message: 'char *',
  level: 'int',
  conn: 'void *',
  dom: 'void *',
  str1: 'char *',
  str2: 'char *',
  str3: 'char *',
  int1: 'int',
  int2: 'int',
  net: 'void *',
});

export const BlockInfoStruct = koffi.struct('vmdr_virDomainBlockInfo', {
  capacity: 'uint64',
  allocation: 'uint64',
  physical: 'uint64',
});

/** virTypedParameter: the value union is read as its 8 bytes and interpreted by `type`. */
export const TypedParameterStruct = koffi.struct('vmdr_virTypedParameter', {
  field: koffi.array('char', 80, 'String'),
  type: 'int',
  value: 'int64',
});


function declare() {
  const lib = koffi.load('libvirt.so.0');
  const qemu = koffi.load('libvirt-qemu.so.0');
  const libc = koffi.load('libc.so.6');
  const f = (ret: string | koffi.IKoffiCType, name: string, args: (string | koffi.IKoffiCType)[]) => lib.func(name, ret, args);
  return {
    // errors
    virGetLastError: f(koffi.pointer(ErrorStruct), 'virGetLastError', []),
    virResetLastError: f('void', 'virResetLastError', []),
    virSetErrorFunc: f('void', 'virSetErrorFunc', ['void *', 'void *']),
    dlsym: libc.func('void *dlsym(void *handle, const char *symbol)'),
    free: libc.func('void free(void *ptr)'),

    // connections
    virConnectOpen: f(H, 'virConnectOpen', ['str']),
    virConnectClose: f('int', 'virConnectClose', [H]),
    virConnectIsAlive: f('int', 'virConnectIsAlive', [H]),
    virConnectGetCapabilities: f(ownedString, 'virConnectGetCapabilities', [H]),

    // domains
    virConnectListAllDomains: f('int', 'virConnectListAllDomains', [H, koffi.out(koffi.pointer('void *')), 'uint']),
    virDomainLookupByName: f(H, 'virDomainLookupByName', [H, 'str']),
    virDomainLookupByUUIDString: f(H, 'virDomainLookupByUUIDString', [H, 'str']),
    virDomainFree: f('int', 'virDomainFree', [H]),
    virDomainGetName: f('str', 'virDomainGetName', [H]),
    virDomainGetUUIDString: f('int', 'virDomainGetUUIDString', [H, 'void *']),
    virDomainGetState: f('int', 'virDomainGetState', [H, koffi.out(koffi.pointer('int')), koffi.out(koffi.pointer('int')), 'uint']),
    virDomainGetXMLDesc: f(ownedString, 'virDomainGetXMLDesc', [H, 'uint']),
    virDomainDefineXML: f(H, 'virDomainDefineXML', [H, 'str']),
    virDomainUndefineFlags: f('int', 'virDomainUndefineFlags', [H, 'uint']),
    virDomainCreate: f('int', 'virDomainCreate', [H]),
    virDomainShutdown: f('int', 'virDomainShutdown', [H]),
    virDomainDestroy: f('int', 'virDomainDestroy', [H]),
    virDomainSuspend: f('int', 'virDomainSuspend', [H]),
    virDomainResume: f('int', 'virDomainResume', [H]),
    virDomainGetAutostart: f('int', 'virDomainGetAutostart', [H, koffi.out(koffi.pointer('int'))]),
    virDomainSetAutostart: f('int', 'virDomainSetAutostart', [H, 'int']),
    virDomainGetBlockInfo: f('int', 'virDomainGetBlockInfo', [H, 'str', koffi.out(koffi.pointer(BlockInfoStruct)), 'uint']),
    virDomainQemuAgentCommand: qemu.func('virDomainQemuAgentCommand', ownedString, [H, 'str', 'int', 'uint']),
    virDomainQemuMonitorCommand: qemu.func('virDomainQemuMonitorCommand', 'int', [H, 'str', koffi.out(koffi.pointer('void *')), 'uint']),
    // The guest agent's filesystem freeze (all mounted filesystems: no mount points given).
    virDomainAgentSetResponseTimeout: f('int', 'virDomainAgentSetResponseTimeout', [H, 'int', 'uint']),
    virDomainFSFreeze: f('int', 'virDomainFSFreeze', [H, 'void *', 'uint', 'uint']),
    virDomainFSThaw: f('int', 'virDomainFSThaw', [H, 'void *', 'uint', 'uint']),
    virDomainScreenshot: f(ownedString, 'virDomainScreenshot', [H, H, 'uint', 'uint']),

    // streams (blocking: each is read to its end on the worker thread that opened it)
    virStreamNew: f(H, 'virStreamNew', [H, 'uint']),
    virStreamRecv: f('int', 'virStreamRecv', [H, 'void *', 'size_t']),
    virStreamFinish: f('int', 'virStreamFinish', [H]),
    virStreamAbort: f('int', 'virStreamAbort', [H]),
    virStreamFree: f('int', 'virStreamFree', [H]),

    // checkpoints, backups, jobs
    virDomainListAllCheckpoints: f('int', 'virDomainListAllCheckpoints', [H, koffi.out(koffi.pointer('void *')), 'uint']),
    virDomainCheckpointLookupByName: f(H, 'virDomainCheckpointLookupByName', [H, 'str', 'uint']),
    virDomainCheckpointGetName: f('str', 'virDomainCheckpointGetName', [H]),
    virDomainCheckpointGetXMLDesc: f(ownedString, 'virDomainCheckpointGetXMLDesc', [H, 'uint']),
    virDomainCheckpointDelete: f('int', 'virDomainCheckpointDelete', [H, 'uint']),
    virDomainCheckpointFree: f('int', 'virDomainCheckpointFree', [H]),
    virDomainBackupBegin: f('int', 'virDomainBackupBegin', [H, 'str', 'str', 'uint']),
    virDomainBackupGetXMLDesc: f(ownedString, 'virDomainBackupGetXMLDesc', [H, 'uint']),
    virDomainAbortJob: f('int', 'virDomainAbortJob', [H]),
    virDomainGetJobStats: f('int', 'virDomainGetJobStats', [
      H,
      koffi.out(koffi.pointer('int')),
      koffi.out(koffi.pointer('void *')),
      koffi.out(koffi.pointer('int')),
      'uint',
    ]),
    virTypedParamsFree: f('void', 'virTypedParamsFree', ['void *', 'int']),

    // networks
    virConnectListAllNetworks: f('int', 'virConnectListAllNetworks', [H, koffi.out(koffi.pointer('void *')), 'uint']),
    virNetworkLookupByName: f(H, 'virNetworkLookupByName', [H, 'str']),
    virNetworkFree: f('int', 'virNetworkFree', [H]),
    virNetworkGetName: f('str', 'virNetworkGetName', [H]),
    virNetworkGetXMLDesc: f(ownedString, 'virNetworkGetXMLDesc', [H, 'uint']),
    virNetworkIsActive: f('int', 'virNetworkIsActive', [H]),
    virNetworkGetAutostart: f('int', 'virNetworkGetAutostart', [H, koffi.out(koffi.pointer('int'))]),
    virNetworkSetAutostart: f('int', 'virNetworkSetAutostart', [H, 'int']),
    virNetworkDefineXML: f(H, 'virNetworkDefineXML', [H, 'str']),
    virNetworkCreate: f('int', 'virNetworkCreate', [H]),
    virNetworkDestroy: f('int', 'virNetworkDestroy', [H]),
    virNetworkUndefine: f('int', 'virNetworkUndefine', [H]),
  };
}

export type Native = ReturnType<typeof declare>;

let native: Native | undefined;

/** Loaded on first use, once per thread. libvirt's own printing of every error to stderr is turned off. */
export function libvirt(): Native {
  if (native) return native;
  native = declare();
  // libvirt prints each error to stderr unless a handler is set; vmdr reads errors itself (through
  // virGetLastError on the failing thread). The handler must be a C function that is safe to call
  // from any thread and ignores its two arguments: getpid() is one, where a JS callback would have
  // to hop threads for every error.
  native.virSetErrorFunc(null, native.dlsym(null, 'getpid'));
  return native;
}

export { koffi };
