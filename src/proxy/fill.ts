// Filling a proxy repository's blob from its upstream (docs/proxy.md "Blob miss", ADR 0020
// "Session 4"): one filler per (repository, digest) across isolates, and the upstream body
// streamed to the client and into R2 at once.
//
// Single flight uses the upload machinery's lease (ADR 0007): the UploadSession object named
// `proxy-fill:<repo>@<digest>` is the fence. The filler holds its write lease (renewed while it
// streams); other misses find it busy and wait until the blob is a member of the repository, at
// most FILL_WAIT_MS, then answer 503 + Retry-After. A filler that crashed stops renewing, its
// lease lapses within UPLOAD_LEASE_SECONDS and the next miss takes over.
//
// The tee is a pump with backpressure, not ReadableStream.tee() (which buffers without bound for
// the slower branch): each chunk read from the upstream is written to the R2 branch (the normal
// verified ingest, uploadWhole) and the previous chunk to the client, and the next read waits for
// both. The last chunk is held back until uploadWhole has verified the digest and committed the
// blob: a client never receives the final byte of a body whose digest is wrong — its connection is
// cut instead.
import type { Env } from "../env";
import { config } from "../env";
import { oci, OciError } from "../oci/errors";
import type { ParsedDigest } from "../oci/grammar";
import { uploadSessionFor } from "../stores";
import { renewEvery, uploadWhole } from "../storage/uploads";
import { memberBlob } from "../storage/backfill";
import { readChunks } from "../storage/ingest";

/** Longest a miss waits for another request's fill of the same blob before answering 503. */
export const FILL_WAIT_MS = 60_000;
/** A client that takes no byte for this long is dropped; the fill into R2 goes on without it. */
export const CLIENT_STALL_MS = 30_000;
/** How long an idle single-flight session object is kept (then its alarm deletes it). */
const FILL_SESSION_TTL_MS = 3600_000;
const FILL_PRINCIPAL = "proxy-fill";

/** The UploadSession that fences fills of `digest` into `repo`. */
export function fillSessionId(repo: string, digest: string): string {
  return `proxy-fill:${repo}@${digest}`;
}

/** The single-flight lease of one fill: renewed until released. */
export interface FillLease {
  release(): Promise<void>;
}

/**
 * Become the one filler of `digest` for `repo`, or wait for the one there is. Returns null when
 * the blob (or, with `isMember` for manifests, the manifest) became a member meanwhile (serve it
 * from the cache), else the lease to release once the fill ended (committed or failed). Throws 503
 * after FILL_WAIT_MS of waiting.
 */
export async function takeFillLease(
  env: Env, repo: string, digest: string,
  isMember: () => Promise<boolean> = async () => (await memberBlob(env, repo, digest)) !== null,
): Promise<FillLease | null> {
  const leaseMs = config(env).uploadLeaseSeconds * 1000;
  const id = fillSessionId(repo, digest);
  const session = uploadSessionFor(env, id);
  const deadline = Date.now() + FILL_WAIT_MS;
  let pause = 100;
  for (;;) {
    const r = await session.beginOrOpen(
      { id, repo, principal: FILL_PRINCIPAL, expiresAt: Date.now() + FILL_SESSION_TTL_MS, partSize: config(env).uploadPartBytes },
      null, { leaseMs, final: true },
    );
    if (r.ok) {
      const lease = holdLease(session, r.lease, r.reservedKey, leaseMs);
      // The previous filler links the blob before it lets go of the lease: look once more.
      if (await isMember()) {
        await lease.release();
        return null;
      }
      return lease;
    }
    if (r.reason !== "busy") {
      // The session object ended in this instance's lifetime (or expired just now): no fence to
      // take, so fill without one; BlobStore's commit still keeps one copy.
      return { release: async () => {} };
    }
    if (Date.now() + pause > deadline) {
      const secs = Math.max(1, Math.ceil(Math.min(r.retryAfterMs, 10_000) / 1000));
      throw oci("TOOMANYREQUESTS", `another request has been fetching ${digest} from the upstream for over ${FILL_WAIT_MS / 1000} s; retry in ${secs} s`, { digest, retryAfter: secs }, 503, { "Retry-After": String(secs) });
    }
    await new Promise((done) => setTimeout(done, pause));
    pause = Math.min(1000, pause * 2);
    if (await isMember()) return null;
  }
}

function holdLease(session: ReturnType<typeof uploadSessionFor>, token: string, reservedKey: string, leaseMs: number): FillLease {
  const timer = setInterval(() => { session.renew(token, leaseMs).catch(() => {}); }, renewEvery(leaseMs));
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      // The reserved key is never written (uploadWhole writes under its own key): forget it.
      await session.release(token, [reservedKey]).catch(() => {});
    },
  };
}

/** How a streamed fill ended, for the caller's audit and logs. */
export type FillOutcome = { ok: true; clientGone: boolean } | { ok: false; error: unknown; clientGone: boolean };

/**
 * Stream `upstream` to the client and into R2 at once. Returns the client's body at once;
 * `done` settles when the fill ended (verified and committed, or failed and discarded: uploadWhole
 * deletes what it wrote); on a failure the client's stream is errored before its last chunk.
 */
export function teeFill(
  env: Env, repo: string, claim: ParsedDigest, upstream: ReadableStream<Uint8Array>, size: number | null,
): { body: ReadableStream<Uint8Array>; done: Promise<FillOutcome> } {
  const client = new ClientChannel(size);
  const toR2 = new IdentityTransformStream();
  const rw = toR2.writable.getWriter();
  const ingested = uploadWhole(env, repo, claim, { stream: toR2.readable, contentLength: size });
  ingested.catch(() => {}); // awaited below
  // If the R2 side fails early it stops reading, and a write to it would wait forever.
  const r2Failed = ingested.then(() => new Promise<never>(() => {}), (err) => Promise.reject(err));
  r2Failed.catch(() => {});

  let clientGone = false;
  /** Write to the client unless it left or stalled; never throws. */
  const toClient = async (chunk: Uint8Array) => {
    if (clientGone) return;
    if (!(await client.write(chunk, CLIENT_STALL_MS))) clientGone = true;
  };

  const done = (async (): Promise<FillOutcome> => {
    let held: Uint8Array | null = null;
    // One write in flight per branch while the next chunk is read. The R2 branch's reader asks for
    // at least 256 KiB per read, so a short last chunk completes only with the close behind it:
    // the close is queued right after that write, never after awaiting it (that deadlocks).
    let r2Write: Promise<void> = Promise.resolve();
    let clientWrite: Promise<void> = Promise.resolve();
    try {
      try {
        for await (const chunk of readChunks(upstream)) {
          await Promise.race([Promise.all([r2Write, clientWrite]), r2Failed]);
          r2Write = rw.write(chunk);
          r2Write.catch(() => {}); // awaited before the next write
          if (held) clientWrite = toClient(held);
          held = chunk;
        }
        await Promise.race([Promise.all([r2Write, clientWrite, rw.close()]), r2Failed]);
      } catch (err) {
        await upstream.cancel().catch(() => {});
        await rw.abort(err).catch(() => {});
        await ingested.catch(() => {}); // uploadWhole deletes what it wrote
        throw err;
      }
      await ingested; // verified against the digest and committed (BlobStore, then membership)
    } catch (error) {
      client.fail(error); // cut before the last chunk
      return { ok: false, error, clientGone };
    }
    if (held) await toClient(held);
    client.close();
    return { ok: true, clientGone };
  })();
  return { body: client.readable, done };
}

/**
 * The client's body: a JavaScript ReadableStream fed chunk by chunk when the client asks for the
 * next one (highWaterMark 0: nothing queues here). Not an IdentityTransformStream: the request
 * log pipes large response bodies into a FixedLengthStream, and workerd cannot pipe one transform
 * stream into another ("Inter-TransformStream ReadableStream.pipeTo() is not implemented").
 * Without expectedLength workerd drops the Content-Length header of a JavaScript stream and sends
 * it chunked — and then ends an errored body with a clean last chunk behind wrangler's proxy.
 */
class ClientChannel {
  readonly readable: ReadableStream<Uint8Array>;
  private ctl!: ReadableStreamDefaultController<Uint8Array>;
  private demand = false;
  private wake: (() => void) | null = null;
  private ended = false;

  /** `size`: sent as Content-Length (workerd's expectedLength), so a cut transfer is one clients see. */
  constructor(size: number | null) {
    this.readable = new ReadableStream<Uint8Array>({
      start: (ctl) => { this.ctl = ctl; },
      pull: () => { this.demand = true; this.wake?.(); },
      cancel: () => { this.ended = true; this.wake?.(); },
      ...(size !== null ? { expectedLength: size } : {}),
    }, { highWaterMark: 0 });
  }

  /** Hand `chunk` to the client once it asks; false if it left or asked for nothing for `stallMs`. */
  async write(chunk: Uint8Array, stallMs: number): Promise<boolean> {
    if (!this.demand && !this.ended) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const asked = await new Promise<boolean>((resolve) => {
        this.wake = () => resolve(true);
        timer = setTimeout(() => resolve(false), stallMs);
      });
      this.wake = null;
      if (timer !== undefined) clearTimeout(timer);
      if (!asked) this.fail(new Error(`the client took no data for ${stallMs / 1000} s`));
    }
    if (this.ended) return false;
    this.demand = false;
    this.ctl.enqueue(chunk);
    return true;
  }

  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.ctl.close();
  }

  fail(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.ctl.error(err);
  }
}

/** Whether `err` is uploadWhole's verdict that the bytes are not the claimed blob. */
export function isDigestMismatch(err: unknown): boolean {
  return err instanceof OciError && err.code === "DIGEST_INVALID";
}
