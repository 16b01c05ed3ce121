/**
 * Ordered read-ahead: starts up to `window` fetches at once and yields results in input order.
 * This is how NBD reads stay pipelined (several requests in flight on one connection) while
 * whatever consumes them, a delta stream on an HTTPS body, still pulls at its own pace: nothing
 * is fetched more than `window` items ahead of the consumer.
 */
export async function* readAhead<T, R>(items: Iterable<T>, fetch: (item: T) => Promise<R>, window: number): AsyncGenerator<[T, R]> {
  const queue: [T, Promise<R>][] = [];
  const iterator = items[Symbol.iterator]();
  const fill = () => {
    while (queue.length < window) {
      const next = iterator.next();
      if (next.done) return;
      const pending = fetch(next.value);
      // Rejections are seen when the item reaches the head of the queue; until then, don't let
      // Node report them as unhandled.
      pending.catch(() => undefined);
      queue.push([next.value, pending]);
    }
  };
  fill();
  while (queue.length > 0) {
    const [item, pending] = queue.shift()!;
    const result = await pending;
    fill();
    yield [item, result];
  }
}
