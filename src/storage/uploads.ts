// Blob uploads, the domain side of /v2/<name>/blobs/uploads/…: the route parses, makes one call
// here, and shapes the response. Here live the write lease (take, keep alive, release), the
// ingest of the body into R2, the verification of the claimed digest (with the one-read
// fallback for hashes not computed while streaming) and the handoff that commits the blob.
import { config, type Env } from "../env";
import { oci } from "../oci/errors";
import type { ParsedDigest } from "../oci/grammar";
import { uploadSessionFor } from "../stores";
import { MAX_UPLOAD_PARTS, type BeginResult } from "../stores/upload-session";
import type { HashAlgorithm } from "../digest/hasher";
import { Hasher, NativeSha256 } from "../digest/hasher";
import { assertClaim, createHashers, finishHashers, missingAlgorithm, saveHashers, streamingAlgorithms, type Computed, type DigestPolicy } from "../digest/verify";
import { matchGlob } from "../auth/policy";
import { ingest, readChunks, type LengthHeader } from "./ingest";
import { commitBlob, type VerifiedObject } from "./handoff";
import { mintUploadId, unknownUploadError, type UploadId } from "./upload-ids";
import { trustStoreFor } from "../stores";
import type { UploadEnd } from "../stores/trust-store";

/** Who is writing which upload (the id verified by parseUploadId). */
export interface UploadRef extends UploadId {
  repo: string;
  principal: string;
}

/** A request body and what its headers say about it. */
export interface UploadBody {
  stream: ReadableStream<Uint8Array> | null;
  /**
   * Declared body length: Content-Length, or for a chunked body the Content-Range's length; null
   * when streamed without either.
   */
  contentLength: number | null;
  /** Which header declared `contentLength` (named in errors); Content-Length if omitted. */
  lengthHeader?: LengthHeader;
  /** Content-Range start, or null (append at the current offset). */
  start: number | null;
}

type SessionStub = ReturnType<typeof uploadSessionFor>;

/**
 * BLAKE3_IN_SHA256: "true" (default) or "false", or a comma-separated list of repository globs
 * ("*" within a segment, "**" across) where build-cache/v1 `sha256:<BLAKE3>` claims are accepted.
 */
export function digestPolicy(env: Env, repo: string): DigestPolicy {
  const raw = String(env.BLAKE3_IN_SHA256 ?? "true").trim();
  const lower = raw.toLowerCase();
  if (lower === "true" || lower === "*" || lower === "**") return { blake3InSha256: true };
  if (lower === "false" || lower === "" || lower === "off") return { blake3InSha256: false };
  const globs = raw.split(",").map((g) => g.trim()).filter(Boolean);
  return { blake3InSha256: globs.some((g) => matchGlob(g, repo)) };
}

/** The largest blob an upload session can hold: R2's part limit times the part size. */
export function maxUploadBytes(env: Env): number {
  return MAX_UPLOAD_PARTS * config(env).uploadPartBytes;
}

/**
 * Start an upload; `algorithms` are hashes the client declared it will close with (computed
 * in-stream). Without those, the id is signed and stateless (docs/adr/0013): no object is created
 * until a PATCH needs one, so POST + PUT with the whole blob costs only the two index calls.
 */
export async function openUpload(env: Env, repo: string, principal: string, algorithms: HashAlgorithm[]): Promise<string> {
  const cfg = config(env);
  if (!algorithms.length) return mintUploadId(env, repo, principal, cfg.uploadTtlSeconds);
  const id = crypto.randomUUID();
  await uploadSessionFor(env, id).open({ id, repo, principal, ttlSeconds: cfg.uploadTtlSeconds, partSize: cfg.uploadPartBytes, algorithms });
  return id;
}

/** Bytes received so far. A signed id with no session has 0, unless its repository says it ended. */
export async function uploadOffset(env: Env, ref: UploadRef): Promise<number> {
  const s = await uploadSessionFor(env, ref.session).get(ref.repo, ref.principal);
  if (s) return s.offset;
  if (ref.signed && !(await trustStoreFor(env, ref.repo).uploadEnded(ref.repo, ref.id))) return 0;
  throw unknownUpload();
}

/** Cancel: abort R2 parts, delete objects, forget the session; a signed id ends for good. */
export async function cancelUpload(env: Env, ref: UploadRef): Promise<void> {
  const cancelled = await uploadSessionFor(env, ref.session).cancel(ref.repo, ref.principal);
  const end = endOf(ref);
  const ended = end ? await trustStoreFor(env, ref.repo).endUpload(ref.repo, end) : false;
  if (!cancelled && !ended) throw unknownUpload();
}

/** The end a signed upload's close or cancel records (null for a session opened at POST). */
function endOf(ref: UploadRef): UploadEnd | null {
  return ref.signed ? { id: ref.id, expiresAt: ref.signed.expiresAt } : null;
}

/** PATCH: append the body; returns the new offset. */
export async function appendToUpload(env: Env, ref: UploadRef, body: UploadBody): Promise<number> {
  return underLease(env, ref, body, null);
}

/**
 * PUT ?digest=: append the body (if any), verify the claim, commit the blob and end the upload.
 * A signed upload closed with a body from offset 0 (no Content-Range, or one starting at 0) is
 * first taken as the whole blob, with no session call (docs/adr/0013): verified, then
 * BlobStore.commit and TrustStore.link, which ends the id in its transaction — 2 round trips. Only
 * when the bytes are not the claimed blob is the session asked: they are then the last chunk
 * of a PATCHed upload, appended from the object they were written to (or, with no session, the
 * claim is simply wrong).
 */
export async function closeUpload(env: Env, ref: UploadRef, body: UploadBody, claim: ParsedDigest): Promise<void> {
  if (!ref.signed || !body.stream || body.contentLength === 0 || (body.start !== null && body.start !== 0)) {
    await underLease(env, ref, body, claim);
    return;
  }
  const whole = await ingestWhole(env, ref.repo, claim, body);
  try {
    if (whole.mismatch === null) {
      await commitBlob(env, ref.repo, whole.object, { end: endOf(ref) });
      return;
    }
    const obj = await env.BUCKET.get(whole.object.r2Key);
    if (!obj) throw new Error(`upload data ${whole.object.r2Key} vanished`);
    await underLease(env, ref, { stream: obj.body, contentLength: whole.object.size, start: body.start }, claim, whole.mismatch);
  } catch (err) {
    // Never the key BlobStore adopted: commitBlob keeps or gives back that one itself.
    if (whole.mismatch !== null) await env.BUCKET.delete(whole.object.r2Key).catch(() => {});
    throw err;
  }
  await env.BUCKET.delete(whole.object.r2Key).catch(() => {});
}

/** POST ?digest= with the whole blob as body: no session; on any failure nothing is kept. */
export async function uploadWhole(env: Env, repo: string, claim: ParsedDigest, body: Omit<UploadBody, "start">): Promise<void> {
  const whole = await ingestWhole(env, repo, claim, body);
  if (whole.mismatch !== null) {
    await env.BUCKET.delete(whole.object.r2Key).catch(() => {});
    throw whole.mismatch;
  }
  await commitBlob(env, repo, whole.object);
}

/**
 * The body as one object under a fresh key, hashed on the way; `mismatch` is the claim's error
 * when the bytes are not the claimed blob (the object is kept for the caller to use or delete).
 * On any other failure nothing is kept.
 */
async function ingestWhole(env: Env, repo: string, claim: ParsedDigest, body: Omit<UploadBody, "start">): Promise<{ object: VerifiedObject; mismatch: unknown }> {
  const cfg = config(env);
  const policy = digestPolicy(env, repo);
  // The whole body in one request: SHA-256 natively (nothing to resume); any other algorithm the
  // claim needs in WASM.
  const sha256 = new NativeSha256();
  const hashers = createHashers(streamingAlgorithms(claim).filter((a) => a !== "sha256"));
  const written: string[] = [];
  try {
    const res = await ingest({
      bucket: env.BUCKET, layout: { kind: "empty" }, offset: 0, partSize: cfg.uploadPartBytes, hashers: [sha256, ...hashers],
      body: body.stream, contentLength: body.contentLength, lengthHeader: body.lengthHeader, maxBytes: cfg.maxBodyBytes, final: true, keyPrefix: `data/${crypto.randomUUID()}/`,
      register: async (add) => { if (add.keys) written.push(...add.keys); },
    });
    if (res.layout.kind !== "single") throw new Error("monolithic upload did not produce one object");
    const computed = await completeHashes(env.BUCKET, res.layout.key, claim, { ...finishHashers(hashers), sha256: await sha256.digestHex() }, policy);
    const object = { digest: claim.digest, size: res.layout.size, r2Key: res.layout.key, contentSha256: computed.sha256 ?? "" };
    try {
      assertClaim(claim, computed, policy);
    } catch (mismatch) {
      return { object, mismatch };
    }
    return { object, mismatch: null };
  } catch (err) {
    if (written.length) await env.BUCKET.delete(written).catch(() => {});
    throw err;
  }
}

// ---- the write lease -------------------------------------------------------------------------

/**
 * A write lease held by this request: renewed on a timer while the request runs (whether bytes
 * arrive fast or slowly, and during the close's verification), so it lapses only when the
 * request is gone — within `leaseMs` of its writer dying.
 */
class Lease {
  private readonly timer: ReturnType<typeof setInterval>;
  private renewing = false;
  private lost = false;
  /** Objects this request registered: deleted if it fails. */
  readonly created: string[];

  constructor(private readonly session: SessionStub, readonly token: string, private readonly leaseMs: number, reservedKey: string) {
    this.created = [reservedKey];
    this.timer = setInterval(() => this.tick(), renewEvery(leaseMs));
  }

  private tick(): void {
    if (this.renewing || this.lost) return;
    this.renewing = true;
    this.session.renew(this.token, this.leaseMs).then(
      (ok) => { if (!ok) this.lost = true; },
      () => {}, // a failed renewal is retried at the next tick; the lease outlives several
    ).finally(() => { this.renewing = false; });
  }

  /** Record keys before they are written (and renew); throws once the lease is lost. */
  async register(add: { keys?: string[]; multipart?: { key: string; uploadId: string } }): Promise<void> {
    this.check();
    if (add.keys) this.created.push(...add.keys);
    if (!(await this.session.renew(this.token, this.leaseMs, add))) this.lost = true;
    this.check();
  }

  check(): void {
    if (this.lost) throw leaseLost(this.leaseMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Renew four times per lease: a writer survives three missed renewals. */
export function renewEvery(leaseMs: number): number {
  return Math.max(100, Math.floor(leaseMs / 4));
}

/**
 * Stream the body into the upload under the session's write lease; with a claim, verify it and
 * commit the blob (bytes → BlobStore → TrustStore), then end the session. Returns the offset.
 */
async function underLease(env: Env, ref: UploadRef, body: UploadBody, claim: ParsedDigest | null, mismatch: unknown = null): Promise<number> {
  const cfg = config(env);
  const leaseMs = cfg.uploadLeaseSeconds * 1000;
  const session = uploadSessionFor(env, ref.session);
  const final = claim !== null;
  let begun: BeginResult;
  if (ref.signed && mismatch === null) {
    // A signed id has no session until a request like this one creates it, in the same call that
    // takes the lease; only a session created just now must ask the repository whether the id had
    // ended (a monolithic close or a cancel before any chunk).
    const opened = await session.beginOrOpen(
      { id: ref.session, repo: ref.repo, principal: ref.principal, expiresAt: ref.signed.expiresAt, partSize: cfg.uploadPartBytes },
      body.start, { leaseMs, final },
    );
    if (opened.created && (await trustStoreFor(env, ref.repo).uploadEnded(ref.repo, ref.id))) {
      await session.cancel(ref.repo, ref.principal);
      throw unknownUpload();
    }
    begun = opened;
  } else {
    begun = await session.begin(ref.repo, ref.principal, body.start, { leaseMs, final });
    if (!begun.ok && begun.reason === "unknown" && ref.signed) {
      // Closing bytes taken as the whole blob that are not the claimed one, and no chunks before
      // them: a failed close ends the upload, as in the reference registry.
      if (!(await trustStoreFor(env, ref.repo).endUpload(ref.repo, endOf(ref)!))) throw unknownUpload();
      throw mismatch;
    }
  }
  if (!begun.ok) throw refused(ref, begun, body.start, leaseMs);

  const { state, reservedKey } = begun;
  const lease = new Lease(session, begun.lease, leaseMs, reservedKey);
  let settled = false;
  try {
    const algs = Object.keys(state.hashStates).length
      ? (Object.keys(state.hashStates) as HashAlgorithm[])
      : streamingAlgorithms(state.offset === 0 ? claim : null, state.algorithms);
    const hashers = createHashers(algs, state.hashStates);
    const res = await ingest({
      bucket: env.BUCKET, layout: state.layout, offset: state.offset, partSize: state.partSize, hashers,
      body: body.stream, contentLength: body.contentLength, lengthHeader: body.lengthHeader, maxBytes: cfg.maxBodyBytes, final, keyPrefix: `data/${ref.session}/`, reservedKey,
      register: (add) => lease.register(add),
      loadParts: async () => {
        const parts = await session.parts(lease.token);
        if (!parts) throw leaseLost(leaseMs);
        return parts;
      },
    });
    lease.check();

    if (!claim) {
      const next = await session.commit(lease.token, {
        offset: res.offset, layout: res.layout, hashStates: saveHashers(hashers), newParts: res.newParts, obsolete: res.obsolete, unused: res.unused,
      });
      if (!next) throw leaseLost(leaseMs);
      settled = true;
      return next.offset;
    }

    if (res.layout.kind !== "single") throw new Error("final upload did not produce one object");
    const key = res.layout.key;
    const policy = digestPolicy(env, ref.repo);
    const computed = await completeHashes(env.BUCKET, key, claim, finishHashers(hashers), policy);
    try {
      assertClaim(claim, computed, policy);
    } catch (err) {
      // A failed close ends the upload, as in the reference registry.
      settled = true;
      await session.finish(lease.token, null);
      const end = endOf(ref);
      if (end) await trustStoreFor(env, ref.repo).endUpload(ref.repo, end).catch(() => {});
      throw err;
    }
    settled = true;
    let kept: string | null = key;
    try {
      const result = await commitBlob(env, ref.repo, { digest: claim.digest, size: res.layout.size, r2Key: key, contentSha256: computed.sha256! }, { end: endOf(ref) });
      kept = result.adoptedOffered ? result.r2Key : null;
    } finally {
      // After the handoff started, the object may be BlobStore's: never delete it here (if the
      // handoff failed half-way it is unreferenced, and garbage collection reclaims it).
      await session.finish(lease.token, kept);
    }
    return res.offset;
  } finally {
    lease.stop();
    if (!settled) await session.release(lease.token, lease.created).catch(() => {});
  }
}

function refused(ref: UploadRef, r: Exclude<BeginResult, { ok: true }>, start: number | null, leaseMs: number) {
  switch (r.reason) {
    case "unknown":
      return unknownUpload();
    case "busy": {
      // 503 + Retry-After, not 416 (clients read 416 as a wrong offset and give up) and not 429
      // (docker does not retry TOOMANYREQUESTS); docker and containers/image retry a 503.
      const secs = Math.max(1, Math.ceil(r.retryAfterMs / 1000));
      return oci(
        "TOOMANYREQUESTS",
        `another request is writing to this upload; retry in ${secs} s. A writer that stopped (for example one that crashed) holds it at most ${leaseMs / 1000} s`,
        { offset: r.offset, retryAfter: secs }, 503, { ...progressHeaders(ref.repo, ref.id, r.offset), "Retry-After": String(secs) },
      );
    }
    case "offset":
      return oci(
        "RANGE_INVALID", `chunk starts at ${start} but the upload has ${r.offset} bytes; send the next chunk from offset ${r.offset}`,
        { offset: r.offset }, 416, progressHeaders(ref.repo, ref.id, r.offset),
      );
    case "chunks":
      return oci(
        "BLOB_UPLOAD_INVALID", `this upload already took ${r.limit} chunks, the most one upload accepts; close it with PUT ?digest=, or push the blob in fewer, larger chunks`,
        { offset: r.offset, limit: r.limit }, 400, progressHeaders(ref.repo, ref.id, r.offset),
      );
  }
}

function leaseLost(leaseMs: number) {
  return oci(
    "TOOMANYREQUESTS",
    `this request lost its write lease on the upload (it stalled for over ${leaseMs / 1000} s and another request took over, or the upload ended); nothing it sent was kept: GET the upload for its offset and resume`,
    undefined, 503, { "Retry-After": "1" },
  );
}

// ---- verification ----------------------------------------------------------------------------

/**
 * Add the hash the claim still needs (an algorithm not known while streaming, or BLAKE3 for a
 * build-cache/v1 claim whose SHA-256 check failed) by reading the written object once.
 */
async function completeHashes(bucket: R2Bucket, key: string, claim: ParsedDigest, computed: Computed, policy: DigestPolicy): Promise<Computed> {
  const more = missingAlgorithm(claim, computed, policy);
  return more ? { ...computed, ...(await hashObject(bucket, key, more)) } : computed;
}

async function hashObject(bucket: R2Bucket, key: string, algorithm: HashAlgorithm): Promise<Computed> {
  const obj = await bucket.get(key);
  if (!obj) throw new Error(`object ${key} vanished`);
  const h = Hasher.create(algorithm);
  for await (const chunk of readChunks(obj.body)) h.update(chunk);
  return { [algorithm]: h.digestHex() };
}

// ---- shared response pieces ------------------------------------------------------------------

export const unknownUpload = unknownUploadError;

export function uploadLocation(repo: string, id: string) {
  return `/v2/${repo}/blobs/uploads/${id}`;
}

export function progressHeaders(repo: string, id: string, offset: number): Record<string, string> {
  return {
    Location: uploadLocation(repo, id),
    "Docker-Upload-UUID": id,
    Range: offset > 0 ? `0-${offset - 1}` : "0-0",
    "Content-Length": "0",
  };
}
