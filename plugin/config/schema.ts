/**
 * The shape of vmdr.yaml. These schemas are the types (z.infer), the validation and, later, the
 * API's documentation: one source of truth. Field names follow what users already know from libvirt
 * and vSphere (mac, network, memoryMiB) rather than inventing new words.
 */
import { hypervisorOf, KNOWN_URI_PREFIXES } from '../../hypervisors/schemes.js';
import { z } from 'zod';
import cron from 'node-cron';
import { BandwidthSchema } from './bandwidth.js';
import { carriesPassword, isThumbprint, PASSWORD_PLACES, THUMBPRINT_EXPECTED, vsphereUriProblems } from './vsphere.js';

export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
export const name = z.string().regex(NAME_PATTERN, 'a name of letters, digits, ".", "-" or "_" (at most 63)');

import { durationBetween } from './duration.js';
import { checkConsistencyGroups, consistencyGroupSchema } from './consistency-groups.js';
import { retentionProblems, RetentionSchema } from './retention.js';
export { duration, durationBetween, MAX_TIMER_MS } from './duration.js';

/** 1 to 65535: port 0 means "any free port" to bind() and nothing at all to connect(). */
const isPort = (text: string) => /^\d{1,5}$/.test(text) && Number(text) >= 1 && Number(text) <= 65535;
const PORT_RANGE = 'a port from 1 to 65535';
/** The port of scheme://[user@]host:port/..., when the URI has one. */
const URI_PORT = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/(?:[^@/?#]*@)?(?:\[[^\]/]*\]|[^:/?#[]*):([^/?#]*)/;
const uriPortValid = (text: string) => {
  const port = URI_PORT.exec(text)?.[1];
  return port === undefined || isPort(port);
};
const hostPort = z
  .string()
  .regex(/^[^:\s]+:\d+$/, 'host:port')
  .refine((text) => isPort(text.slice(text.lastIndexOf(':') + 1)), `host:port with ${PORT_RANGE}`);
export const url = (protocol: RegExp, message: string) => z.string().refine(uriPortValid, PORT_RANGE).pipe(z.url({ protocol, message }));

/**
 * A path in the config never climbs out of where it points (no ".." segment), so what an operator
 * reads is where vmdr writes.
 */
const path = z
  .string()
  .min(1, 'a path')
  .refine((p) => !p.includes('\0'), 'a path without NUL characters')
  .refine((p) => !p.split('/').includes('..'), 'a path without ".." segments');
export const absolutePath = z.string().regex(/^\//, 'an absolute path').pipe(path);

const mac = z
  .string()
  .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address such as 52:54:00:12:34:56')
  .transform((m) => m.toLowerCase());
const ipv4 = z.ipv4({ message: 'an IPv4 address' });
const cidr = z.cidrv4({ message: 'an IPv4 address with prefix such as 192.0.2.10/24' });
const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, 'a hostname');

/** The one HTTPS endpoint of a site's `vmdr serve` (docs/sites.md). */
const EndpointSchema = z.strictObject({
  /** host:port the endpoint binds; peers connect to it unless `url` says otherwise. */
  listen: hostPort,
  url: url(/^https$/, 'an https:// URL').optional(),
  /**
   * The site's credentials directory: tls.key and tls.crt (its identity, made by `vmdr serve` or
   * `vmdr site init` when missing) and peers/SITE.crt (the pinned certificates of paired sites).
   */
  credentials: absolutePath.optional(),
});

const inventoryName = z.string().min(1, 'a name or an inventory path');

/**
 * A vSphere site's settings beside its URI (plugin/config/vsphere.ts): handed to its adapter as
 * they are (AdapterOptions.vsphere), and winning over what the URI's query says.
 */
export const VsphereSettingsSchema = z
  .strictObject({
    /** A file holding the password alone, readable by its owner only (0600). */
    passwordFile: absolutePath.optional(),
    /** The environment variable holding the password; default VMDR_VSPHERE_PASSWORD. */
    passwordEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name such as VMDR_VSPHERE_PASSWORD').optional(),
    /** Pins the server's certificate (a self-signed ESXi or vCenter): this one and no other. */
    thumbprint: z.string().refine(isThumbprint, THUMBPRINT_EXPECTED).optional(),
    /** PEM file of CAs to trust besides the system's. */
    caFile: absolutePath.optional(),
    /** Datastore the targets and their disks go on; default the datacenter's first. */
    datastore: inventoryName.optional(),
    /** Resource pool (inventory path or name) the targets run in; default the first cluster's or host's. */
    pool: inventoryName.optional(),
    /** VM folder (inventory path) the targets are made in; default the datacenter's vm folder. */
    folder: inventoryName.optional(),
  })
  .superRefine((s, ctx) => {
    if (s.passwordFile !== undefined && s.passwordEnv !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['passwordEnv'], message: 'give passwordFile or passwordEnv, not both: the password is read from one place' });
    }
  });

export const SiteSchema = z
  .strictObject({
    name,
    /** qemu:///system, qemu+ssh://host/system, test:///default, vsphere://user@vcenter/Datacenter */
    uri: z
      .string()
      .min(1)
      // First: a URI with a password would otherwise read as a host "user" and a port "password@host".
      .refine((uri) => hypervisorOf(uri) !== 'vsphere' || !carriesPassword(uri), PASSWORD_PLACES)
      .refine(uriPortValid, PORT_RANGE)
      .refine((uri) => hypervisorOf(uri) !== undefined, { error: (issue) => `${JSON.stringify(issue.input)} is not a hypervisor URI vmdr knows: expected one of ${KNOWN_URI_PREFIXES.join(', ')}` }),
    /**
     * How long one call to the site's hypervisor may go unanswered (a hung libvirtd, stuck storage)
     * before it fails naming the call and the VM. Default 120s.
     */
    callTimeout: durationBetween('1s', '1h').optional(),
    /**
     * Where replicas and their recovery points live on a DR site: on the host vmdr runs on, for a
     * vSphere site too (its targets' disks are made from them at failover).
     */
    storage: absolutePath.optional(),
    /** vsphere:// sites only: how vmdr logs in, whom it trusts, where it puts its VMs. */
    vsphere: VsphereSettingsSchema.optional(),
    endpoint: EndpointSchema.optional(),
    /** The older spelling of `endpoint` (when only DR sites had one): the same meaning. */
    receiver: EndpointSchema.optional(),
    /** The link to this DR site: the most that every protection shipping to it sends at once (plugin/replication/bandwidth). */
    bandwidth: BandwidthSchema.optional(),
  })
  .superRefine((site, ctx) => {
    if (site.endpoint && site.receiver) ctx.addIssue({ code: 'custom', path: ['receiver'], message: 'the older spelling of "endpoint": give only one of them' });
    if (hypervisorOf(site.uri) === 'vsphere') {
      for (const problem of vsphereUriProblems(site.uri)) ctx.addIssue({ code: 'custom', path: ['uri'], message: problem });
    } else if (site.vsphere) {
      ctx.addIssue({ code: 'custom', path: ['vsphere'], message: `vSphere settings on a site that is not vSphere: site "${site.name}" is ${hypervisorOf(site.uri)} (its uri is not vsphere://…)` });
    }
  })
  .transform(({ receiver, ...site }) => ({ ...site, endpoint: site.endpoint ?? receiver }));

/**
 * A DR network: a libvirt network, or a vSphere port group, whose name may hold spaces ("VM
 * Network"). A libvirt target's is checked to be a name (checkReferences).
 */
const networkName = z
  .string()
  .min(1, 'a network or port group name')
  .max(80, 'a network or port group name of at most 80 characters')
  .refine((n) => !/[\x00-\x1f\x7f/%\\]/.test(n), 'a network or port group name without "/", "%", "\\" or control characters');

export const TenantSchema = z.strictObject({
  name,
  description: z.string().optional(),
  quota: z
    .strictObject({
      storageGiB: z.number().positive().optional(),
      vms: z.number().int().positive().optional(),
    })
    .optional(),
  /** The DR networks (port groups on vSphere) this tenant's VMs may be attached to. */
  networks: z.array(networkName).default([]),
});

export const TargetNicSchema = z.strictObject({
  /** The MAC the DR VM's NIC takes; keep the source's to carry licences and DHCP leases over. */
  mac: mac.optional(),
  /** The DR network (libvirt network, vSphere port group) the NIC is attached to. */
  network: networkName,
  addresses: z.array(cidr).default([]),
  gateway: ipv4.optional(),
  dns: z.array(ipv4).default([]),
});

export const BootSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('kernel'), kernel: absolutePath, initrd: absolutePath, cmdline: z.string().default('console=ttyS0') }),
  z.strictObject({ kind: z.literal('disk') }),
]);

export const TargetSchema = z.strictObject({
  site: name,
  vm: name,
  memoryMiB: z.number().int().min(16).default(256),
  vcpus: z.number().int().min(1).default(1),
  boot: BootSchema.default({ kind: 'disk' }),
  /** Domain template (libvirt) under templates/domains/, or an absolute path. */
  template: path.optional(),
  hostname: hostname.optional(),
  nics: z.array(TargetNicSchema).min(1, 'at least one NIC'),
});

/**
 * When a failed-over VM counts as healthy: every configured check passes before `timeout`. With no
 * check configured, a VM that is running is healthy. A plan starts its next group only then.
 */
export const HealthSchema = z.strictObject({
  /** One deadline for all the checks together, counted from the start of the wait (right after boot). */
  timeout: durationBetween('1s', '12h').prefault('2m'),
  /** A line the guest prints on its serial console when it is up (the lab guest: "^VMDR-GUEST ready"). */
  serial: z
    .string()
    .refine((source) => {
      try {
        new RegExp(source);
        return true;
      } catch {
        return false;
      }
    }, 'a regular expression')
    .optional(),
  /**
   * The guest's agent answers: libvirt's QEMU guest agent (guest-ping), vSphere's VMware Tools
   * (running). The guest's userland runs, whatever it serves.
   */
  agent: z.boolean().default(false),
  /** host:port that must accept a TCP connection (a database, SSH) from the DR host. */
  tcp: z.array(hostPort).default([]),
  /** URLs that must answer; any 2xx or 3xx unless `status` names the one expected. */
  http: z
    .array(
      z.strictObject({
        url: url(/^https?$/, 'an http:// or https:// URL'),
        status: z.number().int('an HTTP status such as 200').min(100, 'an HTTP status from 100 to 599').max(599, 'an HTTP status from 100 to 599').optional(),
      }),
    )
    .default([]),
});


/**
 * What a DR site does when a watched source goes down (issue 15): tell (notify), prepare a failover
 * that waits for an approval (confirm), or fail over (automatic; plugin/watch/act.ts).
 */
export const WATCH_POLICIES = ['notify', 'confirm', 'automatic'] as const;

/**
 * The DR site's heartbeats on a source (per protection, or per plan for all its protections): the
 * source site answering, its hypervisor answering, the VM running and, when asked, its guest. A
 * source counts as down after `missed` beats in a row missed and `after` since its last answer.
 */
export const WatchSchema = z
  .strictObject({
    policy: z.enum(WATCH_POLICIES).default('notify'),
    /** The time between two beats; each beat's checks must answer within it. */
    interval: durationBetween('1s', '1h').prefault('5s'),
    /** Beats missed in a row before the source counts as down. */
    missed: z.number().int('a whole number of beats').min(1, 'at least 1 beat').max(1000, 'at most 1000 beats').default(3),
    /** The least time since the source's last answer before it counts as down; default interval × missed. */
    after: durationBetween('1s', '24h').optional(),
    /** The guest answering too: its QEMU guest agent (guest-ping, asked on the source site), a TCP port (from the DR site). */
    guest: z.strictObject({ agent: z.boolean().default(false), tcp: hostPort.optional() }).optional(),
  })
  .transform((w) => ({ ...w, after: w.after ?? w.interval * w.missed }));

export const ProtectionSchema = z.strictObject({
  name,
  tenant: name.optional(),
  source: z.strictObject({ site: name, vm: z.string().min(1) }),
  target: TargetSchema,
  /**
   * The recovery point objective: how much data loss the owner accepts. Up to 30 days although that
   * passes MAX_TIMER_MS: vmdr waits at most rpo/2 (cycleInterval), never the rpo itself.
   */
  rpo: durationBetween('1s', '30d').prefault('15m'),
  /** Continuous: sync cycles back to back (seconds of lag). Otherwise `vmdr serve` syncs every rpo/2. */
  continuous: z.boolean().default(false),
  /**
   * auto: zstd on what compresses (fewer bytes on a WAN, more CPU on both sites); off: data travels
   * raw (a fast link, or CPU the sites cannot spare). Checksums and TLS stay either way.
   */
  compression: z.enum(['auto', 'off']).default('auto'),
  /** The most this protection's cycles send, within its DR site link's `bandwidth` (plugin/replication/bandwidth). */
  bandwidth: BandwidthSchema.optional(),
  /** keep/maxAge, or time tiers (all, minutely, hourly, daily): retention.ts. */
  retention: RetentionSchema,
  /**
   * crash: each point is the disks at one instant, as a power cut leaves them. application: each
   * cycle freezes the guest's filesystems through its QEMU guest agent for that instant; a point
   * the freeze failed for is crash-consistent and says why (docs/replication.md).
   */
  consistency: z.enum(['crash', 'application']).default('crash'),
  /** How long the guest agent has to answer the freeze (and each attempt at the thaw). */
  freezeTimeout: durationBetween('1s', '60s').prefault('10s'),
  /** What the DR VM must show after a failover or in a drill before it counts as up. */
  health: HealthSchema.prefault({}),
  /** Heartbeats on the source from the DR site (absent: not watched, unless a plan of it is). */
  watch: WatchSchema.optional(),
});

export const ConsistencyGroupSchema = consistencyGroupSchema(name);

export const PlanGroupSchema = z.strictObject({
  name,
  /** Protections (by name) started together. */
  vms: z.array(name).min(1, 'at least one VM'),
  /** How many VMs of the group start at once. */
  parallel: z.number().int().min(1).default(4),
});

export const PlanSchema = z.strictObject({
  name,
  tenant: name.optional(),
  groups: z.array(PlanGroupSchema).min(1, 'at least one group'),
  /** stop: a VM that fails its health check stops the plan; skip: carry on without it. */
  onHealthFailure: z.enum(['stop', 'skip']).default('stop'),
  /** The recovery time objective: start of a run to its last VM healthy. The report says whether it was met. */
  rto: durationBetween('1s', '30d').optional(),
  /** The data loss the plan accepts per VM (its data-loss window). The report says whether each VM met it. */
  rpo: durationBetween('1s', '30d').optional(),
  /** A runbook (by name, from `runbooks`) run instead of starting the groups in order. */
  runbook: name.optional(),
  /** Heartbeats on every protection of the plan; a plan fails over as a plan. */
  watch: WatchSchema.optional(),
});

export const DrillSchema = z.strictObject({
  name,
  plan: name,
  tenant: name.optional(),
  /** When `vmdr serve` runs it: five fields (minute first) or six (second first), as node-cron reads them. */
  schedule: z.string(),
  /** The time zone `schedule` is read in (an IANA name such as Europe/Paris). */
  timezone: z.string().refine(isTimeZone, 'an IANA time zone such as UTC or Europe/Paris').default('UTC'),
  /** Past it the drill is aborted, torn down and recorded as failed. */
  timeLimit: durationBetween('1s', '24h').prefault('30m'),
  /** The runbook of this drill's test failover, instead of its plan's. */
  runbook: name.optional(),
}).superRefine((drill, ctx) => {
  // Here, not on the field: the message names the drill, and the part of the expression that is wrong.
  const check = cron.validateDetailed(drill.schedule);
  if (check.valid) return;
  const why = check.errors.map((e) => (e.field === 'expression' ? e.message : `${e.field}: ${e.message}`)).join('; ');
  ctx.addIssue({ code: 'custom', path: ['schedule'], message: `drill "${drill.name}": "${drill.schedule}" is not a cron expression such as "0 3 * * 1" (${why})` });
});

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** A runbook file (plugin/runbooks/), named for plans and drills to refer to. */
export const RunbookRefSchema = z.strictObject({ name, file: absolutePath });

/**
 * The events a webhook can be told of. One sender for all of them (plugin/notifications/webhook.ts):
 * automatic failovers join this list. drill-failed: a drill failed or was interrupted (nothing was
 * proven); drill-passed: the evidence that it was.
 */
export const NOTIFICATION_EVENTS = [
  'rpo-breached',
  'rpo-recovered',
  'drill-failed',
  'drill-passed',
  // A watched source's state changed (plugin/watch/): one event per state.
  'watch-healthy',
  'watch-suspect',
  'watch-down',
  'watch-failing-over',
  'watch-failed-over',
  'watch-fenced',
] as const;

export const WebhookSchema = z.strictObject({
  url: url(/^https?$/, 'an http:// or https:// URL'),
  /** The events sent to it; all of them when absent. */
  events: z.array(z.enum(NOTIFICATION_EVENTS)).min(1, 'at least one event (or leave "events" out for all of them)').optional(),
  /** A file holding the HMAC-SHA256 key the body is signed with (header X-Vmdr-Signature: sha256=HEX). */
  secretFile: absolutePath.optional(),
  /** How long one attempt may take before it counts as failed (and is retried). */
  timeout: durationBetween('1s', '5m').prefault('10s'),
});

export const NotificationsSchema = z.strictObject({
  webhooks: z.array(WebhookSchema).default([]),
});

const ConfigObject = z.strictObject({
  version: z.literal(1),
  state: z.strictObject({ path: absolutePath }).default({ path: '/var/lib/vmdr/state.db' }),
  /**
   * The site this host is. Other sites are then reached only through their `vmdr serve` endpoint,
   * never through their hypervisor URI. Absent: every site is reached from here (one host, or a
   * host that reaches the others' hypervisors through remote URIs).
   */
  localSite: name.optional(),
  /**
   * The HTTP API of `vmdr serve` (HTTPS, bearer tokens: `vmdr token create`). Its certificate is
   * made in `credentials` (default: beside the state file, in api/) when missing.
   */
  api: EndpointSchema.optional(),
  sites: z.array(SiteSchema).min(1, 'at least one site'),
  tenants: z.array(TenantSchema).default([]),
  protections: z.array(ProtectionSchema).default([]),
  /** Protections whose points are taken at one instant (consistency-groups.ts). */
  consistencyGroups: z.array(ConsistencyGroupSchema).default([]),
  plans: z.array(PlanSchema).default([]),
  drills: z.array(DrillSchema).default([]),
  runbooks: z.array(RunbookRefSchema).default([]),
  /** Who `vmdr serve` tells when something needs a person (an RPO breached, and when it recovers). */
  notifications: NotificationsSchema.prefault({}),
});

export const ConfigSchema = ConfigObject.superRefine(checkReferences);

export type Config = z.infer<typeof ConfigObject>;
export type Site = z.infer<typeof SiteSchema>;
export type Tenant = z.infer<typeof TenantSchema>;
export type Protection = z.infer<typeof ProtectionSchema>;
export type HealthSpec = z.infer<typeof HealthSchema>;
export type Target = z.infer<typeof TargetSchema>;
export type TargetNic = z.infer<typeof TargetNicSchema>;
export type ConsistencyGroup = z.infer<typeof ConsistencyGroupSchema>;
export type Plan = z.infer<typeof PlanSchema>;
export type Drill = z.infer<typeof DrillSchema>;
export type RunbookRef = z.infer<typeof RunbookRefSchema>;
export type Notifications = z.infer<typeof NotificationsSchema>;
export type Webhook = z.infer<typeof WebhookSchema>;
export type Watch = z.infer<typeof WatchSchema>;
export type WatchPolicy = (typeof WATCH_POLICIES)[number];
export type NotificationEventName = (typeof NOTIFICATION_EVENTS)[number];

/** The directory of tenants' replicas in a site's storage (replication/layout.ts): no protection may be named so. */
export const TENANTS_DIR = 'tenants';

function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** Names that point at other objects must point at something, names must be unique, and tenants keep to their VM quota. */
function checkReferences(config: Config, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const unique = (items: { name: string }[], key: string) => {
    const seen = new Set<string>();
    items.forEach((item, i) => {
      if (seen.has(item.name)) issue([key, i, 'name'], `duplicate name "${item.name}"`);
      seen.add(item.name);
    });
    return seen;
  };
  const sites = unique(config.sites, 'sites');
  const kinds = new Map(config.sites.map((s) => [s.name, hypervisorOf(s.uri)]));
  if (config.localSite !== undefined && !sites.has(config.localSite)) issue(['localSite'], `unknown site "${config.localSite}"`);
  const tenants = unique(config.tenants, 'tenants');
  const protections = unique(config.protections, 'protections');
  const plans = unique(config.plans, 'plans');
  unique(config.consistencyGroups, 'consistencyGroups');
  checkConsistencyGroups(config, issue);
  unique(config.drills, 'drills');
  const runbooks = unique(config.runbooks, 'runbooks');
  const runbookRef = (runbook: string | undefined, path: (string | number)[]) => {
    if (runbook !== undefined && !runbooks.has(runbook)) issue(path, `unknown runbook "${runbook}"`);
  };

  const tenantRef = (tenant: string | undefined, path: (string | number)[]) => {
    if (tenant !== undefined && !tenants.has(tenant)) issue(path, `unknown tenant "${tenant}"`);
  };
  const macs = new Map<string, string>();
  const targets = new Map<string, string>();
  const owned = new Map<string, number>();
  config.protections.forEach((p, i) => {
    tenantRef(p.tenant, ['protections', i, 'tenant']);
    for (const r of retentionProblems(p)) issue(['protections', i, 'retention', ...r.path], r.message);
    if (p.name === TENANTS_DIR) issue(['protections', i, 'name'], `"${TENANTS_DIR}" is reserved: it names the directory of the tenants' replicas in a site's storage`);
    if (p.tenant !== undefined) {
      const count = (owned.get(p.tenant) ?? 0) + 1;
      owned.set(p.tenant, count);
      const allowed = config.tenants.find((t) => t.name === p.tenant)?.quota?.vms;
      if (allowed !== undefined && count > allowed) {
        issue(['protections', i, 'tenant'], `tenant "${p.tenant}" may have ${allowed} protected VM${allowed === 1 ? '' : 's'} (quota.vms): protection "${p.name}" is its ${ordinal(count)}`);
      }
    }
    if (!sites.has(p.source.site)) issue(['protections', i, 'source', 'site'], `unknown site "${p.source.site}"`);
    if (!sites.has(p.target.site)) issue(['protections', i, 'target', 'site'], `unknown site "${p.target.site}"`);
    if (kinds.get(p.target.site) === 'vsphere') vsphereTarget(p, (path, message) => issue(['protections', i, ...path], message));
    const targetKey = `${p.target.site}/${p.target.vm}`;
    const other = targets.get(targetKey);
    if (other) issue(['protections', i, 'target', 'vm'], `target VM "${p.target.vm}" is already the target of protection "${other}"`);
    targets.set(targetKey, p.name);
    const tenant = config.tenants.find((t) => t.name === p.tenant);
    p.target.nics.forEach((nic, n) => {
      if (nic.mac) {
        const owner = macs.get(nic.mac);
        if (owner) issue(['protections', i, 'target', 'nics', n, 'mac'], `MAC ${nic.mac} is already used by protection "${owner}"`);
        macs.set(nic.mac, p.name);
      }
      if (kinds.get(p.target.site) !== 'vsphere' && !NAME_PATTERN.test(nic.network)) {
        issue(['protections', i, 'target', 'nics', n, 'network'], 'a name of letters, digits, ".", "-" or "_" (at most 63): a libvirt network');
      }
      if (tenant && tenant.networks.length > 0 && !tenant.networks.includes(nic.network)) {
        issue(['protections', i, 'target', 'nics', n, 'network'], `network "${nic.network}" is not one of tenant "${tenant.name}"'s networks`);
      }
    });
  });
  config.plans.forEach((plan, i) => {
    tenantRef(plan.tenant, ['plans', i, 'tenant']);
    runbookRef(plan.runbook, ['plans', i, 'runbook']);
    plan.groups.forEach((group, g) =>
      group.vms.forEach((vm, v) => {
        if (!protections.has(vm)) issue(['plans', i, 'groups', g, 'vms', v], `unknown protection "${vm}"`);
        const owner = config.protections.find((p) => p.name === vm)?.tenant;
        if (plan.tenant && owner !== undefined && owner !== plan.tenant) {
          issue(['plans', i, 'groups', g, 'vms', v], `protection "${vm}" belongs to tenant "${owner}", not "${plan.tenant}"`);
        }
      }),
    );
  });
  checkWatches(config, issue);
  config.drills.forEach((drill, i) => {
    tenantRef(drill.tenant, ['drills', i, 'tenant']);
    runbookRef(drill.runbook, ['drills', i, 'runbook']);
    if (!plans.has(drill.plan)) issue(['drills', i, 'plan'], `unknown plan "${drill.plan}"`);
    const owner = config.plans.find((p) => p.name === drill.plan)?.tenant;
    if (drill.tenant && owner !== undefined && owner !== drill.tenant) issue(['drills', i, 'plan'], `plan "${drill.plan}" belongs to tenant "${owner}", not "${drill.tenant}"`);
  });
}

/**
 * A protection is watched once (by itself or by one plan). A policy that fails over never onto the
 * source's own host: the same site, or the same hypervisor URI on a config that reaches every site
 * from one host (with `localSite`, equal URIs are each host's own view). Policies not built yet are
 * refused rather than recorded and ignored.
 */
function checkWatches(config: Config, issue: (path: (string | number)[], message: string) => void): void {
  const watchedBy = new Map<string, string>();
  config.protections.forEach((p) => p.watch && watchedBy.set(p.name, `protection "${p.name}"`));
  config.plans.forEach((plan, i) => {
    if (!plan.watch) return;
    const members = new Set(plan.groups.flatMap((g) => g.vms));
    for (const vm of members) {
      const other = watchedBy.get(vm);
      if (other) issue(['plans', i, 'watch'], `protection "${vm}" is already watched by ${other}: give its watch in one place`);
      watchedBy.set(vm, `plan "${plan.name}"`);
    }
  });
  const sameHost = (p: Protection) => {
    if (p.source.site === p.target.site) return true;
    const uri = (site: string) => config.sites.find((s) => s.name === site)?.uri;
    return config.localSite === undefined && uri(p.source.site) !== undefined && uri(p.source.site) === uri(p.target.site);
  };
  const policyIssues = (watch: Watch, path: (string | number)[], members: Protection[], what: string) => {
    if (watch.policy !== 'automatic') return;
    const local = members.find(sameHost);
    if (local) issue([...path, 'policy'], `${what}: automatic failover of protection "${local.name}" would start its DR copy on the source's own host (site "${local.target.site}"): use notify or confirm`);
  };
  config.protections.forEach((p, i) => p.watch && policyIssues(p.watch, ['protections', i, 'watch'], [p], `protection "${p.name}"`));
  config.plans.forEach((plan, i) => {
    if (!plan.watch) return;
    const members = plan.groups.flatMap((g) => g.vms).flatMap((vm) => config.protections.filter((p) => p.name === vm));
    policyIssues(plan.watch, ['plans', i, 'watch'], members, `plan "${plan.name}"`);
  });
}

/**
 * What a protection may not ask of a vSphere target: a vSphere VM boots through its firmware, from
 * its disk; its console is no file on this host; a domain template is libvirt's XML.
 */
function vsphereTarget(p: Protection, issue: (path: (string | number)[], message: string) => void): void {
  const site = `site "${p.target.site}" is vSphere`;
  if (p.target.boot.kind === 'kernel') issue(['target', 'boot', 'kind'], `a vSphere target boots from its disk (boot: { kind: disk }): ${site}, and direct kernel boot is libvirt's`);
  if (p.target.template !== undefined) issue(['target', 'template'], `a domain template is libvirt XML: ${site}, whose targets are made from the protection's settings`);
  if (p.health.serial !== undefined) {
    issue(['health', 'serial'], `a vSphere target's serial console is not a file vmdr can read: ${site}; check with agent: true (VMware Tools running), tcp or http instead`);
  }
}
