import { readFileSync } from 'node:fs';
import { openAdapter } from './hypervisors/index.ts';
const log = (...a: unknown[]) => console.error(new Date().toISOString().slice(17, 23), ...a);
const vm = 'test-vmdr-freeze-' + process.pid;
const phase = process.argv[2] ?? 'AB';
const pid = Number(readFileSync('/run/libvirtd.pid', 'utf8'));
const a = openAdapter('qemu:///system', { callTimeoutMs: 2000 });
await a.connect();
log('connected');
await a.defineVm({ name: vm, memoryMiB: 128, vcpus: 1, boot: { kind: 'kernel', kernel: '/var/lib/vmdr/lab/vmlinuz', initrd: '/var/lib/vmdr/lab/initrd.img', cmdline: 'console=ttyS0 quiet rdinit=/no-init root=/dev/no-root panic=0' }, disks: [], nics: [] } as any);
await a.start(vm);
log('started', vm);
try {
  if (phase.includes('A')) {
    process.kill(pid, 'SIGSTOP'); log('stopped');
    await a.getVm(vm).catch((e) => log('getVm', e.code, e.message));
    process.kill(pid, 'SIGCONT'); log('cont');
    log('state', await a.powerState(vm));
  }
  if (phase.includes('B')) {
    process.kill(pid, 'SIGSTOP'); log('stopped B');
    await a.start(vm).catch((e) => log('start', e.code, e.message));
    await new Promise((r) => setTimeout(r, 23000));
    log('late call');
    await a.powerState(vm).then((s) => log('late ok', s), (e) => log('late', e.code, e.message));
    process.kill(pid, 'SIGCONT'); log('cont B');
    await a.powerState(vm).then((s) => log('back', s), (e) => log('back failed', e.code, e.message));
  }
} finally {
  process.kill(pid, 'SIGCONT');
  await a.stop(vm, { mode: 'force' }).catch((e) => log('stop', e.message));
  await a.undefine(vm).catch((e) => log('undefine', e.message));
  log('closing');
  await a.close();
  log('closed');
}
