// The write path for blob bytes: request bodies stream into R2 while being hashed, never held
// whole in memory and never passed through a Durable Object.
//
// R2 multipart needs equal-sized parts (all but the last, >= 5 MiB), but clients send any
// sequence of chunk sizes. Bytes are therefore cut into parts of a fixed `partSize`; what is
// left over at the end of a request (shorter than a part) is kept as a "tail" object and
// re-read (at most one part's worth) at the start of the next request.
// When one request carries everything so far, the bytes go to a single plain object instead:
// no part bookkeeping, and R2 serves single objects much faster than multipart ones.
import { oci } from "../oci/errors";
/** What ingest feeds the bytes to: a resumable WASM Hasher, or NativeSha256 for a whole body. */
type ChunkHasher = { update(data: Uint8Array): void };
import { MAX_UPLOAD_PARTS, type UploadLayout } from "../stores/upload-session";
import { annotateRequest } from "../http/request-context";

/** R2 single put is limited to just under 5 GiB. */
const SINGLE_PUT_MAX = 4.5 * 1024 ** 3;
/** Read granularity: workerd delivers 4 KiB chunks by default; larger reads cut per-chunk JS cost. */
const READ_MIN = 256 * 1024;
const READ_MAX = 1024 * 1024;

export interface IngestInput {
  bucket: R2Bucket;
  layout: UploadLayout;
  offset: number;
  partSize: number;
  hashers: ChunkHasher[];
  body: ReadableStream<Uint8Array> | null;
  /** Declared body length, or null when streamed without Content-Length or Content-Range. */
  contentLength: number | null;
  /** The header that declared `contentLength` (named in errors); Content-Length if omitted. */
  lengthHeader?: LengthHeader;
  /** Largest body this request may carry; 0 = unlimited. */
  maxBytes: number;
  /** This request ends the upload: leave one complete object behind. */
  final: boolean;
  /** Prefix of every key this upload writes. */
  keyPrefix: string;
  /** A key already recorded in the session, used for the first object this request writes. */
  reservedKey?: string;
  /**
   * Record keys / multipart uploads in the session before writing them. Also called with nothing
   * to add before each part upload: it renews the lease and throws if the lease was lost, so a
   * writer that lost its upload to another never overwrites that writer's parts.
   */
  register(add: { keys?: string[]; multipart?: { key: string; uploadId: string } }): Promise<void>;
  /** Every part of the current multipart layout (needed only to complete it). */
  loadParts?(): Promise<R2UploadedPart[]>;
}

export interface IngestResult {
  layout: UploadLayout;
  offset: number;
  /** Parts this request uploaded to the layout's multipart upload (committed incrementally). */
  newParts: R2UploadedPart[];
  /** Objects superseded by this request; delete them once the new state is committed. */
  obsolete: string[];
  /** The reserved key, when this request did not use it. */
  unused: string[];
}

type Written = Omit<IngestResult, "unused">;
export type LengthHeader = "Content-Length" | "Content-Range";

export async function ingest(inp: IngestInput): Promise<IngestResult> {
  const reserved = inp.reservedKey;
  const res = await write(inp);
  annotateRequest({ bytesIn: res.offset - inp.offset }); // the request log's bytesIn, chunked bodies too
  // claimKey() clears reservedKey once it hands it out.
  return { ...res, unused: reserved && inp.reservedKey === reserved ? [reserved] : [] };
}

function write(inp: IngestInput): Promise<Written> {
  const { layout, contentLength } = inp;
  if (!inp.body && contentLength) throw truncated(0, contentLength, inp.lengthHeader); // e.g. a Content-Range and no body
  if (contentLength === 0 || !inp.body) {
    if (!inp.final) return Promise.resolve({ layout, offset: inp.offset, newParts: [], obsolete: [] });
    return finalizeLayout(inp, layout);
  }
  // Only a Content-Length is a length workerd enforces. A chunked body's Content-Range is a claim
  // that may be wrong: it goes through the part buffers, so a lie is refused without aborting an
  // R2 put mid-stream (workerd then reports an uncaught "Network connection lost").
  if (layout.kind === "empty" && contentLength !== null && inp.lengthHeader !== "Content-Range" && contentLength <= SINGLE_PUT_MAX) {
    return singlePut(inp, contentLength);
  }
  return partsWrite(inp);
}

/**
 * A body up to this size is read whole and put from memory: no FixedLengthStream and stream
 * plumbing per request, which dominate a small blob's cost (docs/roundtrips.md "Speed").
 */
export const SMALL_PUT_MAX = 1024 * 1024;

/** Whole body to one object, hashed on the way, with backpressure from R2. */
async function singlePut(inp: IngestInput, length: number): Promise<Written> {
  const key = await claimKey(inp);
  if (length <= SMALL_PUT_MAX) {
    const bytes = await readWhole(inp.body!, length, inp.lengthHeader);
    for (const h of inp.hashers) h.update(bytes);
    await inp.bucket.put(key, bytes, { httpMetadata: { contentType: "application/octet-stream" } });
    return { layout: { kind: "single", key, size: length }, offset: inp.offset + length, newParts: [], obsolete: [] };
  }
  const { readable, writable } = new FixedLengthStream(length);
  const put = inp.bucket.put(key, readable, { httpMetadata: { contentType: "application/octet-stream" } });
  put.catch(() => {}); // surfaced below
  const writer = writable.getWriter();
  let total = 0;
  // One write in flight while the next chunk is read: the request body and the R2 put overlap
  // instead of taking turns (a write resolves only once R2 has taken the chunk).
  let inflight: Promise<void> | null = null;
  try {
    for await (const chunk of readChunks(inp.body!)) {
      total += chunk.length;
      if (total > length) throw overlong(length, inp.lengthHeader);
      for (const h of inp.hashers) h.update(chunk);
      if (inflight) await inflight;
      inflight = writer.write(chunk);
      inflight.catch(() => {}); // awaited above or below
    }
    if (inflight) await inflight;
    if (total !== length) throw truncated(total, length, inp.lengthHeader);
    await writer.close();
    await put;
  } catch (err) {
    if (inflight) await inflight.catch(() => {});
    await writer.abort(err).catch(() => {});
    await put.catch(() => {}); // settled before the caller deletes the key
    throw err;
  }
  return { layout: { kind: "single", key, size: length }, offset: inp.offset + length, newParts: [], obsolete: [] };
}

/** Cut the stored prefix (single object or tail) plus the body into fixed-size parts. */
async function partsWrite(inp: IngestInput): Promise<Written> {
  const { bucket, partSize } = inp;
  const prev = inp.layout;
  let mp: R2MultipartUpload | null = prev.kind === "multipart" ? bucket.resumeMultipartUpload(prev.key, prev.uploadId) : null;
  // Parts already committed are only counted here; their etags stay in the session until completion.
  const firstPart = prev.kind === "multipart" ? prev.partCount + 1 : 1;
  const parts: R2UploadedPart[] = [];
  const obsolete: string[] = [];
  let prefix: { key: string; size: number } | null = null;
  if (prev.kind === "single") prefix = { key: prev.key, size: prev.size };
  if (prev.kind === "multipart" && prev.tail) prefix = prev.tail;

  // Two part buffers, reused: one uploads while the other fills. Allocating a fresh buffer per
  // part leaves V8 with hundreds of MiB of garbage on a multi-GiB push.
  const spare: ArrayBuffer[] = [];
  let buf = new Uint8Array(new ArrayBuffer(partSize));
  let fill = 0;
  let inflight: Promise<void> | null = null;
  let failed: unknown = null;

  const startMultipart = async () => {
    const key = newKey(inp.keyPrefix);
    const created = await bucket.createMultipartUpload(key, { httpMetadata: { contentType: "application/octet-stream" } });
    try {
      await inp.register({ keys: [key], multipart: { key, uploadId: created.uploadId } });
    } catch (err) {
      await created.abort().catch(() => {}); // not recorded anywhere: nothing else would abort it
      throw err;
    }
    return created;
  };
  /** Upload `data` as the next part; resolves once the previous part finished (its buffer is free). */
  const flushPart = async (data: Uint8Array, recycle: boolean) => {
    const partNumber = firstPart + parts.length;
    if (partNumber > MAX_UPLOAD_PARTS) {
      throw oci("SIZE_INVALID", `upload exceeds ${MAX_UPLOAD_PARTS} parts of ${partSize} bytes (${MAX_UPLOAD_PARTS * partSize} bytes), the most one upload can hold`, { limit: MAX_UPLOAD_PARTS * partSize }, 413);
    }
    if (!mp) mp = await startMultipart();
    const placeholder = parts.push({ partNumber, etag: "" }) - 1;
    if (inflight) await inflight; // at most one part uploading while the next one fills
    if (failed) throw failed;
    const upload = mp;
    inflight = (async () => {
      try {
        await inp.register({}); // still the writer? (renews the lease)
        parts[placeholder] = await upload.uploadPart(partNumber, data);
        if (recycle) spare.push(data.buffer as ArrayBuffer);
      } catch (err) {
        failed = err;
      }
    })();
  };
  /** Read `source` into parts; `declared` is the length its header promised (refused as soon as it is exceeded). */
  const take = async (source: ReadableStream<Uint8Array>, hash: boolean, limit: number | null, declared: number | null): Promise<number> => {
    let total = 0;
    const reader = byobReader(source);
    try {
      for (;;) {
        if (fill === partSize) {
          await flushPart(buf, true);
          buf = new Uint8Array(spare.pop() ?? new ArrayBuffer(partSize));
          fill = 0;
        }
        const view = new Uint8Array(buf.buffer, fill, partSize - fill);
        const { done, value } = await reader.read(view, Math.min(READ_MIN, view.length));
        if (value && value.length) {
          buf = new Uint8Array(value.buffer as ArrayBuffer);
          if (hash) for (const h of inp.hashers) h.update(value);
          fill += value.length;
          total += value.length;
          if (declared !== null && total > declared) throw overlong(declared, inp.lengthHeader);
          if (limit !== null && total > limit) throw tooLarge(limit);
        } else if (value) {
          buf = new Uint8Array(value.buffer as ArrayBuffer);
        }
        if (done) break;
      }
    } finally {
      reader.release();
    }
    return total;
  };

  try {
    if (prefix) {
      const obj = await bucket.get(prefix.key);
      if (!obj) throw new Error(`upload data ${prefix.key} is missing`);
      const got = await take(obj.body, false, null, null);
      if (got !== prefix.size) throw new Error(`upload data ${prefix.key} has ${got} bytes, expected ${prefix.size}`);
      obsolete.push(prefix.key);
    }
    const limit = inp.maxBytes > 0 ? inp.maxBytes : null;
    const got = await take(inp.body!, true, limit, inp.contentLength);
    if (inp.contentLength !== null && got !== inp.contentLength) throw truncated(got, inp.contentLength, inp.lengthHeader);
    const offset = inp.offset + got;

    if (inp.final) {
      if (!mp) {
        // Everything fits in one part: a plain object serves faster than a one-part multipart.
        const key = await claimKey(inp);
        await bucket.put(key, buf.subarray(0, fill), { httpMetadata: { contentType: "application/octet-stream" } });
        return { layout: { kind: "single", key, size: fill }, offset, newParts: [], obsolete };
      }
      if (fill > 0) await flushPart(buf.subarray(0, fill), false);
      if (inflight) await inflight;
      if (failed) throw failed;
      const done = mp as R2MultipartUpload;
      const earlier = prev.kind === "multipart" && prev.key === done.key ? await committedParts(inp) : [];
      await done.complete([...earlier, ...parts]);
      return { layout: { kind: "single", key: done.key, size: offset }, offset, newParts: [], obsolete };
    }

    let tail: { key: string; size: number } | null = null;
    if (fill > 0) {
      tail = { key: await claimKey(inp), size: fill };
      await bucket.put(tail.key, buf.subarray(0, fill));
    }
    if (inflight) await inflight;
    if (failed) throw failed;
    if (!mp) return { layout: tail ? { kind: "single", key: tail.key, size: tail.size } : { kind: "empty" }, offset, newParts: [], obsolete };
    const m = mp as R2MultipartUpload;
    const partCount = (prev.kind === "multipart" && prev.key === m.key ? prev.partCount : 0) + parts.length;
    return { layout: { kind: "multipart", key: m.key, uploadId: m.uploadId, partCount, tail }, offset, newParts: parts, obsolete };
  } catch (err) {
    if (inflight) await inflight;
    throw err;
  }
}

/** Turn whatever the upload holds into one complete object (used when the final request has no body). */
async function finalizeLayout(inp: IngestInput, layout: UploadLayout): Promise<Written> {
  const { bucket } = inp;
  switch (layout.kind) {
    case "empty": {
      const key = await claimKey(inp);
      await bucket.put(key, new Uint8Array(0), { httpMetadata: { contentType: "application/octet-stream" } });
      return { layout: { kind: "single", key, size: 0 }, offset: 0, newParts: [], obsolete: [] };
    }
    case "single":
      return { layout, offset: inp.offset, newParts: [], obsolete: [] };
    case "multipart": {
      const mp = bucket.resumeMultipartUpload(layout.key, layout.uploadId);
      const parts = await committedParts(inp);
      const obsolete: string[] = [];
      if (layout.tail) {
        if (parts.length + 1 > MAX_UPLOAD_PARTS) throw oci("SIZE_INVALID", `upload exceeds ${MAX_UPLOAD_PARTS} parts`, { limit: MAX_UPLOAD_PARTS }, 413);
        const obj = await bucket.get(layout.tail.key);
        if (!obj) throw new Error(`upload data ${layout.tail.key} is missing`);
        await inp.register({});
        parts.push(await mp.uploadPart(parts.length + 1, obj.body));
        obsolete.push(layout.tail.key);
      }
      await mp.complete(parts);
      return { layout: { kind: "single", key: layout.key, size: inp.offset }, offset: inp.offset, newParts: [], obsolete };
    }
  }
}

async function committedParts(inp: IngestInput): Promise<R2UploadedPart[]> {
  if (!inp.loadParts) throw new Error("completing a multipart upload needs its committed parts");
  return inp.loadParts();
}

function newKey(prefix: string): string {
  return prefix + crypto.randomUUID();
}

/** The next object key for this request, registered in the session before it is written. */
async function claimKey(inp: IngestInput): Promise<string> {
  if (inp.reservedKey) {
    const key = inp.reservedKey;
    inp.reservedKey = undefined;
    return key;
  }
  const key = newKey(inp.keyPrefix);
  await inp.register({ keys: [key] });
  return key;
}

function truncated(got: number, want: number, header: LengthHeader = "Content-Length") {
  return oci("BLOB_UPLOAD_INVALID", `request body ended after ${got} of ${want} bytes declared by ${header}`);
}

function overlong(want: number, header: LengthHeader = "Content-Length") {
  return oci("BLOB_UPLOAD_INVALID", `request body is longer than the ${want} bytes declared by ${header}`);
}

export function tooLarge(limit: number) {
  return oci("TOO_LARGE", `request body exceeds this registry's limit of ${limit} bytes per request; push the blob in chunks (PATCH with Content-Range) of at most that size`, { limit }, 413);
}

/**
 * A refused request's unread body is read and discarded up to this many bytes (above
 * Cloudflare's 100 MB request limit on Free/Pro zones, so a deployed Worker drains every body)…
 */
export const DRAIN_MAX_BYTES = 128 * 1024 * 1024;
/** …or for this long; then it is cancelled. */
export const DRAIN_MAX_MS = 5000;

/**
 * Read and discard what a refused request left unread of a body it had started to read, before
 * the error response goes out (workerd refuses reads after the response). A half-read body
 * breaks the connection it came on: behind wrangler dev's proxy the next request stalled until
 * yet another arrived (30 s and more) or failed with "Network connection lost"; cancelling the
 * stream does not help. Bodies nobody touched are left alone: the runtime disposes of them. A
 * body beyond DRAIN_MAX_BYTES or DRAIN_MAX_MS is cancelled instead of read to its end.
 * Returns how it ended (for tests).
 */
export async function drainRefusedBody(req: Request): Promise<"untouched" | "drained" | "cancelled"> {
  const body = req.body;
  if (!body || body.locked || !req.bodyUsed) return "untouched";
  const reader = byobReader(body);
  let timer: ReturnType<typeof setTimeout> | null = null;
  const expired = new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), DRAIN_MAX_MS); });
  let buf = new Uint8Array(new ArrayBuffer(READ_MAX));
  let total = 0;
  try {
    for (;;) {
      const res = await Promise.race([reader.read(buf, READ_MIN), expired]);
      if (res === null || total > DRAIN_MAX_BYTES) {
        await reader.cancel().catch(() => {});
        return "cancelled";
      }
      if (res.value) {
        total += res.value.length;
        buf = new Uint8Array(res.value.buffer as ArrayBuffer);
      }
      if (res.done) return "drained";
    }
  } catch {
    return "cancelled"; // the client went away mid-body: nothing left to drain
  } finally {
    clearTimeout(timer);
    reader.release();
  }
}

// ---- readers ---------------------------------------------------------------------------------

interface FillReader {
  read(view: Uint8Array, min: number): Promise<{ done: boolean; value: Uint8Array | undefined }>;
  cancel(): Promise<void>;
  release(): void;
}

/** BYOB reader using workerd's readAtLeast where the stream supports it; copying reader otherwise. */
function byobReader(stream: ReadableStream<Uint8Array>): FillReader {
  let r: ReadableStreamBYOBReader | null = null;
  try {
    r = stream.getReader({ mode: "byob" });
  } catch {
    r = null;
  }
  if (r) {
    const byob = r;
    return {
      read: async (view, min) => {
        const res = await byob.readAtLeast(min, view);
        // Every caller loops until `done`: a read that neither ends nor returns a byte would spin
        // the isolate forever without any I/O (seen as a hung test run), so it is an error.
        if (!res.done && view.length > 0 && !res.value?.length) throw new Error("the body stream returned no bytes without ending");
        return { done: res.done, value: res.value };
      },
      cancel: () => byob.cancel(),
      release: () => byob.releaseLock(),
    };
  }
  const d = stream.getReader();
  let pending: Uint8Array | null = null;
  return {
    // Copy from default-reader chunks into the caller's view; keep leftovers for the next call.
    read: async (view, min) => {
      let n = 0;
      let done = false;
      while (n < min && n < view.length) {
        let chunk = pending;
        pending = null;
        if (!chunk) {
          const res = await d.read();
          if (res.done) {
            done = true;
            break;
          }
          chunk = res.value;
        }
        const k = Math.min(chunk.length, view.length - n);
        view.set(chunk.subarray(0, k), n);
        n += k;
        if (k < chunk.length) pending = chunk.subarray(k);
      }
      return { done, value: view.subarray(0, n) };
    },
    cancel: () => d.cancel(),
    release: () => d.releaseLock(),
  };
}

/** Exactly `length` bytes of `stream` in one buffer; a shorter or longer body is refused. */
async function readWhole(stream: ReadableStream<Uint8Array>, length: number, header?: LengthHeader): Promise<Uint8Array> {
  const reader = byobReader(stream);
  try {
    // One byte more than declared: an overlong body shows up in the same read.
    let buf = new Uint8Array(new ArrayBuffer(length + 1));
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buf.buffer, total, length + 1 - total), length + 1 - total);
      if (value) {
        buf = new Uint8Array(value.buffer as ArrayBuffer);
        total += value.length;
      }
      if (total > length) throw overlong(length, header);
      if (done) break;
    }
    if (total !== length) throw truncated(total, length, header);
    return buf.subarray(0, length);
  } finally {
    reader.release();
  }
}

/** Chunks of fresh buffers (ownership passes to the consumer), read in large pieces. */
export async function* readChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = byobReader(stream);
  try {
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(new ArrayBuffer(READ_MAX)), READ_MIN);
      if (value && value.length) yield value;
      if (done) break;
    }
  } finally {
    reader.release();
  }
}
