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

/** Run it, giving the thread back at every slice boundary. */
export async function runSliced<T>(work: Sliced<T>): Promise<T> {
  for (;;) {
    const r = work.next();
    if (r.done) return r.value;
    await yieldThread();
  }
}
