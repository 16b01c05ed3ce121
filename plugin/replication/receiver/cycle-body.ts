/**
 * A cycle's request body as the receiver reads it: counts the bytes on the wire and bounds how
 * long the receiver waits for the sender. Only time spent waiting for the sender counts (not the
 * receiver's own writes, nor its wait for the protection's turn), against two bounds: silence
 * (a link cut without a FIN) and the cycle's budget (a sender that trickles). Past either, the
 * read fails with a ReceiverRefused the route answers with 408; the body is left as it is, so the
 * answer can still be written before the connection closes.
 */
import { ReceiverRefused } from './errors.js';

export const STREAM_STALLED = 'STREAM_STALLED';
export const CYCLE_TOO_SLOW = 'CYCLE_TOO_SLOW';

export class CycleBody implements AsyncIterable<Buffer> {
  /** Bytes received so far. */
  wire = 0;
  /** Milliseconds spent waiting for the sender so far. */
  waited = 0;
  private readonly iterator: AsyncIterator<Buffer>;

  constructor(
    source: AsyncIterable<Buffer>,
    private readonly protection: string,
    private readonly idleMs: number,
    private budgetMs: number,
  ) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /** Sets the cycle's whole budget, once its header says how much it may carry. */
  setBudget(ms: number): void {
    this.budgetMs = ms;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (;;) {
      const next = await this.next();
      if (next.done) return;
      this.wire += next.value.length;
      yield next.value;
    }
  }

  private async next(): Promise<IteratorResult<Buffer>> {
    const left = this.budgetMs - this.waited;
    const slow = left <= this.idleMs;
    const wait = Math.max(0, Math.min(left, this.idleMs));
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        reject(
          slow
            ? new ReceiverRefused(CYCLE_TOO_SLOW, `the sender took longer than this cycle's ${Math.round(this.budgetMs / 1000)} s (its size at the receiver's minimum rate); nothing was committed`, 408, { protection: this.protection })
            : new ReceiverRefused(STREAM_STALLED, `no data from the sender for ${this.idleMs / 1000} s; nothing was committed`, 408, { protection: this.protection }),
        );
      }, wait);
    });
    try {
      return await Promise.race([this.iterator.next(), expired]);
    } finally {
      clearTimeout(timer);
      this.waited += Date.now() - started;
    }
  }
}
