/**
 * Ordered read-ahead: starts up to `window` fetches at once and yields results in input order.
 * This is how NBD reads stay pipelined (several requests in flight on one connection) while
 * whatever consumes them, a delta stream on an HTTPS body, still pulls at its own pace: nothing
 * is fetched more than `window` items ahead of the consumer. With a `budget`, items also stop
 * starting once their `weight`s in flight reach it (always one at least): many small reads may
 * then be in flight where a few large ones would fill the same memory.
 */
export async function* readAhead<T, R>(
  items: Iterable<T>,
  fetch: (item: T) => Promise<R>,
  window: number,
  limit?: { budget: number; weight: (item: T) => number },
): AsyncGenerator<[T, R]> {
  const queue: [T, Promise<R>, number][] = [];
  const iterator = items[Symbol.iterator]();
  let held: IteratorResult<T> | undefined;
  let inFlight = 0;
  const fill = () => {
    while (queue.length < window) {
      const next = held ?? iterator.next();
      held = undefined;
      if (next.done) return;
      const weight = limit?.weight(next.value) ?? 0;
      if (limit && queue.length > 0 && inFlight + weight > limit.budget) {
        held = next;
        return;
      }
      const pending = fetch(next.value);
      // Rejections are seen when the item reaches the head of the queue; until then, don't let
      // Node report them as unhandled.
      pending.catch(() => undefined);
      queue.push([next.value, pending, weight]);
      inFlight += weight;
    }
  };
  fill();
  while (queue.length > 0) {
    const [item, pending, weight] = queue.shift()!;
    const result = await pending;
    inFlight -= weight;
    fill();
    yield [item, result];
  }
}
