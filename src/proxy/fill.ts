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
 * the blob became a member meanwhile (serve it from R2), else the lease to release once the fill
 * ended (committed or failed). Throws 503 after FILL_WAIT_MS of waiting.
 */
export async function takeFillLease(env: Env, repo: string, digest: string): Promise<FillLease | null> {
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
      if (await memberBlob(env, repo, digest)) {
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
      throw oci("TOOMANYREQUESTS", `another request has been fetching blob ${digest} from the upstream for over ${FILL_WAIT_MS / 1000} s; retry in ${secs} s`, { digest, retryAfter: secs }, 503, { "Retry-After": String(secs) });
    }
    await new Promise((done) => setTimeout(done, pause));
    pause = Math.min(1000, pause * 2);
    if (await memberBlob(env, repo, digest)) return null;
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
 * `done` settles when the fill ended (verified and committed, or failed and discarded). On a
 * failure the client's stream is aborted before its last chunk. `onError` maps a failure of
 * uploadWhole (e.g. a digest mismatch) to the error the client's stream is aborted with.
 */
export function teeFill(
  env: Env, repo: string, claim: ParsedDigest, upstream: ReadableStream<Uint8Array>, size: number | null,
): { body: ReadableStream<Uint8Array>; done: Promise<FillOutcome> } {
  const client = size !== null ? new FixedLengthStream(size) : new IdentityTransformStream();
  const toR2 = new IdentityTransformStream();
  const cw = client.writable.getWriter();
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((r) => { timer = setTimeout(() => r("stalled"), CLIENT_STALL_MS); });
    try {
      const r = await Promise.race([cw.write(chunk).then(() => "ok" as const), stalled]);
      if (r === "stalled") throw new Error(`the client took no data for ${CLIENT_STALL_MS / 1000} s`);
    } catch {
      clientGone = true;
      cw.abort(new Error("client gone")).catch(() => {});
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  };

  const done = (async (): Promise<FillOutcome> => {
    let held: Uint8Array | null = null;
    try {
      try {
        for await (const chunk of readChunks(upstream)) {
          await Promise.race([Promise.all([rw.write(chunk), held ? toClient(held) : null]), r2Failed]);
          held = chunk;
        }
        await Promise.race([rw.close(), r2Failed]);
      } catch (err) {
        await upstream.cancel().catch(() => {});
        await rw.abort(err).catch(() => {});
        await ingested.catch(() => {}); // uploadWhole deletes what it wrote
        throw err;
      }
      await ingested; // verified against the digest and committed (BlobStore, then membership)
    } catch (error) {
      if (!clientGone) await cw.abort(error).catch(() => {}); // cut before the last chunk
      return { ok: false, error, clientGone };
    }
    if (held) await toClient(held);
    if (!clientGone) await cw.close().catch(() => {});
    return { ok: true, clientGone };
  })();
  return { body: client.readable, done };
}

/** Whether `err` is uploadWhole's verdict that the bytes are not the claimed blob. */
export function isDigestMismatch(err: unknown): boolean {
  return err instanceof OciError && err.code === "DIGEST_INVALID";
}
