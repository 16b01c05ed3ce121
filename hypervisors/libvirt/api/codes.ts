/**
 * libvirt's numbers that vmdr branches on (virterror.h, libvirt-domain.h, ...). Only those in use:
 * each is an ABI promise of libvirt's and never changes value.
 */

/** virErrorNumber */
export const VIR_ERR = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_CONN: 6,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  XML_ERROR: 27,
  DOM_EXIST: 28,
  XML_DETAIL: 35,
  NETWORK_EXIST: 37,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  NO_NETWORK: 43,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  CONFIG_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68,
  HOOK_SCRIPT_FAILED: 70,
  ARGUMENT_UNSUPPORTED: 74,
  OPERATION_UNSUPPORTED: 84,
  AGENT_UNRESPONSIVE: 86,
  RESOURCE_BUSY: 87,
  XML_INVALID_SCHEMA: 92,
  AGENT_UNSYNCED: 97,
  NO_DOMAIN_CHECKPOINT: 103,
  NO_DOMAIN_BACKUP: 104,
  CHECKPOINT_INCONSISTENT: 109,
} as const;

/** virErrorDomain: which part of libvirt raised the error. */
export const VIR_FROM = {
  RPC: 7,
  QEMU: 10,
  TEST: 12,
  REMOTE: 13,
} as const;

/** virDomainState */
export const VIR_DOMAIN_STATE = { NOSTATE: 0, RUNNING: 1, BLOCKED: 2, PAUSED: 3, SHUTDOWN: 4, SHUTOFF: 5, CRASHED: 6, PMSUSPENDED: 7 } as const;
/** virDomainPausedReason: why a paused VM is paused (USER: virDomainSuspend, vmdr's or a person's `virsh suspend`). */
export const VIR_DOMAIN_PAUSED = { UNKNOWN: 0, USER: 1, MIGRATION: 2, SAVE: 3, DUMP: 4, IOERROR: 5, WATCHDOG: 6, FROM_SNAPSHOT: 7, SHUTTING_DOWN: 8, SNAPSHOT: 9, CRASHED: 10, STARTING_UP: 11, POSTCOPY: 12, POSTCOPY_FAILED: 13 } as const;

/** virDomainEventType: what a lifecycle event reports (api/events.ts). */
export const VIR_DOMAIN_EVENT = { DEFINED: 0, UNDEFINED: 1, STARTED: 2, SUSPENDED: 3, RESUMED: 4, STOPPED: 5, SHUTDOWN: 6, PMSUSPENDED: 7, CRASHED: 8 } as const;
/** virDomainEventStoppedDetailType: why a VM stopped. */
export const VIR_DOMAIN_EVENT_STOPPED = { SHUTDOWN: 0, DESTROYED: 1, CRASHED: 2, MIGRATED: 3, SAVED: 4, FAILED: 5, FROM_SNAPSHOT: 6 } as const;

export const VIR_DOMAIN_XML = { SECURE: 1 << 0, INACTIVE: 1 << 1 } as const;
/** virConnectListAllDomainsFlags */
export const VIR_CONNECT_LIST_DOMAINS = { ACTIVE: 1 << 0 } as const;

/** virDomainBackupBeginFlags */
export const VIR_DOMAIN_BACKUP_BEGIN = { REUSE_EXTERNAL: 1 << 0 } as const;
export const VIR_DOMAIN_UNDEFINE = { SNAPSHOTS_METADATA: 1 << 1, KEEP_NVRAM: 1 << 3, CHECKPOINTS_METADATA: 1 << 4 } as const;

export const VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL = 1 << 1;
export const VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY = 1 << 1;

/** virDomainJobType, and the job operation a backup has. */
export const VIR_DOMAIN_JOB = { NONE: 0, BOUNDED: 1, UNBOUNDED: 2, COMPLETED: 3, FAILED: 4, CANCELLED: 5 } as const;
export const VIR_DOMAIN_JOB_OPERATION_BACKUP = 9;
/** virDomainJobOperation, in the user's words. */
export const JOB_OPERATIONS = ['unknown', 'start', 'save', 'restore', 'incoming migration', 'outgoing migration', 'snapshot', 'snapshot revert', 'dump', 'backup', 'snapshot delete'] as const;

/** virTypedParameterType */
export const VIR_TYPED_PARAM = { INT: 1, UINT: 2, LLONG: 3, ULLONG: 4, DOUBLE: 5, BOOLEAN: 6, STRING: 7 } as const;

/** virConnectCloseReason */
export const CLOSE_REASONS = ['I/O error', 'end of file from libvirtd', 'keepalive timed out', 'closed by this process'] as const;

/** virDomainAgentResponseTimeoutValues: libvirt's own default for a VM's agent calls is to wait without end. */
export const VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK = -2;

/** virQemuAgentCommandTimeoutValues: wait for the agent as long as libvirt's default. */
export const VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT = -1;
