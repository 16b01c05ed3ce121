/**
 * A second process for crash tests: `begin` opens a pending point, writes into it, prints
 * "written" and waits to be killed; `retention` applies a policy (with VMDR_FAILPOINT set it dies
 * inside the merge).
 */
import { execFileSync } from 'node:child_process';
import { StateStore } from '../../../../plugin/state/store.js';
import { ReplicaStore } from '../../../../plugin/replication/replica/store.js';

const args = JSON.parse(process.argv[2] ?? '{}') as {
  action: 'begin' | 'retention';
  storage: string;
  statePath: string;
  protection: string;
  disks?: { name: string; sizeBytes: number }[];
  keep?: number;
  /** Time tiers in ms (instead of keep), applied as at `nowMs`. */
  tiers?: Record<string, number>;
  nowMs?: number;
  leaseTtlMs?: number;
};

const state = StateStore.open(args.statePath);
const replicas = new ReplicaStore(args.storage, state, args.leaseTtlMs ? { leaseTtlMs: args.leaseTtlMs } : {});

if (args.action === 'begin') {
  const pending = await replicas.beginPoint(args.protection, args.disks ?? []);
  for (const o of pending.overlays) execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 0 64k', o.image]);
  process.stdout.write(`${JSON.stringify(pending.overlays.map((o) => o.image))}\nwritten\n`);
  setInterval(() => undefined, 1000);
} else {
  const policy = args.tiers ? { tiers: args.tiers } : { keep: args.keep ?? 1 };
  const result = await replicas.applyRetention(args.protection, policy, args.nowMs === undefined ? new Date() : new Date(args.nowMs));
  process.stdout.write(`${JSON.stringify(result)}\n`);
  state.close();
}
