/**
 * What recording holds costs the pause window: two lab guests paused and resumed together
 * (pauseVms, as a consistency group's crash window does) with and without the hold records,
 * interleaved, N pairs; the medians of the window (asking the pauses to the last resume's answer)
 * and of one record's write and removal alone. Run as root on the lab (under its lock).
 */
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';
import { HoldRecords, isTaken } from '../../hypervisors/libvirt/hold-records.js';
import { pauseVms } from '../../hypervisors/libvirt/vm-pause.js';
import { bootLabVm, createLabVm, destroyLabVm, type LabVm } from '../../test/helpers/lab.js';

const PAIRS = Number(process.env.VMDR_BENCH_PAIRS ?? 30);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const vms: LabVm[] = [];
const conn = new LibvirtConnection('qemu:///system');
try {
  vms.push(...(await Promise.all([createLabVm('benchholda', { marker: 'a' }), createLabVm('benchholdb', { marker: 'b' })])));
  await Promise.all(vms.map(bootLabVm));
  await conn.open();
  const names = vms.map((v) => v.name);
  const records = new HoldRecords(conn.uri);
  const window = async (withRecords: boolean) => {
    const started = performance.now();
    const pause = await pauseVms(conn, names, { timeoutMs: 10_000 }, withRecords ? records : undefined);
    if (pause.paused.length !== names.length) throw new Error(`not paused: ${[...pause.refused.values()].join('; ')}`);
    await pause.resume();
    return performance.now() - started;
  };
  const without: number[] = [];
  const withIt: number[] = [];
  await window(true);
  for (let i = 0; i < PAIRS; i++) {
    // Alternating which goes first, so a drift of the machine weighs on both alike.
    if (i % 2) withIt.push(await window(true)), without.push(await window(false));
    else without.push(await window(false)), withIt.push(await window(true));
  }
  const one: number[] = [];
  for (let i = 0; i < 200; i++) {
    const started = performance.now();
    // As a holder does: recorded, then claimed for its release, then removed.
    const claim = await (await records.record('test-bench-hold', 'pause', 10_000)).claim();
    if (!isTaken(claim)) await claim.end(true);
    one.push(performance.now() - started);
  }
  console.log(JSON.stringify({ pairs: PAIRS, windowMedianMs: { without: +median(without).toFixed(1), with: +median(withIt).toFixed(1) }, recordClaimAndRemoveMedianMs: +median(one).toFixed(3) }));
} finally {
  await conn.close();
  for (const vm of vms) await destroyLabVm(vm);
}
