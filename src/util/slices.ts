// Long work split into slices so other requests on the same thread run in between (issue 10,
// docs/adr/0022-sliced-heavy-manifest-puts.md). A Worker isolate serves many requests on one thread,
// and local workerd runs every Durable Object on that thread too: one 100 ms synchronous block is a
// 100 ms stall for everything else. Slices are counted (bytes, items), never timed: deployed
// Workers do not advance the clock during synchronous code.

/** Give the thread back to the event loop once (a timer, so pending I/O and requests run first). */
export function yieldThread(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A computation written as a generator that yields at slice boundaries. */
export type Sliced<T> = Generator<void, T, void>;

/** Run it to the end without pausing (callers that must stay synchronous). */
export function runWhole<T>(work: Sliced<T>): T {
  for (;;) {
    const r = work.next();
    if (r.done) return r.value;
  }
}

/** Run it, giving the thread back at every slice boundary (`clock`: time the slices, for the bench). */
export async function runSliced<T>(work: Sliced<T>, clock?: SliceClock): Promise<T> {
  for (;;) {
    const r = clock ? clock.run(() => work.next()) : work.next();
    if (r.done) return r.value;
    await yieldThread();
  }
}

/** Counts the synchronous slices of a sliced operation: how many, the longest, the sum (ms). */
export class SliceClock {
  n = 0;
  maxMs = 0;
  totalMs = 0;

  run<T>(slice: () => T): T {
    const t0 = performance.now();
    try {
      return slice();
    } finally {
      const ms = performance.now() - t0;
      this.n++;
      this.totalMs += ms;
      if (ms > this.maxMs) this.maxMs = ms;
    }
  }

  stats(): { n: number; maxMs: number; totalMs: number } {
    return { n: this.n, maxMs: Math.round(this.maxMs * 10) / 10, totalMs: Math.round(this.totalMs * 10) / 10 };
  }
}
