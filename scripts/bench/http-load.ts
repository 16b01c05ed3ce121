/**
 * The load generator of `npm run bench:api`, run as a process of its own so that the daemon and
 * the client do not share an event loop: N keep-alive HTTPS connections on loopback, each sending
 * one GET at a time (no pipelining, as a portal's pool of connections does) for a fixed time.
 * Latency is from the request's write to the answer's last byte. The client is the lean kind a
 * load tool is (autocannon parses HTTP itself too): it reads the status line and content-length
 * and counts bytes, so its own cost stays small beside the server's on a 2-core machine.
 *
 * Input: one JSON argument ({url, path, token?, ca, connections, seconds, warmupSeconds}); output:
 * one JSON line on stdout (requests, errors by kind, statuses, latency percentiles in ms).
 * An answer that is not 2xx, a connection that fails or closes mid-answer, and an answer without
 * content-length are errors.
 */
import { readFileSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';

export interface LoadSpec {
  url: string;
  path: string;
  token?: string;
  /** The daemon's certificate file (PEM): the only one trusted. */
  ca: string;
  connections: number;
  seconds: number;
  warmupSeconds: number;
  /** A process whose CPU over the measured time is reported too (the daemon). */
  watchPid?: number;
}

export interface LoadResult {
  path: string;
  connections: number;
  seconds: number;
  requests: number;
  requestsPerSecond: number;
  errors: number;
  errorKinds: Record<string, number>;
  statuses: Record<string, number>;
  bodyBytes: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** The client's own CPU over the measured time (user + system), in ms. */
  clientCpuMs: number;
  /** The watched process's CPU over the measured time (user + system), in ms. */
  watchedCpuMs?: number;
}

/** user + system CPU of a process so far, in ms (clock ticks of 10 ms). */
function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const HEADER_END = Buffer.from('\r\n\r\n');

async function run(spec: LoadSpec): Promise<LoadResult> {
  const target = new URL(spec.url);
  const ca = readFileSync(spec.ca);
  const request = Buffer.from(
    `GET ${spec.path} HTTP/1.1\r\nhost: ${target.host}\r\n${spec.token ? `authorization: Bearer ${spec.token}\r\n` : ''}accept: application/json\r\nconnection: keep-alive\r\n\r\n`,
  );
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const errorKinds: Record<string, number> = {};
  let bodyBytes = 0;
  let counting = false;
  let stopping = false;
  const error = (kind: string) => {
    if (counting) errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  };

  /** One connection's loop: a request, its whole answer, the next; a new connection when the server closes one. */
  const loop = async (): Promise<void> => {
    while (!stopping) {
      const socket = await new Promise<TLSSocket | undefined>((resolve) => {
        const s = connect({ host: target.hostname, port: Number(target.port), ca, servername: target.hostname === '127.0.0.1' ? undefined : target.hostname });
        s.once('secureConnect', () => resolve(s));
        s.once('error', () => {
          error('connect');
          resolve(undefined);
        });
      });
      if (!socket) continue;
      socket.setNoDelay(true);
      await new Promise<void>((done) => {
        let buffered: Buffer = Buffer.alloc(0);
        let sentAt = 0;
        let headerLength = -1;
        let bodyLength = 0;
        let received = 0;
        let status = 0;
        let closeAfter = false;
        let finished = false;
        const finish = () => {
          if (finished) return;
          finished = true;
          socket.destroy();
          done();
        };
        const send = () => {
          if (stopping) return finish();
          buffered = Buffer.alloc(0);
          headerLength = -1;
          sentAt = performance.now();
          socket.write(request);
        };
        socket.on('data', (chunk: Buffer) => {
          // Only the head is kept; the body is counted, not copied.
          if (headerLength < 0) {
            buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
            const end = buffered.indexOf(HEADER_END);
            if (end < 0) return;
            headerLength = end + HEADER_END.length;
            const head = buffered.subarray(0, end).toString('latin1');
            status = Number(head.slice(9, 12));
            const length = /\r\ncontent-length: *(\d+)/i.exec(head);
            closeAfter = /\r\nconnection: *close/i.test(head);
            if (!length) {
              error('no content-length');
              return finish();
            }
            bodyLength = Number(length[1]);
            received = buffered.length - headerLength;
          } else {
            received += chunk.length;
          }
          if (received < bodyLength) return;
          if (received > bodyLength) {
            error('bytes after the answer');
            return finish();
          }
          if (counting) {
            latencies.push(performance.now() - sentAt);
            statuses[status] = (statuses[status] ?? 0) + 1;
            bodyBytes += bodyLength;
            if (status < 200 || status > 299) error(`status ${status}`);
          }
          if (closeAfter) return finish();
          send();
        });
        socket.once('error', () => {
          if (!stopping) error('connection error');
          finish();
        });
        socket.once('close', () => {
          if (!finished && !stopping && headerLength >= 0) error('closed mid-answer');
          finish();
        });
        send();
      });
    }
  };

  const loops = Array.from({ length: spec.connections }, () => loop());
  await new Promise((r) => setTimeout(r, spec.warmupSeconds * 1000));
  counting = true;
  const cpu0 = process.cpuUsage();
  const watched0 = spec.watchPid ? cpuMsOf(spec.watchPid) : 0;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, spec.seconds * 1000));
  counting = false;
  const elapsed = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const watchedCpuMs = spec.watchPid ? cpuMsOf(spec.watchPid) - watched0 : undefined;
  stopping = true;
  await Promise.all(loops);

  const sorted = Float64Array.from(latencies).sort();
  const at = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]! : NaN);
  const errors = Object.values(errorKinds).reduce((a, b) => a + b, 0);
  return {
    path: spec.path,
    connections: spec.connections,
    seconds: elapsed / 1000,
    requests: latencies.length,
    requestsPerSecond: latencies.length / (elapsed / 1000),
    errors,
    errorKinds,
    statuses,
    bodyBytes,
    latencyMs: { p50: at(50), p90: at(90), p99: at(99), max: sorted.length ? sorted[sorted.length - 1]! : NaN, mean: latencies.reduce((a, b) => a + b, 0) / (latencies.length || 1) },
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    ...(watchedCpuMs !== undefined ? { watchedCpuMs } : {}),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run(JSON.parse(process.argv[2]!) as LoadSpec).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (err: unknown) => {
      process.stderr.write(`http-load: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
