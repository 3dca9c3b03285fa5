// OCI Distribution client flows used by the bench: monolithic and chunked pushes, pulls.
import { createReadStream } from "node:fs";
import { request, expectStatus, BenchError, StallError, incidents, bulkAgent, MiB } from "./http.mjs";

const OCTET = "application/octet-stream";
const READ_HWM = MiB; // file read chunk size for streamed bodies

function fileStream(path, start, endInclusive) {
  return createReadStream(path, { start, end: endInclusive, highWaterMark: READ_HWM });
}

function locationOf(res, base, what) {
  const loc = res.headers.location;
  if (!loc) throw new BenchError(`${what}: response has no Location header`);
  return new URL(loc, base);
}

function withDigest(url, digest) {
  const u = new URL(url);
  u.searchParams.set("digest", digest);
  return u;
}

/** POST /v2/<name>/blobs/uploads/ → upload URL. */
export async function startUpload(base, name, agent) {
  const res = await request(`${base}/v2/${name}/blobs/uploads/`, { method: "POST", agent, headers: { "Content-Length": "0" } });
  expectStatus(res, 202, `POST /v2/${name}/blobs/uploads/`);
  return locationOf(res, base, "POST uploads");
}

/**
 * Monolithic upload: POST, then PUT <location>?digest= with the whole body.
 * `src` is {path, size} (streamed from disk) or {buffer}.
 */
export async function pushMonolithic(base, name, src, digest, agent) {
  const loc = await startUpload(base, name, agent);
  const size = src.buffer ? src.buffer.length : src.size;
  const body = src.buffer ?? fileStream(src.path, 0, size - 1);
  const res = await request(withDigest(loc, digest), {
    method: "PUT",
    agent,
    body,
    headers: { "Content-Type": OCTET, "Content-Length": String(size) },
  });
  expectStatus(res, 201, "PUT upload?digest= (monolithic)");
  return res;
}

/** Single-request monolithic upload: POST /v2/<name>/blobs/uploads/?digest= with the body (expects 201). */
export async function pushPostDigest(base, name, src, digest, agent) {
  const size = src.buffer ? src.buffer.length : src.size;
  const body = src.buffer ?? fileStream(src.path, 0, size - 1);
  const url = new URL(`${base}/v2/${name}/blobs/uploads/`);
  url.searchParams.set("digest", digest);
  const res = await request(url, { method: "POST", agent, body, headers: { "Content-Type": OCTET, "Content-Length": String(size) } });
  expectStatus(res, 201, "POST uploads/?digest= (single-request monolithic)");
  return res;
}

/**
 * Chunked upload: POST, PATCH each chunk with Content-Range (following the newest Location each
 * time — distribution signs upload state into it), then PUT ?digest= with no body.
 * `chunkSizes(i)` returns the size of chunk i (so ragged patterns are possible).
 */
export async function pushChunked(base, name, src, digest, agent, chunkSizes) {
  let loc = await startUpload(base, name, agent);
  let offset = 0;
  let i = 0;
  while (offset < src.size) {
    const len = Math.min(chunkSizes(i++), src.size - offset);
    const end = offset + len - 1;
    const res = await request(loc, {
      method: "PATCH",
      agent,
      body: fileStream(src.path, offset, end),
      headers: { "Content-Type": OCTET, "Content-Length": String(len), "Content-Range": `${offset}-${end}` },
    });
    expectStatus(res, 202, `PATCH chunk ${i} (bytes ${offset}-${end})`);
    loc = locationOf(res, base, "PATCH");
    offset += len;
  }
  const res = await request(withDigest(loc, digest), { method: "PUT", agent, headers: { "Content-Length": "0" } });
  expectStatus(res, 201, "PUT upload?digest= (closing chunked upload)");
  return { chunks: i, res };
}

/** GET a blob (following up to 3 redirects), counting bytes and hashing them. */
export async function pullBlob(base, name, digest, agent) {
  let url = new URL(`${base}/v2/${name}/blobs/${digest}`);
  for (let hop = 0; hop < 4; hop++) {
    const res = await request(url, { agent, sink: "sha256", headers: { "Accept-Encoding": "gzip" } });
    if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.location) {
      url = new URL(res.headers.location, url);
      continue;
    }
    if (res.status !== 200) {
      const again = await request(url, { agent }); // re-fetch as text for a useful error
      expectStatus(again, 200, `GET blob ${digest}`);
    }
    if (res.headers["content-encoding"]) throw new BenchError(`GET blob came back with Content-Encoding: ${res.headers["content-encoding"]}`);
    return res;
  }
  throw new BenchError("GET blob: too many redirects");
}

export async function headBlob(base, name, digest, agent) {
  return request(`${base}/v2/${name}/blobs/${digest}`, { method: "HEAD", agent });
}

/**
 * GET with one retry on a fresh connection when the first attempt stalls (seen once with local
 * wrangler: a large GET right after a large PUT got no answer at all). The stall is recorded in
 * `incidents` and the timing covers the retry only.
 */
export async function getWithStallRetry(what, get, agent) {
  try {
    return { res: await get(agent), retried: false };
  } catch (err) {
    if (!(err instanceof StallError)) throw err;
    incidents.push(`${what}: ${err.message}; retried once on a new connection`);
    const fresh = bulkAgent();
    try {
      return { res: await get(fresh), retried: true };
    } finally {
      fresh.destroy();
    }
  }
}

/** Pull and check size + sha256; throws on mismatch. */
export async function pullAndVerify(base, name, digest, size, agent) {
  let t0 = performance.now();
  const { res } = await getWithStallRetry(`GET ${base}/v2/${name}/blobs/${digest.slice(0, 19)}…`, (a) => {
    t0 = performance.now();
    return pullBlob(base, name, digest, a);
  }, agent);
  const ms = performance.now() - t0;
  if (res.bytes !== size) throw new BenchError(`pulled ${res.bytes} bytes, expected ${size}`);
  if (`sha256:${res.sha256}` !== digest) throw new BenchError(`pulled sha256:${res.sha256}, expected ${digest}`);
  return { ms, bytes: res.bytes };
}
