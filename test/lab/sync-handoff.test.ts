/**
 * `vmdr sync` handed to the host's running `vmdr serve` (the control socket), on the real lab: the
 * daemon runs the sync and the CLI prints its result; the CLI runs the sync itself with
 * --no-daemon, and when no daemon runs (it
 * stopped, or died and left its socket); a CLI killed mid-sync ends its sync in the daemon, and the
 * next one goes on incrementally; errors read the same either way; the first daemon of a config
 * that serves a source site holds the socket. An edited config is read again by the daemon, and
 * syncs go to it with the new text.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { bootLabVm, createLabVm, destroyLabVm, runVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection, serveAndRun } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'scripts', 'vmdr.js');

interface SyncJson {
  event: string;
  kind: string;
  point: { id: string };
}

describe('vmdr sync handed to vmdr serve (qemu:///system)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  let config: string;
  let serve: ServeProcess | undefined;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const sync = async (...args: string[]): Promise<SyncJson> => {
    const r = await vmdr('sync', vm.name, '--json', ...args);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as SyncJson;
  };
  /** The points the daemon said it made for syncs handed to it. */
  const handed = () => serve!.events.filter((e) => e.event === 'sync' && e.handedOver === true).map((e) => e.point);
  /** Writes the config and waits until the daemon has read it again (its `reloaded` line). */
  const edited = async (text: string) => {
    const from = serve!.events.length;
    await writeFile(config, text);
    for (const deadline = Date.now() + 10_000; !serve!.events.slice(from).some((e) => e.event === 'reloaded'); await sleep(50)) {
      assert.ok(Date.now() < deadline, `the daemon did not reload the config: ${JSON.stringify(serve!.events.slice(from))}`);
    }
  };
  const socketOf = (s: ServeProcess) => s.events.find((e) => e.event === 'ready')!.control as string;

  before(async () => {
    vm = await createLabVm('handoff', { marker: 'handoff-src', diskSize: '32M' });
    await bootLabVm(vm);
    config = await writeOneHostConfig(vm, labProtection(vm, { network: 'default' }));
    serve = await serveAndRun(config, [['protect', vm.name]]);
  });

  after(async () => {
    await serve?.stop();
    await destroyLabVm(vm);
  });

  it('the daemon runs the sync; the CLI prints its result, and the point is there', async () => {
    const r = await sync();
    assert.equal(r.kind, 'incremental');
    assert.deepEqual(handed(), [r.point.id]);
    const points = JSON.parse((await vmdr('points', vm.name, '--json')).stdout) as { id: string }[];
    assert.equal(points.at(-1)!.id, r.point.id);
  });

  it('--no-daemon syncs in the CLI; an edit of the config is read again by the daemon, and syncs go to it with the new text', async () => {
    const before = handed().length;
    assert.equal((await sync('--no-daemon')).kind, 'incremental');
    assert.equal(handed().length, before, '--no-daemon: not handed over');
    const text = await readFile(config, 'utf8');
    // Until the daemon read the edit, a CLI with the new text syncs itself (test/unit/control.test.ts); then it hands over again.
    await edited(`${text}# edited after vmdr serve started\n`);
    try {
      assert.equal((await sync()).kind, 'incremental');
      assert.equal(handed().length, before + 1, 'the edited text: handed over once the daemon read it');
    } finally {
      await edited(text);
    }
  });

  it('an error reads the same whether the daemon or the CLI ran into it', async () => {
    const there = await vmdr('sync', 'no-such-vm');
    const here = await vmdr('sync', 'no-such-vm', '--no-daemon');
    assert.equal(there.code, 1);
    assert.equal(there.stderr, here.stderr);
    assert.equal(there.stderr, `vmdr: ${config}: no protection named "no-such-vm"\n`);
  });

  it('a CLI killed mid-sync ends its sync in the daemon; the next sync is incremental', async () => {
    const before = handed().length;
    const child = spawn(process.execPath, [CLI, 'sync', vm.name, '--json', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Its first progress line: the daemon has begun the sync.
    await new Promise<void>((resolve) => createInterface({ input: child.stdout! }).once('line', () => resolve()));
    child.kill('SIGKILL');
    const next = await sync();
    assert.equal(next.kind, 'incremental');
    assert.deepEqual(handed().slice(before), [next.point.id], 'the killed CLI\'s sync made no point');
  });

  it('a second daemon of the same sites is refused in one line, and the first keeps the socket', async () => {
    const second = await vmdr('serve', '--no-receive', '--no-replicate');
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /^vmdr: another vmdr serve runs site "\w+" on state file \S+ \(it holds [^)]+\)/);
    const drOnly = await vmdr('serve', '--site', 'dr', '--no-receive', '--no-replicate');
    assert.equal(drOnly.code, 1, 'the first serves every site of the config, dr too');
    // The first daemon still has it.
    const before = handed().length;
    await sync();
    assert.equal(handed().length, before + 1);
  });

  it('with the daemon stopped, or killed with its socket left behind, the CLI syncs itself; a new daemon takes the socket', async () => {
    const socket = socketOf(serve!);
    await serve!.stop();
    await assert.rejects(access(socket), 'a stopped daemon removes its socket');
    serve = await startServe(config, { args: ['--no-replicate'] });
    await serve.kill();
    await access(socket);
    // No receiver runs now either: the CLI's own sync says so, as it did before there was a daemon.
    const alone = await vmdr('sync', vm.name);
    assert.equal(alone.code, 1);
    assert.match(alone.stderr, /^vmdr: .*(unreachable|cannot reach)/i);
    serve = await startServe(config, { args: ['--no-replicate'] });
    assert.equal(socketOf(serve), socket);
    assert.equal((await sync()).kind, 'incremental');
    assert.equal(handed().length, 1);
  });
});
