/**
 * Health checks against real parts: TCP and HTTP servers this test starts on 127.0.0.1, console
 * files it writes, and libvirt's test driver (test:///default, in this process) for power states
 * and the guest agent. The lab suite (test/lab/health.test.ts) does the same with a booting guest.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { openAdapter } from '../../../hypervisors/index.js';
import { VmdrError, type HypervisorAdapter } from '../../../hypervisors/types.js';
import { HealthSchema } from '../../../plugin/config/schema.js';
import { waitUntilHealthy } from '../../../plugin/failover/health.js';
import { waitForSerialLine } from '../../../plugin/failover/serial-health.js';
import { freeLoopbackPort } from '../../../plugin/replication/sender/nbd-port.js';
import { rejectsWith } from '../../helpers/assertions.js';

/** The test driver's own domain: always running, shared by the whole process, never touched. */
const RUNNING_VM = 'test';

/** A health spec as the config file would give it (the schema fills in the defaults). */
const spec = (health: Record<string, unknown>) => HealthSchema.parse(health);

async function listen<T extends TcpServer | HttpServer>(server: T, port = 0): Promise<T> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return server;
}

const portOf = (server: TcpServer | HttpServer) => (server.address() as { port: number }).port;

function closeAll(servers: (TcpServer | HttpServer)[]): Promise<void[]> {
  return Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          if ('closeAllConnections' in s) s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
}

describe('failover health checks', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  const servers: (TcpServer | HttpServer)[] = [];
  const madeVms: string[] = [];

  before(async () => {
    adapter = openAdapter('test:///default');
    await adapter.connect();
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-health-'));
  });

  afterEach(() => closeAll(servers));

  after(async () => {
    for (const name of madeVms) {
      await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(name).catch(() => undefined);
    }
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** An HTTP server on loopback that answers with `answer(n)` for its n-th request (from 1). */
  function httpServer(answer: (n: number, res: ServerResponse) => void): HttpServer {
    let n = 0;
    const server = createHttpServer((_req, res) => answer(++n, res));
    servers.push(server);
    return server;
  }

  async function failsWith(promise: Promise<unknown>, check: string, detail: RegExp): Promise<VmdrError> {
    const err = await rejectsWith(promise, 'HEALTH_CHECK_FAILED');
    assert.equal(err.subject.check, check);
    assert.equal(err.subject.vm, RUNNING_VM);
    assert.match(err.message, detail);
    return err;
  }

  describe('with no check configured', () => {
    it('counts a running VM as healthy at once', async () => {
      const report = await waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '5s' }), {});
      assert.deepEqual(
        report.checks.map((c) => c.check),
        ['running'],
      );
      assert.ok(report.healthyAfterMs < 1_000, `took ${report.healthyAfterMs} ms`);
    });

    it('fails at once for a VM that is shut off, and for one forced off during the wait', async () => {
      const name = `test-health-${randomBytes(3).toString('hex')}`;
      madeVms.push(name);
      await adapter.defineVm({
        name,
        memoryMiB: 128,
        vcpus: 1,
        boot: { kind: 'disk' },
        disks: [{ path: join(dir, 'vda.qcow2'), format: 'qcow2' }],
        nics: [{ network: 'default' }],
      });
      const started = Date.now();
      const off = await rejectsWith(waitUntilHealthy(adapter, name, spec({ timeout: '30s' }), {}), 'HEALTH_CHECK_FAILED');
      assert.equal(off.subject.check, 'running');
      assert.match(off.message, /is shutoff/);
      assert.ok(Date.now() - started < 2_000, 'a shut-off VM does not wait for the timeout');

      await adapter.start(name);
      // An HTTP check that keeps failing keeps the wait going; its second request (a poll later, so
      // the VM was seen running) is when the VM is pulled.
      let stoppedAt = 0;
      const web = httpServer((n, res) => {
        res.writeHead(503).end();
        if (n === 2) {
          stoppedAt = Date.now();
          void adapter.stop(name, { mode: 'force' });
        }
      });
      await listen(web);
      const waiting = waitUntilHealthy(adapter, name, spec({ timeout: '30s', http: [{ url: `http://127.0.0.1:${portOf(web)}/` }] }), {});
      const stopped = await rejectsWith(waiting, 'HEALTH_CHECK_FAILED');
      assert.equal(stopped.subject.check, 'running');
      assert.match(stopped.message, /the VM is shutoff \d+(\.\d)? s into the health wait/);
      assert.ok(stoppedAt > 0 && Date.now() - stoppedAt < 2_000, `noticed ${Date.now() - stoppedAt} ms after the stop`);
    });
  });

  describe('tcp', () => {
    it('passes once the port starts listening, a little after the wait began', async () => {
      const port = await freeLoopbackPort();
      let accepted = 0;
      const server = createTcpServer((socket) => {
        accepted++;
        socket.destroy();
      });
      servers.push(server);
      const waiting = waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '10s', tcp: [`127.0.0.1:${port}`] }), {});
      // Staging, not hoping: the first attempts must meet a closed port.
      await delay(500);
      await listen(server, port);
      const report = await waiting;
      const tcp = report.checks.find((c) => c.check === `tcp 127.0.0.1:${port}`);
      assert.ok(tcp, JSON.stringify(report));
      assert.equal(tcp.detail, 'connected');
      assert.ok(tcp.afterMs >= 500, `passed after ${tcp.afterMs} ms, before the port listened`);
      assert.ok(accepted >= 1);
      assert.deepEqual(
        report.checks.map((c) => c.check),
        ['running', `tcp 127.0.0.1:${port}`],
      );
    });

    it('fails at the timeout saying what it tried and that the connection was refused', async () => {
      const port = await freeLoopbackPort();
      const started = Date.now();
      const err = await failsWith(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', tcp: [`127.0.0.1:${port}`] }), {}),
        `tcp 127.0.0.1:${port}`,
        new RegExp(`failed its tcp 127\\.0\\.0\\.1:${port} health check: no TCP connection to 127\\.0\\.0\\.1:${port} within 1 s \\(\\d+ attempts\\); last: connection refused$`),
      );
      const took = Date.now() - started;
      assert.ok(took >= 1_000 && took < 3_000, `gave up after ${took} ms`);
      assert.ok(Number(/\((\d+) attempts\)/.exec(err.message)![1]) >= 3, 'it asked again, about every 200 ms');
    });
  });

  describe('http', () => {
    it('passes once the server answers 2xx, and reports what it answered', async () => {
      const server = httpServer((n, res) => {
        res.writeHead(n <= 2 ? 503 : 200).end('ok');
      });
      await listen(server);
      const url = `http://127.0.0.1:${portOf(server)}/health`;
      const report = await waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '10s', http: [{ url }] }), {});
      const http = report.checks.find((c) => c.check === `http ${url}`);
      assert.equal(http?.detail, 'HTTP 200 OK');
    });

    it('counts a redirect as an answer without following it', async () => {
      const nowhere = await freeLoopbackPort();
      const server = httpServer((_n, res) => res.writeHead(302, { location: `http://127.0.0.1:${nowhere}/` }).end());
      await listen(server);
      const url = `http://127.0.0.1:${portOf(server)}/`;
      const report = await waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '5s', http: [{ url }] }), {});
      assert.equal(report.checks[1]?.detail, 'HTTP 302 Found');
    });

    it('fails at the timeout with the status the server kept answering', async () => {
      const server = httpServer((_n, res) => res.writeHead(503).end('maintenance'));
      await listen(server);
      const url = `http://127.0.0.1:${portOf(server)}/`;
      await failsWith(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', http: [{ url }] }), {}),
        `http ${url}`,
        /GET http:\/\/127\.0\.0\.1:\d+\/ did not answer with a 2xx or 3xx status within 1 s \(\d+ attempts\); last: HTTP 503 Service Unavailable$/,
      );
    });

    it('says "connection refused" when nothing listens', async () => {
      const url = `http://127.0.0.1:${await freeLoopbackPort()}/`;
      await failsWith(waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', http: [{ url }] }), {}), `http ${url}`, /last: connection refused$/);
    });

    it('with `status`, wants exactly that status', async () => {
      const server = httpServer((_n, res) => res.writeHead(200).end());
      await listen(server);
      const url = `http://127.0.0.1:${portOf(server)}/`;
      await failsWith(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', http: [{ url, status: 204 }] }), {}),
        `http ${url}`,
        /did not answer with HTTP 204 within 1 s .*; last: HTTP 200 OK$/,
      );
      const report = await waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', http: [{ url, status: 200 }] }), {});
      assert.equal(report.checks[1]?.detail, 'HTTP 200 OK');
    });
  });

  describe('all checks together', () => {
    it('run side by side against one deadline; the one that misses it is named', async () => {
      const tcp = await listen(createTcpServer((socket) => socket.destroy()));
      servers.push(tcp);
      const web = httpServer((_n, res) => res.writeHead(503).end());
      await listen(web);
      const url = `http://127.0.0.1:${portOf(web)}/`;
      const started = Date.now();
      await failsWith(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', tcp: [`127.0.0.1:${portOf(tcp)}`], http: [{ url }] }), {}),
        `http ${url}`,
        /HTTP 503/,
      );
      assert.ok(Date.now() - started < 2_500, 'one deadline for all, not one per check');
    });

    it('an abort ends the wait at once with the caller\'s reason, even mid-request', async () => {
      const controller = new AbortController();
      const reason = new Error('the operator cancelled the failover');
      // A server that never answers: the abort must cut the request in flight.
      const hanging = createHttpServer(() => controller.abort(reason));
      servers.push(hanging);
      await listen(hanging);
      const url = `http://127.0.0.1:${portOf(hanging)}/`;
      const started = Date.now();
      await assert.rejects(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1m', http: [{ url }], tcp: [`127.0.0.1:${await freeLoopbackPort()}`] }), { signal: controller.signal }),
        (err: unknown) => err === reason,
      );
      assert.ok(Date.now() - started < 2_000);
      await assert.rejects(waitUntilHealthy(adapter, RUNNING_VM, spec({}), { signal: controller.signal }), (err: unknown) => err === reason);
    });
  });

  describe('serial', () => {
    it('matches only what the console got after serialFrom, and reports the line', async () => {
      const log = join(dir, 'console-match.log');
      await writeFile(log, 'VMDR-GUEST ready hostname=earlier-boot\n');
      const from = 'VMDR-GUEST ready hostname=earlier-boot\n'.length;
      const waiting = waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '10s', serial: '^VMDR-GUEST ready' }), { serialLog: log, serialFrom: from });
      await appendFile(log, 'Booting...\r\nVMDR-GUEST ready hostname=db-dr mac=52:54:00:d7:00:01\r\n');
      const report = await waiting;
      assert.equal(report.checks.find((c) => c.check === 'serial')?.detail, 'VMDR-GUEST ready hostname=db-dr mac=52:54:00:d7:00:01');
    });

    it('finds the line behind a console larger than one read, and after a line that never ends', async () => {
      const log = join(dir, 'console-large.log');
      // 2 MiB of boot noise, then a 1 MiB line without an end, then the ready line on its own.
      await writeFile(log, `${'[    0.000000] noise\n'.repeat(100_000)}${'x'.repeat(1024 * 1024)}\nVMDR-GUEST ready hostname=`);
      const waiting = waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '10s', serial: '^VMDR-GUEST ready' }), { serialLog: log, serialFrom: 0 });
      await delay(100);
      await appendFile(log, 'big-dr\n');
      const report = await waiting;
      assert.equal(report.checks.find((c) => c.check === 'serial')?.detail, 'VMDR-GUEST ready hostname=big-dr');
    });

    it('sees a line the guest prints during a quiet spell at once, not at the next look it would have made anyway', async () => {
      const log = join(dir, 'console-quiet.log');
      await writeFile(log, 'Booting...\n');
      // Unless told of the write, it would look again only a second (watching) or pollMs (2 s) later.
      const waiting = waitForSerialLine({ vm: 'quiet', file: log, pattern: /^VMDR-GUEST ready/, timeoutMs: 10_000, fromOffset: 'Booting...\n'.length, pollMs: 2_000 });
      // Quiet long enough for the wait to have looked, found nothing new and gone to sleep.
      await delay(400);
      const printed = Date.now();
      await appendFile(log, 'VMDR-GUEST ready hostname=quiet-dr\n');
      const match = await waiting;
      assert.equal(match.input, 'VMDR-GUEST ready hostname=quiet-dr');
      assert.ok(Date.now() - printed < 500, `seen ${Date.now() - printed} ms after it was printed`);
    });

    it('reads a console file that appears only after the wait began', async () => {
      const log = join(dir, 'console-late.log');
      const waiting = waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '10s', serial: '^VMDR-GUEST ready' }), { serialLog: log, serialFrom: 0 });
      await delay(200);
      await writeFile(log, 'VMDR-GUEST ready hostname=late-dr\n');
      const report = await waiting;
      assert.equal(report.checks.find((c) => c.check === 'serial')?.detail, 'VMDR-GUEST ready hostname=late-dr');
    });

    it('fails at the timeout quoting the console\'s last lines', async () => {
      const log = join(dir, 'console-miss.log');
      await writeFile(log, 'VMDR-GUEST ready hostname=earlier-boot\nKernel panic - not syncing: VFS: Unable to mount root fs\n');
      await failsWith(
        waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '1s', serial: '^VMDR-GUEST ready' }), { serialLog: log, serialFrom: 'VMDR-GUEST ready hostname=earlier-boot\n'.length }),
        'serial',
        /no line matching \/\^VMDR-GUEST ready\/ on the serial console \(.*console-miss\.log\) within 1 s; last output: Kernel panic - not syncing: VFS: Unable to mount root fs$/,
      );
    });

    it('fails at once when the VM has no console file', async () => {
      // The test driver's own domain has no file console.
      await failsWith(waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '30s', serial: 'ready' }), {}), 'serial', /has no serial console written to a file/);
    });
  });

  describe('guest agent', () => {
    it('is not something the test driver has: the adapter says unsupported, the check fails at once', async () => {
      await rejectsWith(adapter.guestAgentPing(RUNNING_VM, 1_000), 'UNSUPPORTED');
      const started = Date.now();
      await failsWith(waitUntilHealthy(adapter, RUNNING_VM, spec({ timeout: '30s', agent: true }), {}), 'agent', /asking the QEMU guest agent .* is not supported on test:\/\/\/default/);
      assert.ok(Date.now() - started < 2_000, 'no waiting for an agent that cannot exist');
    });

    it('names a VM that does not exist', async () => {
      await rejectsWith(adapter.guestAgentPing('test-health-nonexistent', 1_000), 'VM_NOT_FOUND');
    });
  });
});
