/**
 * `npm run bench:beat` (issue 15): what one remote heartbeat costs. Two sites on this host
 * (their own configs, identities and endpoints on loopback, as writeTwoSiteConfigs makes them with
 * `oneHost`): the source site's `vmdr serve` answers `POST /v1/source-site/heartbeat`, and this
 * process asks it as the DR site's watcher does, BEAT_COUNT times one after the other for one
 * protection. Measured: wall time per beat, and CPU per beat of this process (the DR side), the
 * source site's daemon and the system libvirtd. Prints a markdown report; removes what it made.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../../plugin/config/load.js';
import { KeptPeers } from '../../plugin/sites/kept-peers.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { sourceSiteFor } from '../../plugin/sites/source-site-for.js';
import { StateStore } from '../../plugin/state/store.js';
import { writeTwoSiteConfigs } from '../../test/helpers/two-sites.js';
import { startServe } from '../../test/helpers/vmdr-serve.js';
import { describeMachine, median, prepareMachine, processCpuMs, runBench, say, systemLibvirtdPid, table } from './lab.js';

const BEATS = Number(process.env.BEAT_COUNT ?? 200);

runBench('bench:beat', async (cleanup) => {
  await prepareMachine({});
  const machine = await describeMachine();
  const dir = await mkdtemp(join('/var/lib/vmdr/lab/tests', 'bench-beat-'));
  cleanup.add('scratch', () => rm(dir, { recursive: true, force: true }));
  const configs = await writeTwoSiteConfigs(dir, {
    oneHost: true,
    // A source VM that is not defined: the beat still asks libvirt for it (and answers "missing").
    protections: `  - name: beaten
    source: { site: source, vm: vmdr-bench-beat-none }
    target: { site: dr, vm: beaten-dr, nics: [{ network: none }] }`,
  });
  say('the source site\'s vmdr serve (its endpoint answers heartbeats)');
  const serve = await startServe(configs.source, { args: ['--no-replicate'] });
  cleanup.add('vmdr serve', () => serve.stop());
  const { config, file } = await loadConfig(configs.dr);
  const state = StateStore.open(configs.state.dr);
  const sites = new SiteConnections(config, file);
  const peers = new KeptPeers(config, file);
  cleanup.add('DR side', async () => (peers.close(), await sites.close(), state.close()));
  const p = config.protections[0]!;
  const libvirtd = await systemLibvirtdPid();
  const servePid = serve.child.pid!;
  const rows: (string | number)[][] = [];
  // The DR side both ways: a new client (a mutual-TLS handshake) per beat, as before; the watch's kept one.
  for (const [how, kept] of [['a new TLS connection per beat', undefined], ['the kept connection', peers]] as const) {
    const source = sourceSiteFor({ config, file, sites, state, ...(kept ? { peers: kept } : {}) }, p);
    const beat = () => source.heartbeat([{ protection: p, agent: false }]);
    // The first beats open what is kept (a TLS session, a libvirt connection): not counted.
    for (let i = 0; i < 5; i++) await beat();
    const [dr0, src0, lv0] = [process.cpuUsage(), await processCpuMs(servePid), await processCpuMs(libvirtd)];
    const each: number[] = [];
    say(`${BEATS} beats, ${how}`);
    const t0 = performance.now();
    for (let i = 0; i < BEATS; i++) {
      const t = performance.now();
      const answer = await beat();
      each.push(performance.now() - t);
      if (answer.vms.beaten?.state !== 'missing') throw new Error(`unexpected answer ${JSON.stringify(answer)}`);
    }
    const wallMs = performance.now() - t0;
    const dr = process.cpuUsage(dr0);
    const drMs = (dr.user + dr.system) / 1000;
    const srcMs = (await processCpuMs(servePid)) - src0;
    const lvMs = (await processCpuMs(libvirtd)) - lv0;
    const per = (ms: number) => `${(ms / BEATS).toFixed(2)} ms`;
    const sorted = [...each].sort((a, b) => a - b);
    rows.push([how, BEATS, per(wallMs), `${median(each).toFixed(2)} ms`, `${sorted[Math.floor(sorted.length * 0.95)]!.toFixed(2)} ms`, per(drMs), per(srcMs), per(lvMs), per(drMs + srcMs + lvMs)]);
  }
  process.stdout.write(`## One remote heartbeat (\`npm run bench:beat\`, ${new Date().toISOString()})\n\n`);
  process.stdout.write(table(['DR side', 'beats', 'wall per beat (mean)', 'median', 'p95', 'CPU DR side', 'CPU source site daemon', 'CPU libvirtd', 'CPU in all'], rows));
  process.stdout.write(`\nMachine: ${JSON.stringify(machine)}\n`);
});
