/**
 * `vmdr status` asks every site's hypervisor and receiver: a few milliseconds to seconds. The API
 * answers status reads from the newest such look, taken at most `maxAgeMs` ago, and many readers
 * arriving together share one look: a portal polling for each of a provider's customers must not
 * turn into one libvirt round per request.
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

  /** Every protection's status, at most maxAgeMs old, and when it was taken. */
  async read(): Promise<{ rows: ProtectionStatus[]; takenAt: Date }> {
    if (this.rows && Date.now() - this.takenAt <= this.maxAgeMs) return { rows: this.rows, takenAt: new Date(this.takenAt) };
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
    const rows = await this.looking;
    return { rows, takenAt: new Date(this.takenAt) };
  }
}
