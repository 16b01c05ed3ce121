/**
 * The one interface through which plugin/ talks to a hypervisor. It speaks in the product's words
 * (VMs, disks, NICs, identity, power, isolated networks, change tracking), not in libvirt's or
 * vSphere's. Each adapter folder implements it; the registry in hypervisors/index.ts picks one by URI.
 */
export * from './errors.js';
import type { ScreenImage } from './screenshot-image.js';
export type { ScreenImage };

export type PowerState = 'running' | 'paused' | 'shutoff' | 'shutting-down' | 'crashed' | 'suspended' | 'unknown';

export interface DiskInfo {
  /** Guest-visible target name (vda, sdb, scsi0:1). */
  target: string;
  device: 'disk' | 'cdrom';
  /** Host path of the image (libvirt) or datastore path (vSphere). */
  path?: string;
  format?: string;
  bus?: string;
  /** Virtual size in bytes, when the hypervisor can tell without reading the disk; absent when it cannot be read without putting the running VM at risk. */
  capacityBytes?: number;
  /** True for the identity seed vmdr attached (applyGuestIdentity): not a disk to replicate. */
  identitySeed?: boolean;
}

export interface NicInfo {
  mac: string;
  /** The network (libvirt network or vSphere port group) the NIC is attached to. */
  network?: string;
  /** A host bridge, when attached to one directly rather than through a network. */
  bridge?: string;
  model?: string;
}

export interface VmInfo {
  name: string;
  /** Stable identity: the libvirt UUID or the vSphere instance UUID. */
  id: string;
  powerState: PowerState;
  memoryMiB: number;
  vcpus: number;
  disks: DiskInfo[];
  nics: NicInfo[];
  /**
   * vmdr's marks: on the VMs it made (role, tenant, protection), and on a source VM it fenced
   * (role=fenced). Empty on a VM vmdr never marked.
   */
  labels: Record<string, string>;
  /**
   * The hypervisor starts the VM when it starts itself (libvirt's autostart). Read by getVm only
   * (listVms leaves it out), and absent where the hypervisor cannot tell.
   */
  autostart?: boolean;
}

export interface DiskSpec {
  /**
   * Host path of the image (on the host vmdr runs on), or a datastore path (`[ds1] web1/web1.vmdk`)
   * on vSphere. A hypervisor that cannot open this host's files (vSphere) gives a host path's disk
   * an empty disk of `sizeBytes` on its own storage instead: a pre-staged target's placeholder,
   * which a boot from a recovery point replaces (prepareBootDisks).
   */
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
  /** The disk's virtual size: what a placeholder disk is made with (required where one is made). */
  sizeBytes?: number;
  /** Guest-visible target (vda, vdb ...); assigned in order when omitted. */
  target?: string;
  device?: 'disk' | 'cdrom';
  readonly?: boolean;
}

export interface NicSpec {
  network: string;
  mac?: string;
  model?: string;
}

/** Boot straight into a kernel and initrd (the lab guest), or from the first disk via firmware. */
export type BootSpec =
  | { kind: 'kernel'; kernel: string; initrd: string; cmdline: string }
  | { kind: 'disk' };

export interface VmSpec {
  name: string;
  memoryMiB: number;
  vcpus: number;
  boot: BootSpec;
  disks: DiskSpec[];
  nics: NicSpec[];
  /** A file the guest's serial console is written to: the simplest health signal. */
  serialLog?: string;
  /**
   * Give the VM the channel a QEMU guest agent inside it answers on (libvirt: the virtio-serial
   * port org.qemu.guest_agent.0): health checks ping it, and app-consistent points freeze the
   * guest's filesystems through it. vSphere VMs reach VMware Tools without one: ignored there.
   */
  guestAgent?: boolean;
  labels?: Record<string, string>;
  /**
   * Make the VM as a copy of this VM's hardware, with this spec's disks, NICs and labels: how a
   * drill's VM matches its pre-staged target. vSphere makes a linked clone from a snapshot of it;
   * libvirt defines from the spec alone (the spec already describes the same hardware).
   */
  cloneOf?: string;
  /**
   * Adapter-specific template to render the VM from (for libvirt: a domain XML file under
   * templates/domains/ or an absolute path). The adapter's default is used when omitted.
   */
  template?: string;
}

export interface NicIdentity {
  mac?: string;
  network?: string;
}

/** One disk of a recovery point, as the replica holds it: what a boot from that point starts from. */
export interface PointDisk {
  /** Guest-visible target (vda, sdb, scsi0:1). */
  target: string;
  /** The point's image of the disk (libvirt: a qcow2 file of the replica chain). Never written. */
  image: string;
  /** The disk's virtual size at that point. */
  sizeBytes: number;
}

/** What a VM booted from a recovery point runs on, per disk (see prepareBootDisks). */
export interface BootDisk {
  target: string;
  /** Host path (libvirt) or datastore path (vSphere) of what the VM opens. */
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
}

export interface BootDisksRequest {
  /**
   * What this boot is called (`failover-<run>`, `drill-<run>`): letters, digits, '.', '_', '-'.
   * The same name finds again what was prepared for it, so a resumed step keeps what a booted
   * guest wrote and a release removes exactly that.
   */
  boot: string;
  disks: PointDisk[];
}

/** Who the guest is once it boots at the DR site: its NICs in the hypervisor and its own settings. */
export interface GuestIdentity {
  /**
   * Names this identity; a new one makes the guest's agent (cloud-init, cloudbase-init, VMware
   * customization) apply it again. Letters, digits, '.', '_', ':', '-'; at most 128.
   */
  instanceId: string;
  hostname: string;
  /** In the VM's NIC order: the first is given to the VM's first NIC. */
  nics: GuestNicIdentity[];
}

export interface GuestNicIdentity {
  /** The MAC the NIC takes; absent, it keeps the one it has. */
  mac?: string;
  /** The network (libvirt network, vSphere port group) it joins; absent, it stays where it is. */
  network?: string;
  /** IPv4 address/prefix, as the guest configures them. */
  addresses: string[];
  gateway?: string;
  dns?: string[];
}

export interface AppliedGuestIdentity {
  /** The VM's NICs as the guest finds them: a NIC that was given no MAC keeps the hypervisor's. */
  nics: { mac: string; network?: string }[];
  /** Where the in-guest identity is kept, when it is a file (libvirt: the seed image): for the record. */
  seed?: string;
  /** False when the VM already had this very identity and nothing was changed. */
  written: boolean;
}

export interface StopOptions {
  /** graceful: ask the guest (ACPI / guest tools); force: pull the plug. */
  mode: 'graceful' | 'force';
  /** How long a graceful stop may take. */
  timeoutMs?: number;
  /** After timeoutMs, pull the plug instead of failing. */
  forceOnTimeout?: boolean;
  /** Abandons the wait for a graceful stop (the guest may still be shutting down). */
  signal?: AbortSignal;
}

export interface NetworkInfo {
  name: string;
  bridge?: string;
  active: boolean;
  /** True when the network has no forwarding and no host address: nothing leaves it. */
  isolated: boolean;
  /** Present on networks vmdr made (ensureIsolatedNetwork): their labels. Absent on foreign ones. */
  labels?: Record<string, string>;
}

export interface IsolatedNetworkSpec {
  name: string;
  /** Host bridge name (at most 15 characters on Linux). Derived from the name when omitted. */
  bridge?: string;
  labels?: Record<string, string>;
}

/**
 * The shape every long operation reports progress in (sync cycles, failover steps, the failback
 * copy, retention merges, provisioning); the CLI draws it, the daemon logs its steps, the API
 * streams it. There is no other progress type: extend this one.
 */
export interface Progress {
  phase: string;
  /** `done <= total`; the last event of a phase that ended well has `done === total`. */
  done: number;
  total: number;
  /** What done and total count: bytes (drawn as a bar with rate and ETA) or steps (a line each). Default steps. */
  unit?: 'bytes' | 'steps';
  /** Which object the work is about: several run at once (a plan's VMs, a VM's disks). */
  subject?: ProgressSubject;
  detail?: string;
  /**
   * Bytes per second a bytes phase is held to now (a bandwidth limit): it ends in about
   * (total - done - zero bytes left) / limit, less where data compresses.
   */
  limit?: number;
  /**
   * Of `done` and `total`, the bytes of ranges that travel as zero commands (holes, ranges that
   * read as zeroes), not as data: a sync cycle's `ship`. They cost a frame header each, however
   * large, so the time left counts only the rest.
   */
  zeroes?: { done: number; total: number };
}

export interface ProgressSubject {
  protection?: string;
  vm?: string;
  disk?: string;
  /** A failover run's id. */
  failover?: string;
  /** A recovery point's id (a merge's target). */
  point?: string;
}

export interface TaskOptions {
  signal?: AbortSignal;
  onProgress?: (progress: Progress) => void;
}

/** Where an NBD export listens: TCP on loopback, or a unix socket in a directory QEMU may write. */
export type NbdListen = { transport: 'tcp'; host: string; port: number } | { transport: 'unix'; socket: string };

export interface Checkpoint {
  name: string;
  parent?: string;
  createdAt: Date;
  disks: string[];
}

export interface BackupExport {
  disk: string;
  exportName: string;
  sizeBytes?: number;
  /** NBD meta context carrying the blocks changed since the incremental base, when there is one. */
  dirtyContext?: string;
  /** Where this export is served when it has a server of its own; default the session's `listen`. */
  listen?: NbdListen;
  /** The export on the same server that carries `dirtyContext`, when not this one (a raw disk's transient bitmap). */
  dirtyExportName?: string;
  /**
   * No bitmap of `since` describes this disk: `full`, it joined the VM after `since` (all of it
   * travels); `resync`, its bitmap was lost (compare by hashes). `reason` says why, in the user's words.
   */
  untracked?: { plan: 'full' | 'resync'; reason: string };
}

/**
 * A running pull-mode backup: NBD exports of the VM's disks frozen at one instant.
 *
 * A VM that is shut off has no QEMU to run one; the adapter then exports its disk images as they
 * were left at shutdown (`offline: true`). No checkpoint is created (`checkpoint` does not exist
 * on the VM), and the data is the state of "everything up to the shutdown": the writes the bitmap
 * of `since` has tracked, so `stateOf` is `since`, the checkpoint a recovery point of this data
 * must record. The next online incremental from that same checkpoint ships the pre-shutdown writes
 * again plus the new ones: a superset, which is correct. Offline without `since`, `stateOf` is
 * absent: no checkpoint on the VM describes the data, and the caller must record one that cannot
 * exist there so that the next cycle compares by hashes.
 */
export interface BackupSession {
  /** The checkpoint asked for; created at the export's instant unless `offline`. */
  checkpoint: string;
  /** The checkpoint whose state the exports hold: `checkpoint` online, `since` (or none) offline. */
  stateOf?: string;
  since?: string;
  /** The VM was shut off: its images were exported, no checkpoint was created. */
  offline?: boolean;
  /** How the freeze asked by BackupOptions.quiesce went; absent when none was asked. */
  quiesce?: QuiesceResult;
  listen: NbdListen;
  exports: BackupExport[];
  /**
   * Ends the hypervisor-side job and its exports. Safe to call twice. A call that fails (the
   * hypervisor restarted under it) has ended nothing: a later call tries again, and
   * ChangeTracker.endLeftoverBackup ends the job for the next session.
   */
  end(): Promise<void>;
}

/**
 * A writable NBD export of one disk of a VM that is off (openDiskWriter): how failback writes the
 * DR side's blocks into the source's own image. It may be read too (the hashes a pass compares).
 * While it is open the VM cannot start (the image is locked to the writer).
 */
export interface DiskWriter {
  disk: string;
  listen: NbdListen;
  exportName: string;
  /** Ends the export (what was not flushed may be lost); the VM may start again. Safe twice. */
  close(): Promise<void>;
}

/** A backup job an earlier session left on a VM, which endLeftoverBackup ended. */
export interface EndedBackupJob {
  /** What it was: "pull backup (NBD 127.0.0.1:41234, disks vda, vdb)". */
  job: string;
  /** Who left it: "vmdr process 1234 (no longer running)". */
  leftBy: string;
}

export interface BackupOptions {
  checkpoint: string;
  since?: string;
  listen: NbdListen;
  disks?: string[];
  /** Where the hypervisor keeps copy-before-write data while the export lives (default: a temp dir). */
  scratchDir?: string;
  /**
   * Freeze the guest's filesystems (its guest agent) for the instant the checkpoint is taken, and
   * thaw them right after: an application-consistent point. The session says how it went
   * (BackupSession.quiesce); a guest that cannot be frozen still gives a session, crash-consistent.
   */
  quiesce?: QuiesceOptions;
}

export interface QuiesceOptions {
  /** How long the guest agent has to answer the freeze, and each attempt at the thaw. */
  timeoutMs: number;
}

/**
 * Why a point is not application-consistent (`consistency: 'crash'`), or, on an application-
 * consistent one, what went wrong after the freeze (the thaw codes).
 */
export type QuiesceIssueCode =
  /** The VM has no guest agent channel: no agent can ever answer. */
  | 'no-agent-channel'
  /** The channel is there, nobody answers on it (no agent running in the guest). */
  | 'agent-not-answering'
  /** The agent did not answer the freeze in time: given up, and thawed. */
  | 'freeze-timed-out'
  /** The agent answered the freeze with an error (a filesystem that cannot freeze, already frozen). */
  | 'freeze-failed'
  /** The VM is not running (an offline capture): there is no guest to freeze. */
  | 'vm-not-running'
  /** This hypervisor cannot freeze a guest. */
  | 'unsupported'
  /** Frozen and captured, but no thaw answered in time: the guest may still be frozen. */
  | 'thaw-timed-out'
  /** Frozen and captured, but the thaw failed. */
  | 'thaw-failed'
  /**
   * Frozen, but held past the hold's deadline (see Hold), and another vmdr process released it
   * before this holder did: the capture may have fallen after that thaw.
   */
  | 'hold-broken';

export interface QuiesceIssue {
  code: QuiesceIssueCode;
  /** One line in the user's words, with the hypervisor's own. */
  message: string;
}

/** How a freeze around a capture went, for one VM. */
export interface QuiesceResult {
  /** application: the capture's instant fell while the guest's filesystems were frozen. */
  consistency: 'application' | 'crash';
  issue?: QuiesceIssue;
  /**
   * From asking the freeze to the thaw's answer (or to giving up on it): the longest the guest's
   * writes were held. Absent when the guest never froze.
   */
  freezeWindowMs?: number;
}

/**
 * Guests frozen together by ChangeTracker.freezeGuests: one VM for an application-consistent
 * point, several for one instant across them (a consistency group, which captures each member
 * between freezeGuests and thaw).
 */
export interface GuestFreeze {
  /** The VMs whose filesystems the agent froze. */
  readonly frozen: readonly string[];
  /**
   * Thaws every VM whose freeze was asked, frozen or not (a freeze given up on may still take
   * effect in the guest), retrying each for up to three times the timeout; never throws. Safe to
   * call twice (the second call returns the first's answer).
   */
  thaw(): Promise<Map<string, QuiesceResult>>;
}

/**
 * VMs paused together by ChangeTracker.pauseVms (their vCPUs stopped: no write reaches a disk),
 * the crash-consistent "one instant" of a consistency group: every member's checkpoint is taken
 * between pauseVms and resume.
 */
export interface VmPause {
  /** The VMs this pause stopped (a VM already paused by someone else is left out, and left paused). */
  readonly paused: readonly string[];
  /** Why a VM asked for was not paused (not running, gone): by VM. */
  readonly refused: ReadonlyMap<string, string>;
  /**
   * Resumes every VM this pause stopped, each tried until it answers or `timeoutMs` has passed;
   * never throws. Safe to call twice. By VM: how long it was paused, or why it could not be
   * resumed; or `broken`: why it was not this pause's to resume any more (held past the hold's
   * deadline, another vmdr process resumed it first: a capture may have fallen after that).
   */
  resume(): Promise<Map<string, { pausedMs: number; error?: string; broken?: string }>>;
}

/**
 * A VM vmdr holds for a capture's instant (paused by pauseVms, or its guest's filesystems frozen by
 * freezeGuests), as the adapter recorded it on this host before the hold and removes it after the
 * release: a record a holder that died (kill -9, OOM) leaves behind is how another vmdr process
 * knows to release the VM. Records live where a reboot forgets them (libvirt: /run/vmdr/holds).
 */
export interface Hold {
  vm: string;
  kind: 'pause' | 'freeze';
  /** The vmdr process holding it: its pid and when it started (a pid reused by another process is not the holder). */
  holder: { pid: number; startedAt: string };
  since: Date;
  /** By then the holder has released it in every path (its pause or freeze bound, then its window's). */
  deadline: Date;
  /** Why anyone may release it now: its holder is gone (ended, or its pid is another process's), or its deadline passed. */
  left?: 'holder-gone' | 'deadline-passed';
}

/** What releasing a left hold did (ChangeTracker.releaseLeftHolds). */
export interface ReleasedHold extends Hold {
  left: NonNullable<Hold['left']>;
  /**
   * resumed / thawed: the VM was still held and is released now; none: it was not held any more
   * (running, thawed, shut off, gone) or is paused for another reason than vmdr's (`detail` says),
   * and is left as it is; failed: it could not be released (`detail`), its record stays for the next try.
   */
  action: 'resumed' | 'thawed' | 'none' | 'failed';
  detail?: string;
  /** From the hold's start to this release. */
  heldMs: number;
}

/** Changed-block tracking where the hypervisor has it (QEMU dirty bitmaps; VMware CBT). */
export interface ChangeTracker {
  listCheckpoints(vm: string): Promise<Checkpoint[]>;
  /** The names alone, oldest first: one call where listCheckpoints makes one per checkpoint. */
  checkpointNames(vm: string): Promise<string[]>;
  /**
   * Starts a pull backup of all the VM's disks at one instant and records checkpoint `checkpoint`
   * at that instant. With `since`, each export carries a dirty bitmap of the blocks changed since
   * that earlier checkpoint. A shut-off VM gives an offline session (see BackupSession). A `since`
   * whose bitmap cannot be used (it did not survive) fails with CheckpointBitmapBroken
   * (CHECKPOINT_BITMAP_BROKEN), online and offline alike; online, a disk that joined after `since`,
   * or whose in-memory bitmap a QEMU restart dropped, is one export marked `untracked` instead.
   */
  beginBackup(vm: string, options: BackupOptions): Promise<BackupSession>;
  deleteCheckpoint(vm: string, name: string): Promise<void>;
  /**
   * Ends the backup job a session of vmdr left on the VM (its process died, or the hypervisor
   * restarted under it and its end() failed) and waits until it is gone, so that a new backup can
   * begin. Resolves with what it ended, or undefined when the VM runs no job. A job it may not end
   * (another tool's, or a session still in use) is refused with BACKUP_JOB_BUSY; one that will not
   * end by the deadline (default 30 s) with BACKUP_JOB_STUCK.
   */
  endLeftoverBackup(vm: string, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<EndedBackupJob | undefined>;
  /**
   * Freezes the filesystems of these running VMs' guests at once, through their guest agents, each
   * given `timeoutMs` to answer; never throws: a VM that did not freeze is left out of `frozen`,
   * and thaw() says why. The caller captures, then thaws, in every path.
   */
  freezeGuests(vms: string[], options: QuiesceOptions): Promise<GuestFreeze>;
  /** Pauses these running VMs at once (see VmPause); never throws. The caller captures, then resumes, in every path. */
  pauseVms(vms: string[], options: QuiesceOptions): Promise<VmPause>;
  /**
   * The holds (see Hold) vmdr processes have on this host's VMs now, each saying whether it is
   * left. Reads this host's records only: works on an adapter that is not connected.
   */
  holds(): Promise<Hold[]>;
  /**
   * Releases the left holds (of `vms`, or of every VM): a VM still paused by a pause (libvirt's
   * reason "paused by user") is resumed, a guest still frozen is thawed; a VM paused for another
   * reason is left paused. Never throws for one hold: its failure is its answer, and its record
   * stays for the next try. Concurrent calls release each hold once, in all processes: a hold whose
   * holder is releasing it is left to it, and a live holder whose hold was released here learns
   * so at its own release (VmPause's `broken`, the freeze's `hold-broken`).
   */
  releaseLeftHolds(vms?: string[]): Promise<ReleasedHold[]>;
}

/** How an adapter talks to its hypervisor, from the site's config. */
export interface AdapterOptions {
  /**
   * How long one call to the hypervisor may go unanswered before it fails with HypervisorTimedOut
   * naming the call and the VM (a hung daemon, stuck storage). Default 120 s. Calls that wait on
   * purpose (a guest agent command, a graceful stop) keep their own longer bounds.
   */
  callTimeoutMs?: number;
  /** How a vSphere adapter logs in, whom it trusts and where it puts what it makes. */
  vsphere?: VsphereOptions;
}

/**
 * A vSphere endpoint's settings beside its URI (`vsphere://user@host[:port]/Datacenter`; the URI's
 * query may carry `thumbprint`, `datastore`, `pool`, `folder` too, and the fields here win).
 * The password never travels in a URI or a flag: it is read from `passwordFile` (a file only its
 * owner may read) or the environment variable `passwordEnv` (default VMDR_VSPHERE_PASSWORD).
 */
export interface VsphereOptions {
  passwordFile?: string;
  passwordEnv?: string;
  /**
   * SHA-256 fingerprint of the server's certificate (`SHA256:AB:CD:…`, colons optional): a
   * self-signed host is trusted when its certificate has exactly this one, and refused otherwise.
   * Without it the certificate must verify against the system's CAs (or `caFile`).
   */
  thumbprint?: string;
  /** PEM file of CAs to trust besides the system's. */
  caFile?: string;
  /** Datastore vmdr's VMs and their disks go on; default the datacenter's first. */
  datastore?: string;
  /** Resource pool (inventory path or name) vmdr's VMs run in; default the first cluster's or host's. */
  pool?: string;
  /** VM folder (inventory path) vmdr's VMs are made in; default the datacenter's vm folder. */
  folder?: string;
}

/**
 * What a hypervisor tells at once, between two asks of its VMs' state: a VM that left the running
 * state (by name and id; `state`: what it is now, `why`: the hypervisor's reason, in words), or the
 * connection to it closed (the hypervisor's daemon went away). `at`: ms since the epoch.
 */
export type HypervisorNotice =
  | { kind: 'vm'; vm: string; id: string; state: 'shutoff' | 'paused' | 'crashed' | 'missing'; why: string; at: number }
  | { kind: 'closed'; why: string; at: number };

/**
 * Which VMs listVms reads; each field given narrows the list (both: the named VMs that run).
 * `running`: the VMs that run (libvirt counts a paused VM among them: its QEMU runs). `names`: the
 * VMs of these names; a name the host has no VM of is simply absent from the list, not an error.
 */
export interface VmFilter {
  running?: true;
  names?: string[];
}

export interface HypervisorAdapter {
  readonly kind: 'libvirt' | 'vsphere';
  readonly uri: string;

  /** Opens the connection; fails with HypervisorUnreachable. Other calls connect on demand. */
  connect(): Promise<void>;
  close(): Promise<void>;

  /**
   * The host's VMs, or with `filter` only those it names: what a caller that needs a few VMs of a
   * host holding many reads (the failover preflight: the plan's targets and the running VMs), so
   * its cost follows what it asks, not the host's size.
   */
  listVms(filter?: VmFilter): Promise<VmInfo[]>;
  /** Accepts a name or an id (UUID), resolved once here. */
  getVm(ref: string): Promise<VmInfo>;
  /** The power state alone: one cheap call, for waits that poll it (getVm reads much more). */
  powerState(vm: string): Promise<PowerState>;
  defineVm(spec: VmSpec): Promise<VmInfo>;
  start(vm: string): Promise<void>;
  stop(vm: string, options: StopOptions): Promise<void>;
  /** Removes the VM's definition; its disk images are left alone (they may be a replica). */
  undefine(vm: string): Promise<void>;

  /** Changes the identity of the NIC currently holding `nicMac` (the VM must be off). */
  setNicIdentity(vm: string, nicMac: string, identity: NicIdentity): Promise<VmInfo>;
  /**
   * Points the VM's disks (matched by guest target: vda, sdb ...) at other images, such as a
   * failover's overlay on top of a recovery point (the VM must be off). Disks not named keep
   * their images; a named target the VM lacks is an error.
   */
  setDiskImages(vm: string, disks: { target: string; path: string; format: DiskSpec['format'] }[]): Promise<VmInfo>;
  /**
   * Adds a disk to a VM that is off: how a pre-staged target takes a disk its source gained. Its
   * guest target (vdc ...) is required and must be free on the VM.
   */
  addDisk(vm: string, disk: DiskSpec & { target: string }): Promise<VmInfo>;
  /**
   * Replaces vmdr's labels on any VM, one vmdr made (how a target's role changes) or not (how a
   * source is fenced); an empty set removes vmdr's mark altogether. The VM may run: labels are
   * read from, and written to, the definition it boots from next.
   */
  setLabels(vm: string, labels: Record<string, string>): Promise<void>;
  /**
   * Makes what a VM boots from when it boots a recovery point, without ever writing the point's
   * images: a writable layer per disk on top of the point's image, each disk's virtual size the
   * point's. What already exists for this boot is kept, not made again: it may hold what a booted
   * guest wrote. With `vm` (off), the VM's disks (matched by guest target) are pointed at them,
   * and with `labels` its labels replaced as setLabels would, in the same change of its
   * definition; without `vm`, the caller defines a VM on the disks returned (a drill).
   *
   * libvirt: a qcow2 overlay `<boot>.qcow2` beside each point image, its backing file the point
   * image's bare file name (as in the replica chain, so the directory can move). vSphere cannot
   * open this host's files: each point disk is copied whole (its virtual size) onto the datastore
   * as a flat VMDK `<boot>-<target>.vmdk` in the VM's own folder (a drill's: `vmdr-boot/`), and the
   * VM's disk reconfigured onto it; this copy is what a vSphere target adds to the RTO, and what
   * `task` reports in bytes and can abort.
   *
   * Who may open them is the caller's business (the directories are the replica's).
   */
  prepareBootDisks(request: BootDisksRequest & { vm?: string; labels?: Record<string, string> }, task?: TaskOptions): Promise<BootDisk[]>;
  /**
   * Removes what prepareBootDisks made for `boot` on these disks, and only that: what a guest
   * wrote there is gone. No VM may still use them. Nothing left to remove is not an error.
   */
  releaseBootDisks(request: BootDisksRequest): Promise<void>;
  /**
   * Gives a VM that is off the identity it is to boot with: its NICs' MACs and networks, and the
   * guest's own hostname, addresses, gateway and DNS for the guest to apply at boot. A VM that
   * already had one gets this one instead. Invalid values are refused (IDENTITY_INVALID) before
   * anything changes. One that already has this very identity (the same instanceId, its NICs as
   * asked) is left as it is (`written: false`): an instance id names one identity, so the caller
   * gives a new one whenever anything in it changes.
   *
   * libvirt: a NoCloud seed (ISO 9660 labelled `cidata`, read by cloud-init and cloudbase-init)
   * written beside the VM's first disk image as `seed-<instanceId>.iso`, 0600, and attached
   * read-only as the VM's last disk; a seed it replaces is deleted. vSphere: the NICs are
   * reconfigured and a guest customization spec (CustomizeVM_Task) is left pending for VMware
   * Tools to apply at the next boot; no file.
   */
  applyGuestIdentity(vm: string, identity: GuestIdentity): Promise<AppliedGuestIdentity>;
  /**
   * Takes the in-guest identity away from a VM that is off (libvirt: detaches the seed and deletes
   * it); its NICs stay as they are. A VM without one is not an error.
   */
  removeGuestIdentity(vm: string): Promise<void>;
  /** Whether the hypervisor starts the VM when it starts itself (libvirt's autostart). */
  setAutostart(vm: string, autostart: boolean): Promise<void>;
  /**
   * Opens a writer on disk `disk` (guest target: vda, sdb ...) of a VM that is off. Fails with
   * InvalidPowerState when it is not off, DiskNotFound when it has no such disk.
   */
  openDiskWriter(vm: string, disk: string): Promise<DiskWriter>;
  /** Where the guest's serial console is written, when the VM has a file console. */
  serialLogPath(vm: string): Promise<string | undefined>;
  /**
   * A picture of what the VM's display shows now, as a PNG. Fails with NoDisplay (NO_DISPLAY)
   * when the VM has no display, InvalidPowerState when it is not running, VmNotFound, and
   * ScreenshotInvalid (SCREENSHOT_INVALID) when the hypervisor's image is refused: larger than
   * MAX_SCREEN_SIDE (screenshot-image.ts) on a side or than its own header says, or malformed.
   */
  screenshot(vm: string): Promise<ScreenImage>;
  /**
   * Resolves when the QEMU guest agent answers guest-ping within `timeoutMs`. Fails with
   * GuestAgentUnavailable: reason 'not-configured' (the VM has no agent channel; asking again will
   * not help) or 'not-answering' (ask again later); InvalidPowerState when the VM is not running.
   */
  guestAgentPing(vm: string, timeoutMs: number): Promise<void>;
  /**
   * Calls `listener` with each notice of this host (its VMs leaving the running state, its
   * connection closing) until the returned function is called. Notices come while a connection is
   * open (other calls open it); none are replayed. Absent where the hypervisor has no events.
   */
  watchVms?(listener: (notice: HypervisorNotice) => void): () => void;

  /**
   * A hint, before a run's work starts: up to `count` long calls (VMs starting) will run at once
   * soon. An adapter may get ready for them now, so that cost overlaps the run's preflight instead
   * of the guests' boot (libvirt starts its call threads). Changes nothing a caller can see.
   */
  expectParallel?(count: number): void;

  listNetworks(): Promise<NetworkInfo[]>;
  /** Defines and starts an isolated network (no forwarding, no host address); idempotent. */
  ensureIsolatedNetwork(spec: IsolatedNetworkSpec): Promise<NetworkInfo>;
  removeNetwork(name: string): Promise<void>;

  /**
   * The local user and group this host's VM processes open disk images as (libvirt: QEMU's DAC
   * label, libvirt-qemu on Debian), so the directories holding images can let that user through
   * and no one else; undefined when images are not opened by a local user (libvirt's test driver).
   */
  imageUser(): Promise<ImageUser | undefined>;

  /** Present where the hypervisor tracks changed blocks. */
  readonly changeTracker?: ChangeTracker;
  /**
   * The start leases of this host's sources, where the hypervisor's host has vmdr's start guard
   * and vmdr runs on that very host (libvirt's qemu hook, qemu:///system); absent elsewhere.
   */
  readonly startLeases?: StartLeases;
}

/**
 * A source VM labelled `source-of` (plugin/sites/source-guard.ts) may be failed over by its DR
 * site while its host does not hear of it: the host's start guard lets it start only while it
 * holds a lease, which the source site's daemon renews each time the DR site says the protection
 * is not failed over. Kept where a reboot forgets it: a host that comes back holds no lease. A
 * start the guard refused leaves a mark, so that what the guard held back (an autostart) can be
 * started once the DR site has answered.
 */
export interface StartLeases {
  /** Lets the VM start until `until`; a lease it had is replaced. */
  grant(vm: string, until: Date): Promise<void>;
  /** Takes its lease back: from now on it starts only with vmdr's own start. */
  revoke(vm: string): Promise<void>;
  /** When its lease runs out; undefined when it has none. */
  until(vm: string): Promise<Date | undefined>;
  /** The VMs whose start the guard refused since their mark was last cleared. */
  refused(): Promise<string[]>;
  clearRefused(vm: string): Promise<void>;
}

export interface ImageUser {
  uid: number;
  gid: number;
}
