/**
 * `npm run bench:api` (issue 12): reads of the HTTP API of `vmdr serve` from another process on
 * loopback, with 200 protections defined, while the daemon replicates a real lab guest
 * continuously. Goal: ≥ 2,000 requests/s with p99 < 50 ms on this machine.
 *
 * The config: one lab VM on qemu:///system (continuous, replicated by the daemon that serves the
 * API, onto a DR site on this host whose receiver is a second daemon, as on two hosts), and 199
 * protections on libvirt's test:///default, spread over 10 tenants. Tokens are made as
 * `vmdr token create` makes them (plugin/tenants/tokens.ts). Then, one after the other, for
 * BENCH_SECONDS each (after a short warm-up), BENCH_CONNECTIONS keep-alive connections of the load
 * generator (scripts/bench/http-load.ts, its own process) on:
 *   - GET /healthz (the peer: fastify over TLS with no token and no work, the floor);
 *   - GET /api/v1/status with an operator's token (200 rows) and with a tenant's (its 20);
 *   - GET /api/v1/protections/LAB/points with the lab protection's tenant's token.
 * For each: requests/s, latency p50/p90/p99/max, errors, the daemon's CPU per request (from /proc)
 * and the replication cycles it committed meanwhile. The daemon logs as it always does (pino, on
 * its stderr). Prints a markdown report on stdout (progress on stderr) and removes everything it
 * made, also after a failure or Ctrl-C. `--no-setup` skips scripts/lab/setup on a machine already set up.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { StateStore } from '../../plugin/state/store.js';
import { createToken } from '../../plugin/tenants/tokens.js';
import { apiCall } from '../../test/helpers/api-client.js';
import { startServe, type ServeProcess } from '../../test/helpers/vmdr-serve.js';
import { labBoot, makeDisk } from '../lab/production.js';
import type { LoadResult, LoadSpec } from './http-load.js';
import { bootVm, describeMachine, exec, openLab, prepareMachine, runBench, say, table, URI, type Cleanup } from './lab.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const PROTECTIONS = 200;
const TENANTS = 10;
const GOAL_RPS = 2000;
const GOAL_P99_MS = 50;
const LOAD = join(import.meta.dirname, 'http-load.ts');

/** The load generator as a process of its own; its one JSON line. */
function load(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', LOAD, JSON.stringify(spec)], { maxBuffer: 16 * 1024 * 1024, timeout: (spec.seconds + spec.warmupSeconds + 60) * 1000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`load generator: ${err.message.split('\n')[0]} ${stderr.trim()}`)) : resolve(JSON.parse(stdout) as LoadResult),
    );
  });
}

const cyclesOf = (serve: ServeProcess) => serve.events.filter((e) => e.event === 'cycle' && e.result).length;
const failedCyclesOf = (serve: ServeProcess) => serve.events.filter((e) => e.event === 'cycle' && e.error).length;

async function waitFor(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main(cleanup: Cleanup): Promise<void> {
  if (!process.argv.includes('--no-setup')) await prepareMachine({});
  const machine = await describeMachine();
  const loadBefore = loadavg();
  const lab = await openLab(cleanup, 'api');
  const vm = `test-bench-${lab.tag}`;
  const disk = join(lab.dir, 'vda.qcow2');
  await makeDisk(disk, vm);
  say(`booting ${vm}`);
  await bootVm(lab, cleanup, vm, disk);
  cleanup.add(`remove target ${vm}-dr`, () => exec('virsh', ['-c', URI, 'undefine', `${vm}-dr`, '--nvram']).catch(() => undefined));

  const boot = labBoot();
  const statePath = join(lab.dir, 'state.db');
  const testStorage = join(lab.dir, 'test-replicas');
  await mkdir(testStorage, { recursive: true, mode: 0o700 });
  const tenants = Array.from({ length: TENANTS }, (_, i) => `tenant-${String(i).padStart(2, '0')}`);
  const others = Array.from({ length: PROTECTIONS - 1 }, (_, i) => ({ name: `bench-p-${String(i + 1).padStart(3, '0')}`, tenant: tenants[(i + 1) % TENANTS]! }));
  const config = join(lab.dir, 'vmdr.yaml');
  await writeFile(
    config,
    `version: 1
state: { path: ${statePath} }
api: { listen: "127.0.0.1:${await freeLoopbackPort()}" }
sites:
  - { name: prod, uri: "${URI}" }
  - name: dr
    uri: "${URI}"
    storage: ${join(lab.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${await freeLoopbackPort()}", credentials: ${join(lab.dir, 'receiver')} }
  - { name: test-prod, uri: "test:///default" }
  - { name: test-dr, uri: "test:///default", storage: ${testStorage} }
tenants:
${tenants.map((t) => `  - { name: ${t} }`).join('\n')}
protections:
  - name: ${vm}
    tenant: ${tenants[0]}
    source: { site: prod, vm: ${vm} }
    continuous: true
    target:
      site: dr
      vm: ${vm}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${lab.network} }]
${others
  .map(
    (p) => `  - name: ${p.name}
    tenant: ${p.tenant}
    source: { site: test-prod, vm: test }
    target: { site: test-dr, vm: ${p.name}-dr, nics: [{ network: default }] }`,
  )
  .join('\n')}
`,
  );

  const store = StateStore.open(statePath);
  const operator = createToken(store, { name: 'bench-operator', role: 'read' }).token;
  const tenant = createToken(store, { name: 'bench-tenant', tenant: tenants[0]!, role: 'read' }).token;
  store.close();

  // Two daemons, as on two hosts: the DR site's receiver, and the source site's, which replicates
  // the lab VM continuously and serves the API.
  const dr = await startServe(config, { args: ['--site', 'dr', '--no-replicate', '--no-api'] });
  cleanup.add('stop vmdr serve (dr)', () => dr.stop());
  const serve = await startServe(config, { args: ['--site', 'prod', '--no-receive'], timeoutMs: 60_000 });
  cleanup.add('stop vmdr serve (prod, API)', () => serve.stop());
  const api = serve.events.find((e) => e.event === 'api') as { url: string; credentials: string };
  const caFile = join(api.credentials, 'tls.crt');
  const ca = await readFile(caFile);
  say(`API at ${api.url}; waiting for the replication loop's first two cycles`);
  await waitFor('two committed cycles of the lab protection', () => cyclesOf(serve) >= 2, 180_000);

  // What each load reads, checked once: a fast wrong answer must not pass for a fast right one.
  const status = await apiCall(api.url, ca, '/api/v1/status', { token: operator });
  if (status.status !== 200 || status.json.protections.length !== PROTECTIONS) throw new Error(`operator status: ${status.status} ${status.text.slice(0, 200)}`);
  const mine = await apiCall(api.url, ca, '/api/v1/status', { token: tenant });
  const expectMine = 1 + others.filter((p) => p.tenant === tenants[0]).length;
  if (mine.status !== 200 || mine.json.protections.length !== expectMine) throw new Error(`tenant status: ${mine.status} ${mine.text.slice(0, 200)}`);
  const points = await apiCall(api.url, ca, `/api/v1/protections/${vm}/points`, { token: tenant });
  if (points.status !== 200 || points.json.length < 1) throw new Error(`points: ${points.status} ${points.text.slice(0, 200)}`);

  const runs: { name: string; path: string; token?: string; answer: string }[] = [
    { name: 'GET /healthz (peer: no token, no work)', path: '/healthz', answer: '{"status":"ok"}' },
    { name: 'GET /api/v1/status, operator token', path: '/api/v1/status', token: operator, answer: `${PROTECTIONS} protections` },
    { name: 'GET /api/v1/status, tenant token', path: '/api/v1/status', token: tenant, answer: `${expectMine} protections` },
    { name: 'GET /api/v1/protections/LAB/points, tenant token', path: `/api/v1/protections/${vm}/points`, token: tenant, answer: 'points' },
  ];
  const results: { name: string; result: LoadResult; serveCpuMs: number; cycles: number; failedCycles: number; bytes: number }[] = [];
  for (const r of runs) {
    say(`${r.name}: ${CONNECTIONS} connections, ${WARMUP_SECONDS} s warm-up + ${SECONDS} s`);
    const cycles0 = cyclesOf(serve);
    const failed0 = failedCyclesOf(serve);
    const result = await load({
      url: api.url,
      path: r.path,
      ...(r.token ? { token: r.token } : {}),
      ca: caFile,
      connections: CONNECTIONS,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      watchPid: serve.child.pid!,
    });
    const serveCpuMs = result.watchedCpuMs!;
    const answer = r.answer === 'points' ? `${(await apiCall(api.url, ca, r.path, { token: r.token! })).json.length} points` : r.answer;
    r.answer = answer;
    results.push({ name: r.name, result, serveCpuMs, cycles: cyclesOf(serve) - cycles0, failedCycles: failedCyclesOf(serve) - failed0, bytes: result.requests ? result.bodyBytes / result.requests : 0 });
    say(`  ${result.requestsPerSecond.toFixed(0)} req/s, p50 ${result.latencyMs.p50.toFixed(1)} ms, p99 ${result.latencyMs.p99.toFixed(1)} ms, ${result.errors} errors`);
  }

  const loadAfter = loadavg();
  // What the daemon said besides its cycles and request lines: a loop that stalled shows here.
  for (const e of serve.events.filter((x) => x.event !== 'cycle').slice(-10)) say(`vmdr serve: ${JSON.stringify(e).slice(0, 300)}`);
  const lastCycle = serve.events.filter((x) => x.event === 'cycle').at(-1);
  say(`vmdr serve: last cycle event: ${JSON.stringify(lastCycle).slice(0, 400)}`);
  for (const line of serve.stderr().split('\n').filter((l) => l && !l.includes('"request completed"')).slice(-10)) say(`vmdr serve stderr: ${line.slice(0, 300)}`);
  const floor = results[0]!.result.requestsPerSecond;
  const ms = (x: number) => x.toFixed(1);
  const out: string[] = [];
  out.push(`## API load benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(
    `${PROTECTIONS} protections (1 lab VM on qemu:///system replicated continuously by the daemon serving the API, ${PROTECTIONS - 1} on test:///default), ` +
      `${TENANTS} tenants. Load: ${CONNECTIONS} keep-alive HTTPS connections from another process, one request at a time each, ` +
      `${WARMUP_SECONDS} s warm-up then ${SECONDS} s measured, one endpoint after the other. Daemon CPU: user + system of \`vmdr serve\` (API and replication loop) over the window.`,
    '',
  );
  out.push(
    table(
      ['endpoint', 'answer', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'errors', 'bytes/answer', 'daemon CPU/request', 'req/s / healthz', 'cycles committed (failed)', `goal ≥ ${GOAL_RPS} req/s, p99 < ${GOAL_P99_MS} ms`],
      results.map(({ name, result: x, serveCpuMs, cycles, failedCycles, bytes }, i) => [
        name,
        runs[i]!.answer,
        x.requestsPerSecond.toFixed(0),
        ms(x.latencyMs.p50),
        ms(x.latencyMs.p90),
        ms(x.latencyMs.p99),
        ms(x.latencyMs.max),
        x.errors ? `${x.errors} (${Object.entries(x.errorKinds).map(([k, n]) => `${k}: ${n}`).join(', ')})` : '0',
        bytes.toFixed(0),
        `${((serveCpuMs * 1000) / Math.max(1, x.requests)).toFixed(0)} µs`,
        `${(x.requestsPerSecond / floor).toFixed(2)} ×`,
        `${cycles} (${failedCycles})`,
        // The goal holds while a replication loop runs: a window in which it committed nothing does not count.
        i === 0 ? '' : cycles === 0 ? 'no cycle committed: not measured as asked' : x.requestsPerSecond >= GOAL_RPS && x.latencyMs.p99 < GOAL_P99_MS && x.errors === 0 ? 'met' : 'NOT met',
      ]),
    ),
    '',
  );
  out.push(`Load average (1, 5, 15 min) before: ${loadBefore.map((x) => x.toFixed(2)).join(', ')}; after: ${loadAfter.map((x) => x.toFixed(2)).join(', ')}.`, '');
  out.push(`Load generator CPU per window: ${results.map((r) => `${(r.result.clientCpuMs / 1000).toFixed(1)} s`).join(', ')} (of ${SECONDS} s).`, '');
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify(results)} -->\n`);
}

runBench('bench:api', main);
