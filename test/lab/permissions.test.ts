/**
 * Least privilege on disk, on the real lab: a VM protected through `vmdr serve`, drilled, failed
 * over and reverted from the CLI (QEMU, as libvirt-qemu, boots an overlay on a recovery point).
 * Then every file and directory vmdr made (state, credentials, replica, overlays, seeds, console
 * logs) is tried as other users would: `nobody` reads none of them, and once no VM runs on the
 * replica, neither does libvirt-qemu (every customer's QEMU runs as that one user). The protection
 * is a tenant's: its replica lies under tenants/<tenant>/, two directories deeper, which QEMU
 * must pass through to boot it and nobody else may.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { GUEST_READY, runVmdr, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);

interface Entry {
  path: string;
  dir: boolean;
  mode: number;
  uid: number;
}

async function walk(root: string): Promise<Entry[]> {
  const st = await lstat(root);
  const entries: Entry[] = [{ path: root, dir: st.isDirectory(), mode: st.mode & 0o7777, uid: st.uid }];
  if (st.isDirectory()) for (const name of await readdir(root)) entries.push(...(await walk(join(root, name))));
  return entries;
}

/** Whether `user` can read the file or list the directory: the real kernel check, not the mode bits. */
async function canRead(user: string, entry: Entry): Promise<boolean> {
  const as = ['--reuid', user, '--regid', user === 'nobody' ? 'nogroup' : user, '--init-groups', '--'];
  return exec('setpriv', [...as, ...(entry.dir ? ['ls', entry.path] : ['head', '-c', '1', entry.path])]).then(
    () => true,
    () => false,
  );
}

describe('least privilege on disk (qemu:///system)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let serve: ServeProcess | undefined;
  let drNetwork: string;
  const outputs: string[] = [];
  const roots = () => [join(vm.dir, 'state'), join(vm.dir, 'replicas')];
  const vmdr = async (...args: string[]) => {
    const r = await runVmdr([...args, '--config', config]);
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  const failover = async (...args: string[]) => {
    const r = await vmdr('failover', ...args, '--json');
    assert.equal(r.code, 0, `failover ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
  };
  const everything = async () => (await Promise.all(roots().map(walk))).flat();

  /** No file or directory vmdr made is open to `nobody`, by its mode or in fact. */
  const assertClosedToOthers = async (context: string) => {
    const entries = await everything();
    for (const e of entries) {
      // A replica directory may let QEMU's group search it (0710), nothing more; the state and
      // credentials directories are root's alone; a file is its owner's alone.
      const allowed = !e.dir ? 0o600 : e.path.startsWith(roots()[0]!) ? 0o700 : 0o710;
      assert.equal(e.mode & ~allowed, 0, `${context}: ${e.path} is ${e.mode.toString(8)}`);
      assert.equal(await canRead('nobody', e), false, `${context}: nobody can read ${e.path}`);
    }
    return entries;
  };

  before(async () => {
    // The credentials are left at their default place: receiver-dr beside the state file.
    ({ vm, drNetwork, config } = await createProtectedLabVm('perms', {
      hostname: 'perms-dr',
      nic: { addresses: ['192.0.2.31/24'] },
      settings: ['tenant: acme'],
      more: () => 'tenants:\n  - { name: acme }\n',
      config: (vm) => ({ statePath: join(vm.dir, 'state', 'state.db'), credentials: false }),
    }));
    serve = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name], ['sync', vm.name]], (args) => vmdr(...args));
  });

  after(async () => {
    await serve?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it('a drill, then a failover: QEMU boots an overlay on a point, and nothing vmdr made is open to nobody', async () => {
    const drill = await failover(vm.name, '--test');
    assert.equal(drill.vms[0]!.status, 'healthy');

    const report = await failover(vm.name, '--force');
    assert.equal(report.vms[0]!.status, 'healthy');
    assert.match(report.vms[0]!.guest!, /hostname=perms-dr .*marker=perms-src /, 'the guest booted the replica');

    const entries = await assertClosedToOthers('failed over');
    const names = entries.map((e) => e.path);
    assert.ok(names.includes(join(vm.dir, 'replicas', 'tenants', 'acme', vm.name, 'vda', 'base.qcow2')), "the replica is in the tenant's directory");
    for (const expected of [/state\/state\.db$/, /state\/state\.db-wal$/, /state\/receiver-dr\/tls\.crt$/, /state\/receiver-dr\/tls\.key$/, /vda\/base\.qcow2$/, /vda\/point-2\.qcow2$/, /vda\/failover-fo-[^/]+\.qcow2$/, /\/seed-[^/]+\.iso$/, /\/console\.log$/]) {
      assert.ok(names.some((n) => expected.test(n)), `the walk saw ${expected} (${names.join(', ')})`);
    }
    // What libvirt lent QEMU while the VM runs: the whole chain under the overlay, nothing else.
    const qemu = Number((await exec('id', ['-u', 'libvirt-qemu'])).stdout.trim());
    const lent = entries.filter((e) => e.uid === qemu).map((e) => e.path.replace(/.*\//, ''));
    assert.deepEqual(lent.filter((n) => n.endsWith('.qcow2')).sort(), [`failover-${report.id}.qcow2`, 'base.qcow2', 'point-1.qcow2', 'point-2.qcow2'].sort());
  });

  it('after the revert, QEMU\'s user reads no image either, and no output of vmdr shows the site\'s key', async () => {
    await failover(vm.name, '--revert');
    const entries = await assertClosedToOthers('reverted');
    for (const e of entries.filter((x) => !x.dir)) {
      assert.equal(await canRead('libvirt-qemu', e), false, `libvirt-qemu can read ${e.path} with no VM running on it`);
    }
    assert.ok(!entries.some((e) => /failover-/.test(e.path)), 'the revert removed its overlay');
    assert.equal(entries.filter((e) => /\/seed-[^/]+\.iso$/.test(e.path)).length, 1, "the target's own identity seed stays (provisioning's)");
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });
    const sync = await vmdr('sync', vm.name);
    assert.equal(sync.code, 0, sync.stderr);

    const key = (await readFile(join(vm.dir, 'state', 'receiver-dr', 'tls.key'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('-----'));
    assert.ok(key.length > 0);
    await serve!.stop();
    const logged = [JSON.stringify(serve!.events), serve!.stderr(), ...outputs].join('\n');
    assert.ok(logged.includes('receiver-dr'), 'serve said where its credentials are');
    for (const line of key) assert.ok(!logged.includes(line), "the site's key appears in an output of vmdr");
  });
});

