// /v2/<name>/blobs/uploads/…: monolithic, chunked and streamed blob uploads, and mounts.
import type { Ctx } from "../app";
import { config, type Env } from "../env";
import { oci } from "./errors";
import { isValidName, parseDigest, type ParsedDigest } from "./grammar";
import { uploadSessionFor } from "../stores";
import type { UploadState } from "../stores/upload-session";
import { ingest, readChunks, tooLarge } from "../storage/ingest";
import { commitBlob } from "../storage/handoff";
import { mountBlob } from "../storage/holders";
import { assertClaim, createHashers, finishHashers, missingAlgorithm, saveHashers, streamingAlgorithms, type DigestPolicy, type Computed } from "../digest/verify";
import { Hasher } from "../digest/hasher";
import { principalId } from "./principal";
import { mayPull } from "../auth";
import { matchGlob } from "../auth/policy";

const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const MIN_CHUNK = 5 * 1024 * 1024;

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

/** POST /v2/<name>/blobs/uploads/ — start a session, upload monolithically (?digest=), or mount. */
export async function start(c: Ctx, name: string): Promise<Response> {
  const cfg = config(c.env);
  const url = new URL(c.req.url);
  const mount = url.searchParams.get("mount");
  const from = url.searchParams.get("from");
  const digestParam = url.searchParams.get("digest");

  if (mount !== null) {
    const d = parseDigest(mount, "mount digest");
    const mounted = await tryMount(c, name, d, from);
    if (mounted) return mounted;
    // Not mountable: fall through to a normal session, as the spec requires.
  } else if (digestParam !== null) {
    return monolithic(c, name, parseDigest(digestParam));
  }
  checkBodyLimit(c, cfg.maxBodyBytes);
  return openSession(c, name);
}

async function openSession(c: Ctx, name: string): Promise<Response> {
  const cfg = config(c.env);
  const id = crypto.randomUUID();
  // A client may declare the digest algorithm it will close with, so that hash is computed
  // (resumably) while the chunks stream instead of by a read at close (cloister extension).
  const declared = new URL(c.req.url).searchParams.get("digest-algorithm");
  const algorithms: ("blake3" | "sha512")[] = declared === "blake3" || declared === "sha512" ? [declared] : [];
  await uploadSessionFor(c.env, id).open({ id, repo: name, principal: principalId(c), ttlSeconds: cfg.uploadTtlSeconds, partSize: cfg.uploadPartBytes, algorithms });
  return new Response(null, {
    status: 202,
    headers: {
      Location: uploadLocation(name, id),
      "Docker-Upload-UUID": id,
      Range: "0-0",
      "Content-Length": "0",
      "OCI-Chunk-Min-Length": String(MIN_CHUNK),
      "OCI-Chunk-Max-Length": String(cfg.chunkMaxBytes),
    },
  });
}

/**
 * Link an existing blob into `name` without uploading it. With `from`, only from that repository
 * and only if the caller may pull it; without `from`, from any repository holding the blob that
 * the caller may pull. Anything else falls back to a normal session, indistinguishable from
 * "not there".
 */
async function tryMount(c: Ctx, name: string, d: ParsedDigest, from: string | null): Promise<Response | null> {
  if (from !== null && !isValidName(from)) return null;
  const mounted = await mountBlob(c.env, name, d.digest, from !== null ? [from] : null, (repo) => mayPull(c, repo));
  return mounted ? created(name, d.digest) : null;
}

/** POST ?digest= with the whole blob as body. */
async function monolithic(c: Ctx, name: string, claim: ParsedDigest): Promise<Response> {
  const cfg = config(c.env);
  checkBodyLimit(c, cfg.maxBodyBytes);
  const policy = digestPolicy(c.env, name);
  const hashers = createHashers(streamingAlgorithms(claim));
  const keyPrefix = `data/${crypto.randomUUID()}/`;
  const written: string[] = [];
  try {
    const res = await ingest({
      bucket: c.env.BUCKET, layout: { kind: "empty" }, offset: 0, partSize: cfg.uploadPartBytes, hashers,
      body: c.req.raw.body, contentLength: contentLength(c), maxBytes: cfg.maxBodyBytes, final: true, keyPrefix,
      register: async (add) => { if (add.keys) written.push(...add.keys); },
    });
    if (res.layout.kind !== "single") throw new Error("monolithic upload did not produce one object");
    const computed = await completeHashes(c.env.BUCKET, res.layout.key, claim, finishHashers(hashers), policy);
    assertClaim(claim, computed, policy);
    await commitBlob(c.env, name, { digest: claim.digest, size: res.layout.size, r2Key: res.layout.key, contentSha256: computed.sha256! });
    return created(name, claim.digest);
  } catch (err) {
    if (written.length) await c.env.BUCKET.delete(written).catch(() => {});
    throw err;
  }
}

/** PATCH: append a chunk (Content-Range) or a stream (no Content-Range). */
export async function patch(c: Ctx, name: string, id: string): Promise<Response> {
  const cfg = config(c.env);
  checkBodyLimit(c, cfg.maxBodyBytes);
  const range = parseContentRange(c.req.header("Content-Range"));
  const length = contentLength(c);
  if (range && length !== null && range.end - range.start + 1 !== length) {
    throw oci("BLOB_UPLOAD_INVALID", `Content-Range ${range.start}-${range.end} covers ${range.end - range.start + 1} bytes but Content-Length is ${length}`);
  }
  const session = sessionStub(c, id);
  const state = await append(c, name, id, session, range ? range.start : null, false);
  return new Response(null, { status: 202, headers: progressHeaders(name, state.id, state.offset) });
}

/** PUT ?digest=: close the upload, optionally with a last chunk. */
export async function finish(c: Ctx, name: string, id: string): Promise<Response> {
  const claim = parseDigest(new URL(c.req.url).searchParams.get("digest"), "digest query parameter");
  const cfg = config(c.env);
  checkBodyLimit(c, cfg.maxBodyBytes);
  const range = parseContentRange(c.req.header("Content-Range"));
  const session = sessionStub(c, id);
  await append(c, name, id, session, range ? range.start : null, true, claim);
  return created(name, claim.digest);
}

/** GET: report progress. */
export async function status(c: Ctx, name: string, id: string): Promise<Response> {
  const s = await sessionStub(c, id).get(name, principalId(c));
  if (!s) throw unknownUpload();
  return new Response(null, { status: 204, headers: progressHeaders(name, s.id, s.offset) });
}

/** DELETE: cancel, aborting R2 parts. */
export async function cancel(c: Ctx, name: string, id: string): Promise<Response> {
  const ok = await sessionStub(c, id).cancel(name, principalId(c));
  if (!ok) throw unknownUpload();
  return new Response(null, { status: 204, headers: { "Content-Length": "0" } });
}

// ---- shared ---------------------------------------------------------------------------------

/**
 * Stream this request's body into the upload under the session's write lease; when `final`,
 * verify the claim and commit the blob (bytes → BlobStore → TrustStore), then end the session.
 */
async function append(c: Ctx, name: string, id: string, session: ReturnType<typeof sessionStub>, expectOffset: number | null, final: boolean, claim?: ParsedDigest): Promise<UploadState> {
  const cfg = config(c.env);
  const principal = principalId(c);
  const begun = await session.begin(name, principal, expectOffset);
  if (!begun.ok) {
    if (begun.reason === "unknown") throw unknownUpload();
    const msg = begun.reason === "busy"
      ? "another request is writing to this upload; retry after it completes"
      : `chunk starts at ${expectOffset} but the upload has ${begun.offset} bytes; send the next chunk from offset ${begun.offset}`;
    throw oci("RANGE_INVALID", msg, { offset: begun.offset }, 416, progressHeaders(name, id, begun.offset));
  }
  const { state, lease, reservedKey } = begun;
  const policy = digestPolicy(c.env, name);
  let committed = false;
  try {
    const algs = Object.keys(state.hashStates).length
      ? (Object.keys(state.hashStates) as ReturnType<typeof streamingAlgorithms>)
      : streamingAlgorithms(state.offset === 0 && claim ? claim : null, state.algorithms ?? []);
    const hashers = createHashers(algs, state.hashStates);
    const res = await ingest({
      bucket: c.env.BUCKET, layout: state.layout, offset: state.offset, partSize: state.partSize, hashers,
      body: c.req.raw.body, contentLength: contentLength(c), maxBytes: cfg.maxBodyBytes, final, keyPrefix: `data/${id}/`, reservedKey,
      register: async (add) => {
        if (!(await session.renew(lease, add))) throw oci("BLOB_UPLOAD_UNKNOWN", "upload session ended while this request was writing");
      },
    });
    if (!final) {
      const next = await session.commit(lease, { offset: res.offset, layout: res.layout, hashStates: saveHashers(hashers) });
      committed = true;
      if (!next) throw oci("BLOB_UPLOAD_UNKNOWN", "upload session ended while this request was writing");
      if (res.obsolete.length) await c.env.BUCKET.delete(res.obsolete).catch(() => {});
      return next;
    }
    if (res.layout.kind !== "single") throw new Error("final upload did not produce one object");
    const computed = await completeHashes(c.env.BUCKET, res.layout.key, claim!, finishHashers(hashers), policy);
    try {
      assertClaim(claim!, computed, policy);
    } catch (err) {
      // A failed close ends the upload, as in the reference registry.
      await session.finish(lease, null);
      committed = true;
      throw err;
    }
    const result = await commitBlob(c.env, name, { digest: claim!.digest, size: res.layout.size, r2Key: res.layout.key, contentSha256: computed.sha256! });
    await session.finish(lease, result.adoptedOffered ? result.r2Key : null);
    committed = true;
    return { ...state, offset: res.offset };
  } finally {
    if (!committed) await session.release(lease).catch(() => {});
  }
}

/**
 * Add the hash the claim still needs (an algorithm not known while streaming, or BLAKE3 for a
 * build-cache/v1 claim whose SHA-256 check failed) by reading the written object once.
 */
async function completeHashes(bucket: R2Bucket, key: string, claim: ParsedDigest, computed: Computed, policy: DigestPolicy): Promise<Computed> {
  const more = missingAlgorithm(claim, computed, policy);
  return more ? { ...computed, ...(await hashObject(bucket, key, more)) } : computed;
}

async function hashObject(bucket: R2Bucket, key: string, algorithm: ParsedDigest["algorithm"]): Promise<Computed> {
  const obj = await bucket.get(key);
  if (!obj) throw new Error(`object ${key} vanished`);
  const h = Hasher.create(algorithm);
  for await (const chunk of readChunks(obj.body)) h.update(chunk);
  return { [algorithm]: h.digestHex() };
}

function sessionStub(c: Ctx, id: string) {
  if (!UPLOAD_ID_RE.test(id)) throw unknownUpload();
  return uploadSessionFor(c.env, id);
}

function unknownUpload() {
  return oci("BLOB_UPLOAD_UNKNOWN", "upload session not found: it expired, was completed or cancelled, or belongs to another repository");
}

function created(name: string, digest: string): Response {
  return new Response(null, {
    status: 201,
    headers: { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest, "Content-Length": "0" },
  });
}

function uploadLocation(name: string, id: string) {
  return `/v2/${name}/blobs/uploads/${id}`;
}

function progressHeaders(name: string, id: string, offset: number): Record<string, string> {
  return {
    Location: uploadLocation(name, id),
    "Docker-Upload-UUID": id,
    Range: offset > 0 ? `0-${offset - 1}` : "0-0",
    "Content-Length": "0",
  };
}

function contentLength(c: Ctx): number | null {
  const v = c.req.header("Content-Length");
  if (v === undefined) return null;
  if (!/^\d+$/.test(v)) throw oci("BLOB_UPLOAD_INVALID", `invalid Content-Length "${v.slice(0, 40)}"`);
  return Number(v);
}

function checkBodyLimit(c: Ctx, max: number) {
  const len = contentLength(c);
  if (max > 0 && len !== null && len > max) throw tooLarge(max);
}

/** OCI sends "start-end"; tolerate the HTTP form "bytes start-end/total" too. */
export function parseContentRange(v: string | undefined): { start: number; end: number } | null {
  if (v === undefined) return null;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(v.trim());
  if (!m) throw oci("RANGE_INVALID", `invalid Content-Range "${v.slice(0, 60)}" (expected <start>-<end>)`, undefined, 416);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw oci("RANGE_INVALID", `invalid Content-Range "${v.slice(0, 60)}": end before start`, undefined, 416);
  return { start, end };
}
