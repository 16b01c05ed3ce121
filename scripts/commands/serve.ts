import { realpath } from 'node:fs/promises';
import type { Argv } from 'yargs';
import { VmdrError } from '../../hypervisors/errors.js';
import { configReloader } from '../../plugin/config/live.js';
import type { Config, Protection } from '../../plugin/config/schema.js';
import { watchConfigFile } from '../../plugin/config/watch.js';
import type { ControlServer } from '../../plugin/control/server.js';
import { VmdrMetrics } from '../../plugin/metrics/registry.js';
import { daemonMetricsRoute } from '../../plugin/metrics/route.js';
import { Notifier } from '../../plugin/notifications/notifier.js';
import { cycleInterval, replicateContinuously, type CycleReport } from '../../plugin/replication/continuous.js';
import { ReplicationLag } from '../../plugin/replication/lag.js';
import { replicateGroupContinuously } from '../../plugin/replication/group-loop.js';
import { sourceSitesHere, sweepLeftHolds } from '../../plugin/replication/left-holds.js';
import { loopUnits, ReplicationLoops } from '../../plugin/replication/loops.js';
import { RpoMonitor } from '../../plugin/replication/rpo-monitor.js';
import type { SyncResult } from '../../plugin/replication/sync.js';
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import type { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { isLocalSite } from '../../plugin/sites/connections.js';
import { SourceFences } from '../../plugin/sites/source-fences.js';
import { SourceGuard } from '../../plugin/sites/source-guard.js';
import { describeSync, reportCycle, reportGroupCycle, sayer, type Say } from '../cli/cycles.js';
import { reportRelease, reportSweepFailure } from '../cli/holds.js';
import { reportGuard } from '../cli/source-guard.js';
import { stepLog } from '../cli/progress.js';
import { run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext, type ReplicationContext } from './replication-context.js';

interface ServeOptions extends GlobalOptions {
  site?: string;
  receive: boolean;
  replicate: boolean;
  api: boolean;
  drills: boolean;
  watch: boolean;
}

/**
 * The daemon: the receivers of the config's DR sites and a replication loop per protection (per
 * consistency group for the groups' members, on the group's coordinating site). On
 * SIGTERM or SIGINT it stops taking cycles, lets the loops end their backup jobs and closes.
 */
export const serveCommand: CommandBody<ServeOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    y
      .option('site', { type: 'string', describe: "This host is this site: only its endpoint, and only loops of protections whose source is here (default: localSite)" })
      .option('receive', { type: 'boolean', default: true, describe: 'Run the sites\' endpoints (--no-receive: replication loops only)' })
      .option('replicate', { type: 'boolean', default: true, describe: 'Run replication loops (--no-replicate: receivers only)' })
      .option('api', { type: 'boolean', default: true, describe: "Serve the HTTP API when the config has `api:` (--no-api: not here)" })
      .option('drills', { type: 'boolean', default: true, describe: "Run the drills of this DR site on their schedules (not with --no-receive; --no-drills: not here)" })
      .option('watch', { type: 'boolean', default: true, describe: "Run the heartbeats on the sources this DR site watches (not with --no-receive; --no-watch: not here)" }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async (ctx) => {
        // A host that knows which site it is serves only that site: another site's endpoint
        // listens on the other host's address.
        const site = argv.site ?? ctx.config.localSite;
        // Before anything starts: a second daemon of the same site and state file is refused here.
        const { claimSites } = await import('../../plugin/control/site-claims.js');
        const claims = await claimSites(ctx.config.state.path, site ? [site] : ctx.config.sites.map((s) => s.name));
        try {
          await serveSites(ctx, argv, site, sayer(argv.json));
        } finally {
          await claims.release();
        }
      }),
    ),
};

/**
 * The daemon's parts for `site` (every site when undefined) until SIGTERM or SIGINT: the sites'
 * endpoints, the API (with the metrics), the replication loops and their RPO monitor, the control
 * socket; then each stops in turn.
 */
async function serveSites({ file, config, fingerprint, sites, state }: ReplicationContext, argv: ServeOptions, site: string | undefined, say: Say): Promise<void> {
  const stop = new AbortController();
  const end = () => stop.abort();
  process.once('SIGINT', end).once('SIGTERM', end);
  // Loaded here, not at start-up: the HTTPS server (fastify) is only the daemon's.
  const { startReceivers } = await import('../../plugin/replication/receiver/run.js');
  const receivers = !argv.receive ? [] : await startReceivers(config, file, state, {
    ...(site ? { only: site } : {}),
    onProgress: stepLog(say),
    onWarning: (err, context) => {
      const message = err instanceof Error ? err.message : String(err);
      const about = context.protection ? `protection ${context.protection}` : `request ${context.correlation}`;
      say({ event: 'warning', ...context, message }, `warning: site ${context.site}, ${about}: ${message}`);
    },
  });
  for (const r of receivers) {
    say(
      { event: 'receiver', site: r.site, url: r.url, listening: r.listening, credentials: r.credentials, madeCredentials: r.madeCredentials, fingerprint: r.fingerprint, recovered: r.recovered },
      `endpoint of site ${r.site} listening on https://${r.listening}${r.url === `https://${r.listening}` ? '' : ` (peers use ${r.url})`}, certificate ${r.fingerprint}${r.madeCredentials ? ` (made in ${r.credentials})` : ''}` +
        (r.recovered.discarded.length ? `; discarded ${r.recovered.discarded.length} uncommitted overlays` : ''),
    );
  }
  // Read at each reload: the config object is the daemon's one, updated in place (config/live.ts).
  // A consistency group's members have no loop of their own: their group's loop captures them.
  const loopsHere = () => (argv.replicate ? loopUnits(config, config.protections.filter((p) => !site || p.source.site === site), site) : []);
  const replicatedHere = () => loopsHere().flatMap((u) => u.protections);
  const watch = watchReplication(config, replicatedHere(), { state, say, signal: stop.signal });
  // One fence per failover whoever learns of it first: a replication loop or the source guard.
  const fences = new SourceFences(sites);
  const loops = new ReplicationLoops(
    async (u, signal) => {
      const receivers = new Map<string, ReceiverClient>();
      try {
        // A group's member on another source site ships from its own host (group-cycle.ts).
        for (const p of u.protections) if (isLocalSite(config, p.source.site)) receivers.set(p.name, await receiverFor(config, file, p));
        const options = {
          signal,
          // A group cycles as often as its most demanding member asks.
          intervalMs: Math.min(...u.protections.map((p) => cycleInterval(p))),
          fences,
          onCycle: (c: CycleReport) => {
            watch.cycle(c);
            reportCycle(say, u.protections.find((p) => p.name === c.protection)!, c);
          },
        };
        if (u.group) {
          await replicateGroupContinuously(u.group, u.protections, { config, file, sites, state, receiverOf: (p) => receivers.get(p.name)! }, { ...options, onGroupCycle: (g) => reportGroupCycle(say, g) });
        } else {
          const p = u.protections[0]!;
          await replicateContinuously(p, { sites, state, receiver: receivers.get(p.name)! }, options);
        }
      } finally {
        for (const r of receivers.values()) r.close();
      }
    },
    (u, err) =>
      say(
        { event: 'warning', ...(u.group ? { group: u.group.name } : { protection: u.key }), ...(err instanceof VmdrError ? err.toJSON() : { message: String(err) }) },
        `warning: ${u.group ? `consistency group ${u.group.name}` : u.key}: its replication loop ended: ${err instanceof Error ? err.message : String(err)}`,
      ),
  );
  let control: ControlServer | undefined;
  let drills: Awaited<ReturnType<typeof startDrills>> | undefined;
  let watcher: Awaited<ReturnType<typeof startWatch>> | undefined;
  let guard: SourceGuard | undefined;
  const reload = configReloader({ file, config, fingerprint }, {
    apply: async (reloaded) => {
      control?.reloaded(reloaded.fingerprint);
      watch.reconfigure(config, replicatedHere());
      guard?.set(site);
      const changes = await loops.set(loopsHere());
      if (reloaded.changed.includes('tenants')) await ensureTenantNetworks({ config, sites }, site, say);
      // Which drills run here follows the plans' and protections' sites too.
      if (reloaded.changed.some((k) => k === 'drills' || k === 'plans' || k === 'protections')) await drills?.reschedule();
      if (reloaded.changed.some((k) => k === 'plans' || k === 'protections' || k === 'sites')) await watcher?.reset();
      return changes;
    },
    refused: (why, err) => say({ event: 'warning', why, ...err.toJSON() }, `warning: config not reloaded (${why}): ${err.message}; the daemon runs with the config it had`),
    reloaded: (why, { changed, restartNeeded }, loops) => {
      const moved = [...loops.started.map((n) => `+${n}`), ...loops.stopped.map((n) => `-${n}`), ...loops.restarted.map((n) => `~${n}`)];
      say(
        { event: 'reloaded', why, changed, restartNeeded, loops },
        `config reloaded (${why}): ${changed.join(', ') || 'nothing that matters here'} changed` +
          (moved.length ? `; replication loops ${moved.join(' ')}` : '') +
          (restartNeeded.length ? `; ${restartNeeded.join(', ')} changed too and take effect when vmdr serve restarts` : ''),
      );
    },
  });
  const api = argv.api
    ? await startApi({
        file,
        config,
        state,
        sites,
        ...(site ? { site } : {}),
        onSynced: watch.synced,
        reloadConfig: async () => (await reload('api'), config),
        notifier: watch.notifier,
        extraRoutes: (app) => daemonMetricsRoute(app, watch.metrics.registry),
      })
    : undefined;
  if (api) {
    say(
      { event: 'api', url: api.url, fingerprint: api.fingerprint, credentials: api.credentials, madeCredentials: api.madeCredentials },
      `API listening on ${api.url}, certificate ${api.fingerprint}${api.madeCredentials ? ` (made in ${api.credentials})` : ''}`,
    );
  }
  await ensureTenantNetworks({ config, sites }, site, say);
  // Drills boot on a DR site: a daemon that receives (a DR host) runs its site's drills.
  drills = argv.drills && argv.receive ? await startDrills({ config, file, sites, state, notifier: watch.notifier }, site, say) : undefined;
  // Heartbeats run on a DR site, as drills do.
  watcher = argv.watch && argv.receive ? await startWatch({ config, file, sites, state, notifier: watch.notifier }, site, say) : undefined;
  // A daemon of a DR site alone has no source VM to sync: the control socket is a source site's.
  const servesSources = !site || config.protections.some((p) => p.source.site === site);
  // A VM a dead vmdr process left paused or frozen here runs again within seconds (left-holds.ts).
  const sweeping = servesSources ? sweepLeftHolds(sites, () => sourceSitesHere(config, site), { signal: stop.signal, onRelease: (r) => reportRelease(say, r), onWarning: (s, e) => reportSweepFailure(say, s, e) }) : undefined;
  // Whether or not it replicates, a source site's daemon asks first whether its sources are failed
  // over, and keeps asking: a failed-over source is fenced before anything else runs it here.
  guard = servesSources ? new SourceGuard({ config, file, sites, fences, onReport: (p, r) => reportGuard(say, p, r) }) : undefined;
  guard?.set(site);
  const guarding = guard?.run(stop.signal);
  await loops.set(loopsHere());
  control = servesSources ? await startControl({ file, config, fingerprint, sites, state }, say, watch.synced) : undefined;
  // SIGHUP (systemctl reload) and an edit of the file reload the config; a bad one is a warning and changes nothing.
  const hangUp = () => void reload('signal').catch(() => undefined);
  process.on('SIGHUP', hangUp);
  await watchConfigFile(file, { signal: stop.signal, onChange: () => void reload('file').catch(() => undefined), onWarning: (err) => say({ event: 'warning', message: String(err) }, `warning: config watch: ${String(err)}`) });
  say({ event: 'ready', ...(control ? { control: control.socket } : {}) }, 'vmdr serve: ready');
  await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
  process.off('SIGHUP', hangUp);
  await drills?.stop();
  await watcher?.stop();
  await control?.close();
  await api?.close();
  await loops.stopAll();
  await guarding;
  await sweeping;
  await watch.notifier.idle();
  await Promise.allSettled(receivers.map((r) => r.close()));
  say({ event: 'stopped' }, 'vmdr serve: stopped');
}

/**
 * The drills this daemon runs: first those a killed daemon left half done are torn down and
 * recorded as interrupted, then the schedule starts (empty while the config has no drill of this
 * site: a reload may bring some). `reschedule` takes the drills of the config as it is now.
 */
async function startDrills(deps: import('../../plugin/drills/run.js').DrillDeps, site: string | undefined, say: Say) {
  const { recoverInterruptedDrills } = await import('../../plugin/drills/recover.js');
  const { DrillScheduler, drillsOfSite } = await import('../../plugin/drills/scheduler.js');
  for (const r of await recoverInterruptedDrills(deps)) {
    say({ event: 'drill', drill: r.run.drill, drillRun: r.run.id, status: r.run.status, revert: r.revert, reason: r.run.reason }, `drill ${r.run.drill} (${r.run.id}): interrupted: ${r.run.reason?.message}`);
  }
  const scheduler = new DrillScheduler(deps, drillsOfSite(deps.config, site), {
    onStarted: (d) => say({ event: 'drill-started', drill: d.name, plan: d.plan }, `drill ${d.name}: started (plan ${d.plan})`),
    onOutcome: ({ run, report }) =>
      say(
        { event: 'drill', drill: run.drill, drillRun: run.id, failover: run.failover, status: run.status, reason: run.reason, rtoMs: report?.rtoMs ?? null },
        `drill ${run.drill} (${run.id}): ${run.status}${run.reason ? `: ${run.reason.message}` : ''}`,
      ),
    onWarning: (d, err) => {
      const message = err instanceof Error ? err.message : String(err);
      say({ event: 'warning', drill: d.name, message }, `warning: drill ${d.name}: ${message}`);
    },
  });
  const scheduled = () => {
    for (const [name, next] of Object.entries(scheduler.nextRuns())) {
      say({ event: 'drill-scheduled', drill: name, next: next?.toISOString() ?? null }, `drill ${name}: next run ${next?.toISOString() ?? 'never'}`);
    }
  };
  scheduler.start();
  scheduled();
  return {
    stop: () => scheduler.stop(),
    reschedule: async () => {
      await scheduler.reschedule(drillsOfSite(deps.config, site));
      scheduled();
    },
  };
}

/**
 * The heartbeats on the sources this DR site watches (plugin/watch/): each change of state is a line
 * of the log, a row of `vmdr events` and a webhook. `reset` takes the watches of the config as it is now.
 */
async function startWatch(deps: Pick<ReplicationContext, 'config' | 'file' | 'sites' | 'state'> & { notifier: Notifier }, site: string | undefined, say: Say) {
  const { SourceWatcher } = await import('../../plugin/watch/watcher.js');
  const { watchedOnSite } = await import('../../plugin/watch/watched.js');
  const watcher = new SourceWatcher({
    ...deps,
    onEvent: (e, w) =>
      say(
        { event: 'watch', protection: e.protection, site: e.site, state: e.state, detail: e.detail, policy: w.watch.policy, plan: w.plan ?? null, at: e.at.toISOString() },
        `watch ${e.protection}: source ${w.protection.source.vm}@${e.site} ${e.state}${e.detail ? `: ${e.detail}` : ''}`,
      ),
    onWarning: (err) => say({ event: 'warning', message: String(err) }, `warning: watch: ${err instanceof Error ? err.message : String(err)}`),
  });
  const reset = async () => {
    const watched = watchedOnSite(deps.config, site);
    await watcher.set(watched);
    for (const w of watched) {
      say(
        { event: 'watching', protection: w.protection.name, site: w.protection.source.site, policy: w.watch.policy, intervalMs: w.watch.interval, missed: w.watch.missed, afterMs: w.watch.after, plan: w.plan ?? null },
        `watching ${w.protection.name}: source ${w.protection.source.vm}@${w.protection.source.site} every ${w.watch.interval / 1000} s, down after ${w.watch.missed} missed beats and ${w.watch.after / 1000} s (policy ${w.watch.policy})`,
      );
    }
  };
  await reset();
  return { reset, stop: () => watcher.close() };
}

/** The config's HTTP API, when it has one; its modules load only then. */
async function startApi(deps: Parameters<typeof import('../../plugin/api/run.js').startConfiguredApi>[0]) {
  if (!deps.config.api) return undefined;
  const { startConfiguredApi } = await import('../../plugin/api/run.js');
  return startConfiguredApi(deps);
}

/**
 * Each tenant's DR networks missing on the DR sites this daemon reaches: how a DR host gets the
 * networks of a tenant created on another host. A network that cannot be made is a warning: the
 * daemon's receivers and loops run regardless, and the next start tries again.
 */
async function ensureTenantNetworks(ctx: Pick<ReplicationContext, 'config' | 'sites'>, site: string | undefined, say: Say): Promise<void> {
  if (ctx.config.tenants.length === 0) return;
  const { ensureAllTenantNetworks } = await import('../../plugin/tenants/networks.js');
  try {
    for (const n of (await ensureAllTenantNetworks(ctx.config, ctx.sites, site)).filter((e) => e.made)) {
      say({ event: 'tenant-network', site: n.site, network: n.network }, `made tenant network ${n.network} on site ${n.site}`);
    }
  } catch (err) {
    if (!(err instanceof VmdrError)) throw err;
    say({ event: 'warning', ...err.toJSON() }, `warning: tenant networks: ${err.message}`);
  }
}

/**
 * The control socket `vmdr sync` hands its one-shot syncs to. The first daemon of a config that
 * serves a source site takes it: a second one runs without, and the syncs go to the first.
 */
async function startControl(ctx: ReplicationContext, say: Say, synced: (r: SyncResult) => void): Promise<ControlServer | undefined> {
  const { startControlServer } = await import('../../plugin/control/server.js');
  try {
    return await startControlServer(await realpath(ctx.file), {
      ...ctx,
      onWarning: (err) => say({ event: 'warning', message: String(err) }, `warning: control socket: ${err instanceof Error ? err.message : String(err)}`),
      onSynced: (r) => {
        synced(r);
        say({ event: 'sync', handedOver: true, protection: r.protection, kind: r.kind, point: r.point.id, durationMs: r.durationMs }, `${describeSync(r)} (asked by vmdr sync)`);
      },
    });
  } catch (err) {
    if (!(err instanceof VmdrError && err.code === 'SERVE_ALREADY_RUNNING')) throw err;
    say({ event: 'warning', ...err.toJSON() }, `warning: ${err.message}: syncs handed over go to that one`);
    return undefined;
  }
}

/**
 * What the daemon learns of its protections' replication: their lag (from their cycles, and from
 * this host's sync history until the first one), the metrics, and the RPO monitor, which tells the
 * config's webhooks once when a lag passes its RPO and once when it recovers. Webhooks are not
 * waited for: the loops and the monitor carry on while they are told.
 */
function watchReplication(config: Config, replicated: Protection[], ctx: Pick<ReplicationContext, 'state'> & { say: Say; signal: AbortSignal }) {
  const { say, signal } = ctx;
  const lag = new ReplicationLag();
  lag.seed(ctx.state, replicated.map((p) => p.name));
  const metrics = new VmdrMetrics({ protections: replicated, known: config.protections, lag, state: ctx.state });
  const notifier = new Notifier(config.notifications, { signal, onWarning: (err) => say({ event: 'warning', ...err.toJSON() }, `warning: ${err.message}`) });
  const monitor = new RpoMonitor(replicated, lag, {
    onEvent: (e) => {
      if (e.event === 'rpo-breached') metrics.rpoBreached(e.protection);
      say(
        { ...e, event: 'rpo-alert', alert: e.event },
        e.event === 'rpo-breached'
          ? `${e.protection}: RPO breached: the newest recovery point is ${e.lag.toFixed(0)} s old (RPO ${e.rpo} s)`
          : `${e.protection}: RPO met again: the newest recovery point is ${e.lag.toFixed(0)} s old (RPO ${e.rpo} s)`,
      );
      notifier.tell(e.protection, e);
    },
  });
  monitor.run(signal);
  return {
    metrics,
    notifier,
    /** The config was reloaded: what is replicated here, labelled and told from now on. */
    reconfigure: (live: Config, replicatedNow: Protection[]) => {
      lag.seed(ctx.state, replicatedNow.map((p) => p.name));
      metrics.setProtections(replicatedNow, live.protections);
      monitor.setProtections(replicatedNow);
      notifier.reconfigure(live.notifications);
    },
    cycle: (c: CycleReport) => {
      lag.observe(c);
      metrics.cycle(c);
    },
    synced: (r: SyncResult) => {
      lag.synced(r);
      metrics.synced(r);
    },
  };
}
