// /v2/<name>/blobs/uploads/…: monolithic, chunked and streamed blob uploads, and mounts. Each
// handler parses the request, makes one call into the upload domain (src/storage/uploads.ts),
// and shapes the response.
import type { Ctx } from "../app";
import { config } from "../env";
import { oci } from "./errors";
import { isValidName, parseDigest, type ParsedDigest } from "./grammar";
import { tooLarge } from "../storage/ingest";
import { mountBlob } from "../storage/holders";
import {
  appendToUpload, cancelUpload, closeUpload, maxUploadBytes, openUpload, progressHeaders, unknownUpload, uploadOffset, uploadWhole,
  type UploadBody, type UploadRef,
} from "../storage/uploads";
import { parseUploadId } from "../storage/upload-ids";
import { principalId } from "./principal";
import { mayPull } from "../auth";
import { record } from "../audit/record";

// Moved to the upload domain; re-exported for the manifest routes.
export { digestPolicy } from "../storage/uploads";

const MIN_CHUNK = 5 * 1024 * 1024;

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
    const claim = parseDigest(digestParam);
    checkBodyLimit(c, cfg.maxBodyBytes);
    await uploadWhole(c.env, name, claim, { stream: c.req.raw.body, contentLength: contentLength(c) });
    return created(name, claim.digest);
  }
  checkBodyLimit(c, cfg.maxBodyBytes);
  // A client may declare the digest algorithm it will close with, so that hash is computed
  // (resumably) while the chunks stream instead of by a read at close (cloister extension).
  const declared = url.searchParams.get("digest-algorithm");
  const id = await openUpload(c.env, name, principalId(c), declared === "blake3" || declared === "sha512" ? [declared] : []);
  return new Response(null, {
    status: 202,
    headers: {
      ...progressHeaders(name, id, 0),
      "OCI-Chunk-Min-Length": String(MIN_CHUNK),
      // Never advertise chunks the body cap would refuse (a chunking client trusts this number).
      "OCI-Chunk-Max-Length": String(cfg.maxBodyBytes > 0 ? Math.min(cfg.chunkMaxBytes, cfg.maxBodyBytes) : cfg.chunkMaxBytes),
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


/** PATCH: append a chunk (Content-Range) or a stream (no Content-Range). */
export async function patch(c: Ctx, name: string, id: string): Promise<Response> {
  checkBodyLimit(c, config(c.env).maxBodyBytes);
  const body = uploadBody(c);
  const offset = await appendToUpload(c.env, await uploadRef(c, name, id), body);
  return new Response(null, { status: 202, headers: progressHeaders(name, id, offset) });
}

/** PUT ?digest=: close the upload, optionally with a last chunk. */
export async function finish(c: Ctx, name: string, id: string): Promise<Response> {
  const claim = parseDigest(new URL(c.req.url).searchParams.get("digest"), "digest query parameter");
  checkBodyLimit(c, config(c.env).maxBodyBytes);
  const body = uploadBody(c);
  await closeUpload(c.env, await uploadRef(c, name, id), body, claim);
  return created(name, claim.digest);
}

/** GET: report progress. */
export async function status(c: Ctx, name: string, id: string): Promise<Response> {
  const offset = await uploadOffset(c.env, await uploadRef(c, name, id));
  return new Response(null, { status: 204, headers: progressHeaders(name, id, offset) });
}

/** DELETE: cancel, aborting R2 parts. */
export async function cancel(c: Ctx, name: string, id: string): Promise<Response> {
  await cancelUpload(c.env, await uploadRef(c, name, id));
  return new Response(null, { status: 204, headers: { "Content-Length": "0" } });
}

// ---- parsing ---------------------------------------------------------------------------------

/** A malformed, forged, expired, or another repository's or principal's id is an unknown upload. */
async function uploadRef(c: Ctx, name: string, id: string): Promise<UploadRef> {
  const principal = principalId(c);
  const parsed = await parseUploadId(c.env, name, principal, id);
  if (!parsed) throw unknownUpload();
  return { ...parsed, repo: name, principal };
}

/**
 * The body and its declared length: Content-Length, or else (a chunked body) the length of its
 * Content-Range, which the bytes must then match exactly. When both are given they must agree.
 * Everything here is refused before a byte of the body is read.
 */
function uploadBody(c: Ctx): UploadBody {
  const cfg = config(c.env);
  const range = parseContentRange(c.req.header("Content-Range"), maxUploadBytes(c.env));
  const length = contentLength(c);
  if (!range) return { stream: c.req.raw.body, contentLength: length, start: null };
  const span = range.end - range.start + 1;
  if (length !== null && span !== length) {
    throw oci("BLOB_UPLOAD_INVALID", `Content-Range ${range.start}-${range.end} covers ${span} bytes but Content-Length is ${length}`);
  }
  if (length === null && cfg.maxBodyBytes > 0 && span > cfg.maxBodyBytes) {
    throw oci(
      "TOO_LARGE", `Content-Range ${range.start}-${range.end} declares a ${span}-byte chunk, over this registry's limit of ${cfg.maxBodyBytes} bytes per request; push the blob in chunks of at most that size`,
      { limit: cfg.maxBodyBytes }, 413,
    );
  }
  return { stream: c.req.raw.body, contentLength: span, lengthHeader: length === null ? "Content-Range" : "Content-Length", start: range.start };
}

function created(name: string, digest: string): Response {
  return new Response(null, {
    status: 201,
    headers: { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest, "Content-Length": "0" },
  });
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

/**
 * OCI sends "start-end"; tolerate the HTTP form "bytes start-end/total" too. A range ending at or
 * past `maxBytes` (the largest upload) can never be satisfied; this also refuses numbers too large
 * to be exact (past 2^53), since `maxBytes` is far below that.
 */
function parseContentRange(v: string | undefined, maxBytes: number): { start: number; end: number } | null {
  if (v === undefined) return null;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(v.trim());
  if (!m) throw oci("RANGE_INVALID", `invalid Content-Range "${v.slice(0, 60)}" (expected <start>-<end>)`, undefined, 416);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw oci("RANGE_INVALID", `invalid Content-Range "${v.slice(0, 60)}": end before start`, undefined, 416);
  if (end >= maxBytes) {
    throw oci("RANGE_INVALID", `Content-Range "${v.slice(0, 60)}" ends past the largest upload this registry accepts (${maxBytes} bytes)`, { limit: maxBytes }, 416);
  }
  return { start, end };
}
