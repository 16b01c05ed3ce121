/**
 * `npm run bench:replication` (issue 3): one run, one machine, one running lab VM with a 1 GiB disk
 * holding about 768 MiB of files (half incompressible random, half log-like text), and the same 160
 * scattered 64 KiB writes (again half random, half text) made through QEMU's block layer with
 * HMP qemu-io `write -s FILE`. Measures:
 *   - incremental: `vmdr sync` (capture + ship + commit) against `virtnbdbackup -l inc` (capture
 *     only) and `rsync --inplace --no-whole-file` of the raw image. `vmdr serve` runs (the DR
 *     receiver), so `vmdr sync` hands the sync to it, as on a host that runs the daemon; the same
 *     writes are then made again and synced with `--no-daemon` (the CLI's own process);
 *   - initial: `vmdr sync` of an unprotected VM (full), then again with `--full --compression
 *     off`, against nbdcopy of the same export.
 * virtnbdbackup refuses to run while a checkpoint it did not make exists ("Foreign checkpoint
 * found"), so the run shows that, then runs vmdr's incremental, deletes vmdr's checkpoints, takes
 * virtnbdbackup's full backup, repeats the very same writes, and runs virtnbdbackup's incremental.
 * Prints a markdown report on stdout (progress on stderr); everything it made is removed at the end.
 */
import { chmod, chown, mkdir, readdir, rm, stat, writeFile } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { Cleanup, GiB, runBench, MiB, URI, WRITES, WRITE_SIZE, applyWrites, bootVm, makeDataDisk, makeWrites, qemuIo, type Write, describeMachine, exec, mib, openLab, prepareMachine, say, seconds, startVmdr, table, timed, virsh, vmdrJson, warm } from './lab.js';

const fsp = { chmod: promisify(chmod), chown: promisify(chown), mkdir: promisify(mkdir), readdir: promisify(readdir), rm: promisify(rm), stat: promisify(stat), writeFile: promisify(writeFile) };

const DISK_SIZE = GiB;
const DATA_FILES = 48; // 48 × 16 MiB = 768 MiB: 24 random, 24 text
const BYTES_CHANGED = WRITES * WRITE_SIZE;

/** Proves the data really landed: reads one written range back through qemu-io and compares. */
async function checkWrite(disk: string, w: Write): Promise<void> {
  const got = await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -v ${w.offset} 64`, disk]);
  const want = (await import('node:fs/promises')).readFile(w.file).then((b) => b.subarray(0, 16).toString('hex').replace(/(..)/g, '$1 ').trim());
  if (!got.stdout.replace(/\s+/g, ' ').includes(await want)) throw new Error(`write at ${w.offset} is not on the disk (qemu-io -s not honoured?)`);
}

async function deleteCheckpoints(vm: string, prefix: string): Promise<string[]> {
  const names = (await virsh('checkpoint-list', vm, '--name', '--topological')).split('\n').map((l) => l.trim()).filter((n) => n.startsWith(prefix));
  for (const n of names.reverse()) await virsh('checkpoint-delete', vm, n);
  return names;
}

interface Row {
  tool: string;
  ms: number;
  bytes: number;
  note: string;
}

async function main(cleanup: Cleanup): Promise<void> {
  await prepareMachine({ virtnbdbackup: 'virtnbdbackup', rsync: 'rsync', nbdcopy: 'libnbd-bin', 'qemu-nbd': 'qemu-utils', 'qemu-io': 'qemu-utils', mke2fs: 'e2fsprogs' });
  const machine = await describeMachine();
  const lab = await openLab(cleanup, 'repl');
  const vm = `test-bench-${lab.tag}`;
  const disk = join(lab.dir, 'vda.qcow2');
  say(`building the 1 GiB disk with 768 MiB of files in ${lab.dir}`);
  await makeDataDisk(lab.dir, disk, vm, DISK_SIZE, Array.from({ length: DATA_FILES }, (_, i) => (i % 2 === 0 ? 'random' : 'text')));
  const writes = await makeWrites(lab.dir, DISK_SIZE);
  // libvirt-qemu (QEMU) binds virtnbdbackup's NBD socket: a directory it may write.
  const sockDir = join(lab.dir, 'sock');
  await fsp.mkdir(sockDir);
  const { stdout: qemuUid } = await exec('id', ['-u', 'libvirt-qemu']);
  const { stdout: qemuGid } = await exec('id', ['-g', 'libvirt-qemu']);
  await fsp.chown(sockDir, Number(qemuUid), Number(qemuGid));
  const scratch = join(lab.dir, 'scratch');
  await fsp.mkdir(scratch);
  await fsp.chmod(scratch, 0o777);
  const allocated = JSON.parse((await exec('qemu-img', ['info', '--output=json', disk])).stdout) as { 'actual-size': number };

  say(`booting ${vm}`);
  await bootVm(lab, cleanup, vm, disk);
  const { config } = await startVmdr(lab, cleanup, [{ name: vm }]);

  // rsync's baseline: the raw image as it is before the writes.
  say('rsync baseline: raw image of the disk before the writes');
  await qemuIo(vm, 'flush');
  const destRaw = join(lab.dir, 'replica.raw');
  await exec('qemu-img', ['convert', '-U', '-q', '-f', 'qcow2', '-O', 'raw', disk, destRaw]);

  // ---- initial: nbdcopy of the same disk, from the same kind of export vmdr reads
  say('initial: nbdcopy from a libvirt pull-backup export');
  const initial: Row[] = [];
  const port = await freeLoopbackPort();
  const backupXml = join(lab.dir, 'nbdcopy-backup.xml');
  await fsp.writeFile(
    backupXml,
    `<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1' port='${port}'/>` +
      `<disks><disk name='vda' backup='yes' type='file'><scratch file='${join(scratch, 'nbdcopy-vda.scratch')}'/></disk></disks></domainbackup>`,
  );
  await warm(disk);
  const begin = await timed(() => virsh('backup-begin', vm, backupXml));
  const copyTarget = join(lab.dir, 'nbdcopy.qcow2');
  const toQcow2 = await timed(async () => {
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', copyTarget, String(DISK_SIZE)]);
    await exec('nbdcopy', [`nbd://127.0.0.1:${port}/vda`, '--', '[', 'qemu-nbd', '-f', 'qcow2', copyTarget, ']']);
  });
  const toNull = await timed(() => exec('nbdcopy', [`nbd://127.0.0.1:${port}/vda`, 'null:']));
  const abort = await timed(() => virsh('domjobabort', vm));
  const copied = JSON.parse((await exec('qemu-img', ['info', '--output=json', copyTarget])).stdout) as { 'actual-size': number };
  await fsp.rm(copyTarget);
  initial.push({
    tool: 'nbdcopy → qcow2 (qemu-nbd), with backup-begin + domjobabort',
    ms: begin.ms + toQcow2.ms + abort.ms,
    bytes: copied['actual-size'],
    note: `backup-begin ${seconds(begin.ms)}, copy ${seconds(toQcow2.ms)}, domjobabort ${seconds(abort.ms)}`,
  });
  initial.push({ tool: 'nbdcopy → qcow2 (qemu-nbd), copy only', ms: toQcow2.ms, bytes: copied['actual-size'], note: 'qemu-img create + nbdcopy' });
  initial.push({ tool: 'nbdcopy → null: (read only)', ms: toNull.ms, bytes: 0, note: 'reads the export, writes nothing' });

  say('initial: vmdr sync (first sync: full)');
  await warm(disk);
  const first = await vmdrJson(['sync', vm, '--config', config]);
  const firstResult = first.lines.find((l) => l.event === 'result') as { kind: string; bytesShipped: number; bytesCovered: number; durationMs: number; point: { dataBytes: number } };
  if (firstResult.kind !== 'full') throw new Error(`first vmdr sync was ${firstResult.kind}, not full`);
  const vmdrInitial: Row = {
    tool: 'vmdr sync, first (full: capture + ship + commit)',
    ms: first.ms,
    bytes: firstResult.bytesShipped,
    note: `in-process ${seconds(firstResult.durationMs)}; covered ${mib(firstResult.bytesCovered)}, data ${mib(firstResult.point.dataBytes)}, wire ${mib(firstResult.bytesShipped)}`,
  };

  // The same full sync with data raw (issue 11): what compression costs on two shared cores.
  say('initial: vmdr sync --full --compression off');
  await warm(disk);
  const raw = await vmdrJson(['sync', vm, '--full', '--compression', 'off', '--config', config]);
  const rawResult = raw.lines.find((l) => l.event === 'result') as typeof firstResult;
  if (rawResult.kind !== 'full') throw new Error(`vmdr sync --full was ${rawResult.kind}, not full`);
  const vmdrInitialRaw: Row = {
    tool: 'vmdr sync --full --compression off (capture + ship + commit)',
    ms: raw.ms,
    bytes: rawResult.bytesShipped,
    note: `in-process ${seconds(rawResult.durationMs)}; covered ${mib(rawResult.bytesCovered)}, data ${mib(rawResult.point.dataBytes)}, wire ${mib(rawResult.bytesShipped)}`,
  };

  // ---- does virtnbdbackup tolerate vmdr's checkpoint?
  say('virtnbdbackup with a vmdr checkpoint on the VM');
  const probe = await exec('virtnbdbackup', ['-d', vm, '-U', URI, '-l', 'full', '-o', join(lab.dir, 'vnb-probe'), '-f', join(sockDir, 'probe.sock'), '-S', scratch, '-n'], {
    maxBuffer: 16 * MiB,
  }).then(
    () => 'accepted it',
    (err: { stderr?: string }) => `refused: ${(err.stderr ?? '').split('\n').find((l) => /foreign/i.test(l))?.replace(/^.*(Foreign checkpoint found)/, '$1') ?? (err.stderr ?? '').trim().split('\n').pop()}`,
  );
  await fsp.rm(join(lab.dir, 'vnb-probe'), { recursive: true, force: true });
  await exec('virsh', ['-c', URI, 'domjobabort', vm]).catch(() => undefined);
  say(`virtnbdbackup ${probe}`);

  // ---- incremental, vmdr: the writes, then one sync
  say(`incremental: ${WRITES} writes of 64 KiB through HMP qemu-io, then vmdr sync`);
  await applyWrites(vm, writes);
  await checkWrite(disk, writes[0]!);
  await checkWrite(disk, writes[WRITES - 1]!);
  await warm(disk);
  const inc = await vmdrJson(['sync', vm, '--config', config]);
  const incResult = inc.lines.find((l) => l.event === 'result') as { kind: string; bytesShipped: number; bytesCovered: number; durationMs: number; point: { dataBytes: number; zeroBytes: number } };
  if (incResult.kind !== 'incremental') throw new Error(`second vmdr sync was ${incResult.kind}, not incremental`);
  // The same writes again, synced by the CLI's own process: what a host without `vmdr serve` pays.
  say('incremental: the same writes again, then vmdr sync --no-daemon');
  await applyWrites(vm, writes);
  await warm(disk);
  const incHere = await vmdrJson(['sync', vm, '--no-daemon', '--config', config]);
  const incHereResult = incHere.lines.find((l) => l.event === 'result') as typeof incResult;
  if (incHereResult.kind !== 'incremental') throw new Error(`vmdr sync --no-daemon was ${incHereResult.kind}, not incremental`);

  // ---- rsync of the raw image: the disk after the writes, as raw, against the baseline
  say('incremental: rsync --inplace --no-whole-file of the raw image');
  const srcRaw = join(lab.dir, 'source.raw');
  await exec('qemu-img', ['convert', '-U', '-q', '-f', 'qcow2', '-O', 'raw', disk, srcRaw]);
  await warm(srcRaw);
  await warm(destRaw);
  const rsync = await timed(() => exec('rsync', ['--inplace', '--no-whole-file', '--stats', srcRaw, destRaw], { maxBuffer: 16 * MiB }));
  const literal = Number(/Literal data: ([\d,]+)/.exec(rsync.value.stdout)?.[1]?.replace(/,/g, '') ?? NaN);
  const matched = Number(/Matched data: ([\d,]+)/.exec(rsync.value.stdout)?.[1]?.replace(/,/g, '') ?? NaN);
  await fsp.rm(srcRaw);
  await fsp.rm(destRaw);

  // ---- incremental, virtnbdbackup: its own chain, the same writes, its incremental
  say('virtnbdbackup: vmdr checkpoints deleted, full backup, the same writes again, incremental');
  const removed = await deleteCheckpoints(vm, `vmdr-${vm}-`);
  const vnbDir = join(lab.dir, 'vnb');
  const vnbArgs = (level: string) => ['-d', vm, '-U', URI, '-l', level, '-o', vnbDir, '-f', join(sockDir, `${level}.sock`), '-S', scratch, '-n'];
  await warm(disk);
  const vnbFull = await timed(() => exec('virtnbdbackup', vnbArgs('full'), { maxBuffer: 64 * MiB }));
  await applyWrites(vm, writes);
  await warm(disk);
  const vnbInc = await timed(() => exec('virtnbdbackup', vnbArgs('inc'), { maxBuffer: 64 * MiB }));
  const vnbFiles = await fsp.readdir(vnbDir);
  const sizeOf = async (re: RegExp) => {
    let sum = 0;
    for (const f of vnbFiles.filter((x) => re.test(x))) sum += (await fsp.stat(join(vnbDir, f))).size;
    return sum;
  };
  const vnbFullBytes = await sizeOf(/^vda\.full.*\.data$/);
  const vnbIncBytes = await sizeOf(/^vda\.inc\..*\.data$/);
  await deleteCheckpoints(vm, 'virtnbdbackup');

  // ---- report
  const vnbIncRow: Row = { tool: 'virtnbdbackup -l inc (capture only, to local file)', ms: vnbInc.ms, bytes: vnbIncBytes, note: 'sparse-stream data file, uncompressed' };
  const incRow = (tool: string, run: typeof inc, r: typeof incResult): Row => ({
    tool,
    ms: run.ms,
    bytes: r.bytesShipped,
    note: `sync itself ${seconds(r.durationMs)}; covered ${mib(r.bytesCovered)}, data ${mib(r.point.dataBytes)} before zstd, wire ${mib(r.bytesShipped)}`,
  });
  const vmdrIncRow = incRow('vmdr sync (incremental: capture + ship + commit), handed to the running vmdr serve', inc, incResult);
  const vmdrIncHereRow = incRow('vmdr sync --no-daemon (the same, in the CLI process)', incHere, incHereResult);
  const rsyncRow: Row = { tool: 'rsync --inplace --no-whole-file (raw image)', ms: rsync.ms, bytes: literal, note: `literal ${mib(literal)}, matched ${mib(matched)}; reads both 1 GiB files` };
  const timeRatio = vmdrIncRow.ms / vnbIncRow.ms;
  const byteRatio = vmdrIncRow.bytes / BYTES_CHANGED;
  const initialPeer = initial[0]!;
  const throughputRatio = initialPeer.ms / vmdrInitial.ms;
  const rawThroughputRatio = initialPeer.ms / vmdrInitialRaw.ms;
  const yes = (b: boolean) => (b ? 'yes' : 'no');

  const out: string[] = [];
  out.push(`## Replication benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(
    `Disk: 1 GiB qcow2, ext4 with ${DATA_FILES} files of 16 MiB (768 MiB: half random, half log-like text), ${mib(allocated['actual-size'])} allocated. ` +
      `Writes: ${WRITES} × 64 KiB at seeded scattered 64 KiB-aligned offsets, each 32 KiB random + 32 KiB text, through HMP \`qemu-io write -s FILE\`. ` +
      `Bytes changed: ${mib(BYTES_CHANGED)}.`,
    '',
  );
  out.push(`virtnbdbackup with vmdr's checkpoint present: ${probe}. So virtnbdbackup ran after vmdr: vmdr's checkpoints (${removed.join(', ')}) deleted, virtnbdbackup full, the same ${WRITES} writes again (same offsets, same bytes), virtnbdbackup inc.`, '');
  out.push('### Incremental', '');
  out.push(
    table(
      ['tool', 'time', 'bytes read/shipped', 'ratio', 'target', 'met'],
      [
        [vmdrIncRow.tool, seconds(vmdrIncRow.ms), mib(vmdrIncRow.bytes), `time ${timeRatio.toFixed(2)} × virtnbdbackup`, '≤ 0.5 ×', yes(timeRatio <= 0.5)],
        ['', '', '', `shipped ${byteRatio.toFixed(3)} × bytes changed`, '≤ 1.05 ×', yes(byteRatio <= 1.05)],
        [vmdrIncHereRow.tool, seconds(vmdrIncHereRow.ms), mib(vmdrIncHereRow.bytes), `time ${(vmdrIncHereRow.ms / vnbIncRow.ms).toFixed(2)} × virtnbdbackup`, '', ''],
        [vnbIncRow.tool, seconds(vnbIncRow.ms), mib(vnbIncRow.bytes), '1.00 (peer)', '', ''],
        [rsyncRow.tool, seconds(rsyncRow.ms), mib(rsyncRow.bytes), `vmdr time ${(vmdrIncRow.ms / rsyncRow.ms).toFixed(2)} × rsync`, '', ''],
      ],
    ),
    '',
  );
  for (const r of [vmdrIncRow, vmdrIncHereRow, vnbIncRow, rsyncRow]) out.push(`- ${r.tool}: ${r.note}`);
  out.push('');
  out.push('### Initial', '');
  const tput = (ms: number) => `${(DISK_SIZE / MiB / (ms / 1000)).toFixed(0)} MiB/s`;
  out.push(
    table(
      ['tool', 'time', 'throughput (1 GiB disk / time)', 'bytes shipped/written', 'ratio', 'target', 'met'],
      [
        [vmdrInitial.tool, seconds(vmdrInitial.ms), tput(vmdrInitial.ms), mib(vmdrInitial.bytes), `${throughputRatio.toFixed(2)} × nbdcopy's throughput`, '≥ 0.8 ×', yes(throughputRatio >= 0.8)],
        [vmdrInitialRaw.tool, seconds(vmdrInitialRaw.ms), tput(vmdrInitialRaw.ms), mib(vmdrInitialRaw.bytes), `${rawThroughputRatio.toFixed(2)} × nbdcopy's throughput`, '≥ 0.8 ×', yes(rawThroughputRatio >= 0.8)],
        ...initial.map((r) => [r.tool, seconds(r.ms), tput(r.ms), r.bytes ? mib(r.bytes) : '-', `vmdr ${(r.ms / vmdrInitial.ms).toFixed(2)} ×`, '', '']),
        ['virtnbdbackup -l full (for reference)', seconds(vnbFull.ms), tput(vnbFull.ms), mib(vnbFullBytes), `vmdr ${(vnbFull.ms / vmdrInitial.ms).toFixed(2)} ×`, '', ''],
      ],
    ),
    '',
  );
  for (const r of [vmdrInitial, vmdrInitialRaw, ...initial]) out.push(`- ${r.tool}: ${r.note}`);
  out.push('');
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify({ vmdrIncRow, vnbIncRow, rsyncRow, vmdrInitial, vmdrInitialRaw, initial, vnbFull: { ms: vnbFull.ms, bytes: vnbFullBytes }, first: firstResult, inc: incResult })} -->\n`);
}

runBench('bench:replication', main);
