/**
 * The records of VMs held (paused, frozen) by vmdr processes, on real files: what another vmdr
 * process reads to know whether a hold is left. A hold is left when its holder is gone (ended, or
 * its pid now another process's: pid reuse) or its deadline passed; a live holder's is not. Files
 * are 0600 in a 0700 directory; another URI's records are not this host's. Whoever releases a VM
 * claims its record first: a holder that overran its deadline and finds another process's claim
 * (or its record gone) knows its hold was broken, and by whom; so does one that finds another
 * process's release failed (the mark it left: a failed resume or thaw may have taken effect).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HoldRecords, isTaken, type HoldClaim, type HoldTaken } from '../../../hypervisors/libvirt/hold-records.js';

const URI = 'qemu:///system';

describe('hold records (the files a dead holder leaves)', () => {
  let base: string;
  let dir: string;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'test-holds-'));
    dir = join(base, 'holds');
  });
  afterEach(() => rm(base, { recursive: true, force: true }));

  const only = async (records: HoldRecords) => {
    const list = await records.list();
    assert.equal(list.length, 1, JSON.stringify(list));
    return list[0]!;
  };
  /** Rewrites the one record's stored fields. */
  const edit = async (change: Record<string, unknown>) => {
    const [name] = (await readdir(dir)).filter((n) => !n.endsWith('.new'));
    const file = join(dir, name!);
    await writeFile(file, JSON.stringify({ ...(JSON.parse(await readFile(file, 'utf8')) as object), ...change }));
  };

  it('a live holder within its deadline: recorded (0600 in 0700), not left; removed after the release', async () => {
    const records = new HoldRecords(URI, dir);
    const before = Date.now();
    const recorded = await records.record('test-vm', 'pause', 60_000);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    const [name] = await readdir(dir);
    assert.equal((await stat(join(dir, name!))).mode & 0o777, 0o600);
    const hold = await only(records);
    assert.equal(hold.vm, 'test-vm');
    assert.equal(hold.kind, 'pause');
    assert.equal(hold.holder.pid, process.pid);
    assert.equal(hold.left, undefined);
    assert.ok(hold.since.getTime() >= before && hold.deadline.getTime() === hold.since.getTime() + 60_000);
    // Where the process started, to the second the kernel's ticks allow.
    assert.ok(Math.abs(new Date(hold.holder.startedAt).getTime() - (Date.now() - process.uptime() * 1000)) < 5_000, hold.holder.startedAt);
    const claim = await recorded.claim();
    assert.ok(!isTaken(claim), 'its own record is its own to release');
    // While the holder releases, nobody else may.
    assert.equal(await records.claim(hold), undefined);
    await claim.end(true);
    assert.deepEqual(await records.list(), []);
    assert.deepEqual(await readdir(dir), []);
  });

  it('a record whose pid lives but started at another time (pid reuse) is left: holder-gone', async () => {
    const records = new HoldRecords(URI, dir);
    await records.record('test-vm', 'freeze', 60_000);
    await edit({ pidStart: '1' });
    assert.equal((await only(records)).left, 'holder-gone');
  });

  it('a record whose process ended is left: holder-gone', async () => {
    const child = spawn(process.execPath, ['-e', '0']);
    await new Promise((resolve) => child.once('exit', resolve));
    const records = new HoldRecords(URI, dir);
    await records.record('test-vm', 'pause', 60_000);
    await edit({ pid: child.pid });
    assert.equal((await only(records)).left, 'holder-gone');
  });

  it('a live holder past its deadline is left: deadline-passed', async () => {
    const records = new HoldRecords(URI, dir);
    await records.record('test-vm', 'pause', 1);
    await sleep(5);
    assert.equal((await only(records)).left, 'deadline-passed');
  });

  describe('a live holder past its deadline, and another process releasing it', () => {
    const taken = (c: HoldClaim | HoldTaken) => {
      assert.ok(isTaken(c), 'the holder was not told its hold was broken');
      return c;
    };

    it('released by the other process before the holder: the holder is told whose release it was, once, and nothing is left', async () => {
      const records = new HoldRecords(URI, dir);
      const recorded = await records.record('test-vm', 'freeze', 1);
      await sleep(5);
      const left = await only(records);
      assert.equal(left.left, 'deadline-passed');
      const other = await records.claim(left);
      assert.ok(other);
      // Mid-release: the holder's release is refused.
      assert.equal(taken(await recorded.claim()).by, process.pid);
      await other.end(true, true);
      assert.deepEqual(await records.list(), []);
      assert.equal(taken(await recorded.claim()).by, process.pid);
      assert.deepEqual(await readdir(dir), [], 'the note went with the record');
      // Asked again (it should not be): still broken, by nobody it can name.
      assert.deepEqual(taken(await recorded.claim()), {});
    });

    it('the holder claims first: the other process leaves it alone; a release that fails keeps the record for the next try', async () => {
      const records = new HoldRecords(URI, dir);
      const recorded = await records.record('test-vm', 'pause', 1);
      await sleep(5);
      const left = await only(records);
      const own = await recorded.claim();
      assert.ok(!isTaken(own));
      assert.equal(await records.claim(left), undefined);
      await own.end(false);
      const again = await records.claim(await only(records));
      assert.ok(again, 'the record is there to release once the holder gave up');
      await again.end(true, true);
      assert.equal(taken(await recorded.claim()).by, process.pid);
    });

    /** A paused VM's hold whose release a process began and was killed in (its claim, and `tried` its mark, left). */
    const leftByKilledRelease = async (tried: boolean) => {
      const child = spawn(process.execPath, ['-e', '0']);
      await new Promise((resolve) => child.once('exit', resolve));
      const records = new HoldRecords(URI, dir);
      const recorded = await records.record('test-vm', 'pause', 1);
      await sleep(5);
      const left = await only(records);
      await writeFile(`${left.file}.claim`, JSON.stringify({ pid: child.pid, pidStart: '1' }));
      if (tried) await writeFile(`${left.file}.tried`, JSON.stringify({ pid: child.pid, pidStart: '1', at: Date.now() }));
      return { child, records, recorded, left };
    };

    it('a claim whose process is gone (killed mid-release) is taken over by another release, never by the holder', async () => {
      const { child, records, recorded, left } = await leftByKilledRelease(false);
      assert.equal(taken(await recorded.claim()).by, child.pid);
      const other = await records.claim(left);
      assert.ok(other, 'the dead claim was not taken over');
      await other.end(true);
      assert.deepEqual(await readdir(dir), []);
    });

    it('a release by another process that failed (it may have taken effect): the holder is told whose, the record stays, and a later release takes it', async () => {
      const records = new HoldRecords(URI, dir);
      const recorded = await records.record('test-vm', 'freeze', 1);
      await sleep(5);
      const sweep = await records.claim(await only(records));
      assert.ok(sweep);
      await sweep.end(false, true);
      // Kept for the next sweep, and for `vmdr status`.
      assert.equal((await only(records)).left, 'deadline-passed');
      // The holder, claiming between two sweeps, is told its hold was broken, and by whom; as often as it asks.
      assert.deepEqual(taken(await recorded.claim()), { by: process.pid, failed: true });
      assert.deepEqual(taken(await recorded.claim()), { by: process.pid, failed: true });
      // The mark is no hold; the holder left no claim behind it.
      assert.equal((await readdir(dir)).filter((n) => n.endsWith('.claim')).length, 0);
      const later = await records.claim(await only(records));
      assert.ok(later, 'the next sweep may not release it');
      // Its failure too leaves the hold the holder's no more.
      await later.end(false, true);
      const last = await records.claim(await only(records));
      assert.ok(last);
      await last.end(true, true);
      assert.deepEqual(await records.list(), []);
      assert.equal(taken(await recorded.claim()).by, process.pid);
      assert.deepEqual(await readdir(dir), [], 'the mark went with the record, the note once read');
    });

    it('a release by another process killed mid-release (its mark written, its claim left): the holder is told, another release takes over', async () => {
      const { child, records, recorded, left } = await leftByKilledRelease(true);
      assert.equal(taken(await recorded.claim()).by, child.pid);
      const other = await records.claim(left);
      assert.ok(other, 'the dead claim was not taken over');
      await other.end(false);
      assert.deepEqual(taken(await recorded.claim()), { by: process.pid, failed: true });
    });

    it('a mark and a claim left without their record (their releaser killed after removing it) go after a minute', async () => {
      const records = new HoldRecords(URI, dir);
      await records.record('test-vm', 'pause', 1);
      await sleep(5);
      const left = await only(records);
      assert.ok(await records.claim(left));
      await rm(left.file);
      assert.deepEqual(await records.list(), []);
      const kept = (await readdir(dir)).sort();
      assert.deepEqual(kept.map((n) => n.slice(n.lastIndexOf('.'))), ['.claim', '.tried'], 'fresh, they stay');
      const old = new Date(Date.now() - 61_000);
      for (const n of kept) await utimes(join(dir, n), old, old);
      assert.deepEqual(await records.list(), []);
      assert.deepEqual(await readdir(dir), []);
    });

    it('a note no holder came to read goes after a minute', async () => {
      const records = new HoldRecords(URI, dir);
      await records.record('test-vm', 'freeze', 1);
      await sleep(5);
      const other = await records.claim(await only(records));
      await other!.end(true, true);
      const [note] = await readdir(dir);
      assert.match(note!, /\.claim$/);
      assert.deepEqual(await records.list(), []);
      assert.deepEqual(await readdir(dir), [note], 'a fresh note stays for its holder');
      const old = new Date(Date.now() - 61_000);
      await utimes(join(dir, note!), old, old);
      assert.deepEqual(await records.list(), []);
      assert.deepEqual(await readdir(dir), []);
    });
  });

  it("another hypervisor URI's records are not listed, and no directory is no hold", async () => {
    assert.deepEqual(await new HoldRecords(URI, dir).list(), []);
    await new HoldRecords('qemu+ssh://other/system', dir).record('test-vm', 'pause', 60_000);
    assert.deepEqual(await new HoldRecords(URI, dir).list(), []);
    assert.equal((await new HoldRecords('qemu+ssh://other/system', dir).list()).length, 1);
  });

  it('a directory that cannot be made: the hold is refused with HOLD_UNRECORDED', async () => {
    await writeFile(join(base, 'file'), '');
    await assert.rejects(new HoldRecords(URI, join(base, 'file', 'holds')).record('test-vm', 'pause', 1_000), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'HOLD_UNRECORDED');
      assert.match(err.message, /^VM "test-vm" was not held: its hold could not be recorded in /);
      return true;
    });
  });
});
