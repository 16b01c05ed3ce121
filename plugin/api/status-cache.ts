/**
 * `vmdr status` asks every site's hypervisor and receiver: a few milliseconds to seconds (200
 * protections on this lab's machine: 60-300 ms). The API answers status reads from the newest such
 * look, and many readers share it: a portal polling for each of a provider's customers must not
 * turn into one libvirt round per request.
 *
 * A look older than `maxAgeMs` starts the next one; until it ends, readers keep getting the
 * previous look (its `takenAt` says how old) as long as that is at most `2 × maxAgeMs` old, so
 * readers do not all stall behind a look every `maxAgeMs`. Only the first reader, one after a
 * quiet spell or failed looks, or one after the config changed (forget), waits for a look.
 */
import { protectionStatus, type ProtectionStatus } from '../protections/status.js';

type StatusDeps = Parameters<typeof protectionStatus>[0];

export class StatusCache {
  private rows: ProtectionStatus[] | undefined;
  private takenAt = 0;
  private looking: Promise<ProtectionStatus[]> | undefined;

  constructor(
    /** The daemon's config as it is now (the API may have changed it since the last look). */
    private readonly deps: () => StatusDeps,
    private readonly maxAgeMs = 2_000,
  ) {}

  /** The next read takes a new look (the config changed). */
  forget(): void {
    this.rows = undefined;
  }

  /** Every protection's status, at most maxAgeMs old (2 × maxAgeMs while the next look is being taken), and when it was taken. */
  async read(): Promise<{ rows: ProtectionStatus[]; takenAt: Date }> {
    const age = Date.now() - this.takenAt;
    if (this.rows && age <= this.maxAgeMs) return { rows: this.rows, takenAt: new Date(this.takenAt) };
    const next = this.look();
    if (this.rows && age <= 2 * this.maxAgeMs) {
      // The look's failure reaches the reader who has to wait for one, not this one.
      next.catch(() => undefined);
      return { rows: this.rows, takenAt: new Date(this.takenAt) };
    }
    const rows = await next;
    return { rows, takenAt: new Date(this.takenAt) };
  }

  /** The look under way, or a new one. */
  private look(): Promise<ProtectionStatus[]> {
    this.looking ??= protectionStatus(this.deps()).then(
      (rows) => {
        this.rows = rows;
        this.takenAt = Date.now();
        this.looking = undefined;
        return rows;
      },
      (err: unknown) => {
        this.looking = undefined;
        throw err;
      },
    );
    return this.looking;
  }
}
