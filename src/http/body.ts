// Reading a bounded body into memory: a manifest PUT's request body and a proxied manifest's
// upstream response share it.

/**
 * The whole of `stream`, refusing more than `max` bytes with `tooLarge()` (the stream is cancelled
 * first). With a `declared` length the bytes go straight into one buffer of that size (no second
 * copy: a 32 MiB manifest then needs 32 MiB, not 64, in an isolate of 128 MB); a body longer than
 * declared falls back to collecting chunks.
 */
export async function readStreamCapped(stream: ReadableStream<Uint8Array>, max: number, declared: number | null, tooLarge: () => Error): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let buffer = declared !== null && declared <= max ? new Uint8Array(declared) : null;
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (total + value.length > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    if (buffer && total + value.length <= buffer.length) buffer.set(value, total);
    else {
      if (buffer) chunks.push(buffer.subarray(0, total));
      buffer = null;
      chunks.push(value);
    }
    total += value.length;
  }
  if (buffer) return total === buffer.length ? buffer : buffer.slice(0, total);
  const out = new Uint8Array(total);
  let off = 0;
  for (const ch of chunks) {
    out.set(ch, off);
    off += ch.length;
  }
  return out;
}
