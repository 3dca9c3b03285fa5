import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectBytes, expectError, patch, req, reqWith, sha256, startUpload, streamOf, withQuery } from "./helpers";
import { Hasher } from "../../src/digest/hasher";
import { DRAIN_MAX_BYTES, DRAIN_MAX_MS, SMALL_PUT_MAX } from "../../src/storage/ingest";
import { blake3 } from "@noble/hashes/blake3.js";
import { base64ToBytes, bytesToBase64 } from "../../src/util/encoding";
import type { UploadSession, UploadState } from "../../src/stores/upload-session";

const MiB = 1024 * 1024;
/** The upload id in a Location (signed ids are `<uuid>.<expiry>.<mac>`, docs/adr/0013). */
const locId = (location: string) => location.split("/").pop()!;
/** The session object's name and R2 prefix: the uuid (the whole id for a session opened at POST). */
const idOf = (location: string) => locId(location).split(".")[0];
const sessionStub = (id: string) => env.UPLOAD_SESSION.get(env.UPLOAD_SESSION.idFromName(id)) as DurableObjectStub<UploadSession>;
const OPEN_PRINCIPAL = "open";
const repoOf = (location: string) => location.slice("/v2/".length, location.indexOf("/blobs/uploads/"));
/** The session's state as the routes see it (open mode: the principal is "open"). */
async function sessionState(location: string): Promise<UploadState> {
  const s = await sessionStub(idOf(location)).get(repoOf(location), OPEN_PRINCIPAL);
  expect(s).not.toBeNull();
  return s as UploadState;
}
/** One SQL statement inside the session object (rows, counts). */
function sessionSql<T extends Record<string, SqlStorageValue>>(location: string, query: string, ...bindings: SqlStorageValue[]): Promise<T[]> {
  return runInDurableObject(sessionStub(idOf(location)), (_i, s) => s.storage.sql.exec<T>(query, ...bindings).toArray());
}

async function pull(repo: string, digest: string): Promise<Uint8Array> {
  const res = await req(`/v2/${repo}/blobs/${digest}`);
  expect(res.status).toBe(200);
  return new Uint8Array(await res.arrayBuffer());
}

describe("POST /v2/<name>/blobs/uploads/", () => {
  it("opens a session with Location, UUID, Range and chunk-length hints", async () => {
    const res = await req("/v2/up/a/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    const loc = res.headers.get("Location")!;
    // A signed, stateless id (docs/adr/0013): <uuid>.<expiry>.<mac>.
    expect(loc).toMatch(/^\/v2\/up\/a\/blobs\/uploads\/[0-9a-f-]{36}\.[0-9a-f]{8}\.[0-9a-f]{32}$/);
    expect(res.headers.get("Docker-Upload-UUID")).toBe(locId(loc));
    expect(res.headers.get("Range")).toBe("0-0");
    expect(Number(res.headers.get("OCI-Chunk-Min-Length"))).toBeGreaterThan(0);
    expect(Number(res.headers.get("OCI-Chunk-Max-Length"))).toBeGreaterThan(0);
    expect(res.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });

  it("accepts a monolithic upload with ?digest= and a body (201)", async () => {
    const data = bytes(12345, 3);
    const digest = await sha256(data);
    const res = await req(`/v2/up/mono/blobs/uploads/?digest=${digest}`, { method: "POST", body: data });
    expect(res.status).toBe(201);
    expect(res.headers.get("Location")).toBe(`/v2/up/mono/blobs/${digest}`);
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectBytes(await pull("up/mono", digest), data);
  });

  it("whole bodies with a Content-Length either side of SMALL_PUT_MAX (read whole / streamed, native SHA-256) store exact bytes and refuse wrong digests", async () => {
    for (const size of [SMALL_PUT_MAX, SMALL_PUT_MAX + 1, 3 * MiB + 7]) {
      const data = bytes(size, 40 + (size % 7));
      const digest = await sha256(data);
      const res = await req(`/v2/up/whole/blobs/uploads/?digest=${digest}`, { method: "POST", body: data });
      expect(res.status, String(size)).toBe(201);
      await expectBytes(await pull("up/whole", digest), data);
      // POST + PUT with the whole body: the same path behind a signed id.
      const other = bytes(size, 50 + (size % 7));
      const post = await req(`/v2/up/whole/blobs/uploads/`, { method: "POST" });
      const d2 = await sha256(other);
      expect((await req(`${post.headers.get("Location")}?digest=${d2}`, { method: "PUT", body: other })).status, String(size)).toBe(201);
      await expectBytes(await pull("up/whole", d2), other);
      const wrong = await sha256(bytes(10, size % 251));
      await expectError(req(`/v2/up/whole/blobs/uploads/?digest=${wrong}`, { method: "POST", body: data }), 400, "DIGEST_INVALID");
    }
  });

  it("accepts a monolithic upload larger than a part (multipart path)", async () => {
    const data = bytes(11 * MiB + 5, 4);
    const digest = await sha256(data);
    const res = await req(`/v2/up/mono/blobs/uploads/?digest=${digest}`, { method: "POST", body: streamOf(data, 1 << 20), duplex: "half" } as RequestInit);
    expect(res.status).toBe(201);
    await expectBytes(await pull("up/mono", digest), data);
  });

  it("rejects a monolithic upload whose bytes do not match, storing nothing", async () => {
    const data = bytes(100, 5);
    const wrong = await sha256(bytes(100, 6));
    const before = (await env.BUCKET.list({ prefix: "data/" })).objects.length;
    const msg = await expectError(req(`/v2/up/mono/blobs/uploads/?digest=${wrong}`, { method: "POST", body: data }), 400, "DIGEST_INVALID");
    expect(msg).toContain(wrong);
    expect(msg).toContain((await sha256(data)).slice(7));
    expect((await env.BUCKET.list({ prefix: "data/" })).objects.length).toBe(before);
    await expectError(req(`/v2/up/mono/blobs/${wrong}`, { method: "HEAD" }), 404, "BLOB_UNKNOWN").catch(async () => {
      // HEAD has no body; check the status alone
      expect((await req(`/v2/up/mono/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
    });
  });

  it("rejects unsupported or malformed digests with 400 DIGEST_INVALID", async () => {
    await expectError(req(`/v2/up/a/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e`, { method: "POST", body: "x" }), 400, "DIGEST_INVALID");
    await expectError(req(`/v2/up/a/blobs/uploads/?digest=sha256:abc`, { method: "POST", body: "x" }), 400, "DIGEST_INVALID");
    await expectError(req(`/v2/up/a/blobs/uploads/?digest=nonsense`, { method: "POST", body: "x" }), 400, "DIGEST_INVALID");
  });

  it("accepts sha512 digests, monolithic and chunked", async () => {
    const data = bytes(70000, 8);
    const d = new Uint8Array(await crypto.subtle.digest("SHA-512", data));
    const digest = "sha512:" + [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
    expect((await req(`/v2/up/sha512/blobs/uploads/?digest=${digest}`, { method: "POST", body: data })).status).toBe(201);
    await expectBytes(await pull("up/sha512", digest), data);
    const loc = await startUpload("up/sha512b");
    expect((await patch(loc, data.subarray(0, 1000), 0)).status).toBe(202);
    const res = await req(withQuery(loc, `digest=${digest}`), { method: "PUT", body: data.subarray(1000), headers: { "Content-Range": `1000-${data.length - 1}` } });
    expect(res.status).toBe(201);
    await expectBytes(await pull("up/sha512b", digest), data);
  });

  it("refuses bad repository names with 400 NAME_INVALID", async () => {
    await expectError(req("/v2/Upper/blobs/uploads/", { method: "POST" }), 400, "NAME_INVALID");
    await expectError(req("/v2/a//b/blobs/uploads/", { method: "POST" }), 400, "NAME_INVALID");
    await expectError(req("/v2/a/-b/blobs/uploads/", { method: "POST" }), 400, "NAME_INVALID");
    await expectError(req(`/v2/${"a".repeat(256)}/blobs/uploads/`, { method: "POST" }), 400, "NAME_INVALID");
    await expectError(req("/v2/a%2Fb/blobs/uploads/", { method: "POST" }), 400, "NAME_INVALID");
  });
});

describe("chunked uploads", () => {
  it("assembles ragged chunk sizes (1 byte, 5 MiB + 3, 7 MiB, tiny, rest) across R2 parts", async () => {
    const data = bytes(19 * MiB + 77, 11);
    const digest = await sha256(data);
    const loc = await startUpload("up/ragged");
    const sizes = [1, 5 * MiB + 3, 7 * MiB, 2, 13];
    let off = 0;
    for (const size of sizes) {
      const res = await patch(loc, data.subarray(off, off + size), off);
      expect(res.status).toBe(202);
      off += size;
      expect(res.headers.get("Range")).toBe(`0-${off - 1}`);
      expect(res.headers.get("Docker-Upload-UUID")).toBe(locId(loc));
    }
    const res = await req(withQuery(loc, `digest=${digest}`), { method: "PUT", body: data.subarray(off), headers: { "Content-Range": `${off}-${data.length - 1}` } });
    expect(res.status).toBe(201);
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(res.headers.get("Location")).toBe(`/v2/up/ragged/blobs/${digest}`);
    await expectBytes(await pull("up/ragged", digest), data);
    // the session is gone once the blob is committed
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("carries the SHA-256 state across PATCH requests (resumable hash saved in the session)", async () => {
    const data = bytes(6 * MiB + 9, 12);
    const loc = await startUpload("up/resume");
    const cut = 5 * MiB + 1;
    expect((await patch(loc, data.subarray(0, cut), 0)).status).toBe(202);
    const state = await sessionState(loc);
    expect(state.offset).toBe(cut);
    const h = Hasher.resume("sha256", base64ToBytes(state.hashStates.sha256));
    expect("sha256:" + h.digestHex()).toBe(await sha256(data.subarray(0, cut)));
  });

  it("answers an out-of-order chunk with 416 and the current Range, and stays usable", async () => {
    const data = bytes(3000, 13);
    const digest = await sha256(data);
    const loc = await startUpload("up/order");
    expect((await patch(loc, data.subarray(0, 1000), 0)).status).toBe(202);
    const skip = await patch(loc, data.subarray(2000, 3000), 2000);
    expect(skip.status).toBe(416);
    expect(skip.headers.get("Range")).toBe("0-999");
    expect(skip.headers.get("Location")).toBe(loc);
    expect((await skip.json() as { errors: { code: string }[] }).errors[0].code).toBe("BLOB_UPLOAD_INVALID");
    const retry = await patch(loc, data.subarray(0, 1000), 0); // a retried earlier range
    expect(retry.status).toBe(416);
    expect(retry.headers.get("Range")).toBe("0-999");
    expect((await patch(loc, data.subarray(1000, 3000), 1000)).status).toBe(202);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("up/order", digest), data);
  });

  it("rejects malformed Content-Range and a Content-Range that disagrees with the body length", async () => {
    const loc = await startUpload("up/badrange");
    await expectError(req(loc, { method: "PATCH", headers: { "Content-Range": "abc" }, body: "xyz" }), 416, "BLOB_UPLOAD_INVALID");
    await expectError(req(loc, { method: "PATCH", headers: { "Content-Range": "0-9" }, body: "xyz" }), 400, "BLOB_UPLOAD_INVALID");
    const st = await req(loc);
    expect(st.status).toBe(204);
    expect(st.headers.get("Range")).toBe("0-0");
  });

  it("takes a streamed PATCH without Content-Length or Content-Range (docker style)", async () => {
    const data = bytes(12 * MiB + 321, 14);
    const digest = await sha256(data);
    const loc = await startUpload("up/stream");
    const res = await req(loc, { method: "PATCH", body: streamOf(data), duplex: "half" } as RequestInit);
    expect(res.status).toBe(202);
    expect(res.headers.get("Range")).toBe(`0-${data.length - 1}`);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("up/stream", digest), data);
  });

  it("mixes a streamed PATCH with Content-Range chunks", async () => {
    const data = bytes(8 * MiB, 15);
    const digest = await sha256(data);
    const loc = await startUpload("up/mixed");
    expect((await req(loc, { method: "PATCH", body: streamOf(data.subarray(0, 3 * MiB)), duplex: "half" } as RequestInit)).status).toBe(202);
    expect((await patch(loc, data.subarray(3 * MiB, 6 * MiB + 1), 3 * MiB)).status).toBe(202);
    expect((await req(loc, { method: "PATCH", body: data.subarray(6 * MiB + 1) })).status).toBe(202);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("up/mixed", digest), data);
  });

  it("GET reports progress with 204, Range and Location", async () => {
    const loc = await startUpload("up/status");
    expect((await patch(loc, bytes(10), 0)).status).toBe(202);
    const res = await req(loc);
    expect(res.status).toBe(204);
    expect(res.headers.get("Range")).toBe("0-9");
    expect(res.headers.get("Location")).toBe(loc);
  });

  it("PUT with a wrong digest fails with DIGEST_INVALID and ends the session", async () => {
    const loc = await startUpload("up/wrong");
    expect((await patch(loc, bytes(100), 0)).status).toBe(202);
    await expectError(req(withQuery(loc, `digest=${await sha256(bytes(5))}`), { method: "PUT" }), 400, "DIGEST_INVALID");
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    const left = await env.BUCKET.list({ prefix: `data/${idOf(loc)}/` });
    expect(left.objects).toHaveLength(0);
  });

  it("PUT without a digest is a DIGEST_INVALID error and keeps the session", async () => {
    const loc = await startUpload("up/nodigest");
    await expectError(req(loc, { method: "PUT" }), 400, "DIGEST_INVALID");
    expect((await req(loc)).status).toBe(204);
  });

  it("an empty blob can be uploaded", async () => {
    const digest = await sha256(new Uint8Array(0));
    const loc = await startUpload("up/empty");
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    const res = await req(`/v2/up/empty/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Length")).toBe("0");
  });
});

describe("session lifecycle", () => {
  it("DELETE cancels with 204 and aborts the R2 parts", async () => {
    const loc = await startUpload("up/cancel");
    expect((await patch(loc, bytes(6 * MiB, 21), 0)).status).toBe(202);
    expect((await patch(loc, bytes(6 * MiB, 22), 6 * MiB)).status).toBe(202);
    const id = idOf(loc);
    const state = await sessionState(loc);
    expect(state.layout.kind).toBe("multipart");
    const parts = (await sessionSql<{ partNumber: number; etag: string }>(loc, "SELECT number AS partNumber, etag FROM parts ORDER BY number")).map((p) => ({ ...p }));
    expect(parts.length).toBe(2);
    const res = await req(loc, { method: "DELETE" });
    expect(res.status).toBe(204);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects).toHaveLength(0);
    if (state.layout.kind === "multipart") {
      const mp = env.BUCKET.resumeMultipartUpload(state.layout.key, state.layout.uploadId);
      await expect(mp.complete(parts)).rejects.toThrow();
    }
  });

  it("unknown, malformed and foreign sessions are 404 BLOB_UPLOAD_UNKNOWN", async () => {
    await expectError(req(`/v2/up/x/blobs/uploads/${crypto.randomUUID()}`), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(`/v2/up/x/blobs/uploads/not-a-uuid`, { method: "PATCH", body: "x" }), 404, "BLOB_UPLOAD_UNKNOWN");
    const loc = await startUpload("up/owner");
    const foreign = loc.replace("/v2/up/owner/", "/v2/up/other/");
    await expectError(req(foreign), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(foreign, bytes(10), 0), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(foreign, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await req(loc)).status).toBe(204);
  });

  it("abandoned sessions expire by alarm: parts aborted, objects and state removed", async () => {
    // A session opened at POST (a declared algorithm): a signed id's session expires with the id itself.
    const post = await req("/v2/up/expire/blobs/uploads/?digest-algorithm=sha512", { method: "POST" });
    const loc = post.headers.get("Location")!;
    expect(locId(loc)).toMatch(/^[0-9a-f-]{36}$/);
    expect((await patch(loc, bytes(6 * MiB, 31), 0)).status).toBe(202);
    expect((await patch(loc, bytes(100, 32), 6 * MiB)).status).toBe(202);
    const id = idOf(loc);
    const stub = sessionStub(id);
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects.length).toBeGreaterThan(0);
    await sessionSql(loc, "UPDATE session SET expires_at = ?", Date.now() - 1);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects).toHaveLength(0);
  });

  it("a session's alarm is set from UPLOAD_TTL_SECONDS (a signed id's expiry, set by its first PATCH)", async () => {
    const before = Date.now();
    const loc = await startUpload("up/ttl");
    expect((await patch(loc, bytes(10), 0)).status).toBe(202);
    const alarm = await runInDurableObject(sessionStub(idOf(loc)), (_i, s) => s.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(alarm! - before).toBeGreaterThan(86400 * 1000 - 60_000);
  });
});

describe("body cap (emulating production's request limit)", () => {
  const cap = { MAX_BODY_BYTES: String(1024 * 1024) };
  it("413 SIZE_INVALID telling the client to push in chunks", async () => {
    const data = bytes(2 * 1024 * 1024, 41);
    const digest = await sha256(data);
    const r1 = await reqWith(cap, `/v2/up/cap/blobs/uploads/?digest=${digest}`, { method: "POST", body: data });
    expect(r1.status).toBe(413);
    const body = (await r1.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0].code).toBe("SIZE_INVALID");
    expect(body.errors[0].message).toMatch(/chunk/i);
  });

  it("advertises OCI-Chunk-Max-Length no larger than the cap (chunking clients trust it)", async () => {
    const res = await reqWith(cap, "/v2/up/cap/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    expect(Number(res.headers.get("OCI-Chunk-Max-Length"))).toBe(1024 * 1024);
    const uncapped = await req("/v2/up/cap/blobs/uploads/", { method: "POST" });
    expect(Number(uncapped.headers.get("OCI-Chunk-Max-Length"))).toBe(90 * 1024 * 1024);
  });

  it("a streamed body that grows past the cap is refused and the session stays usable", async () => {
    const loc = (await reqWith(cap, "/v2/up/cap2/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const big = await reqWith(cap, loc, { method: "PATCH", body: streamOf(bytes(3 * 1024 * 1024, 42)), duplex: "half" } as RequestInit);
    expect(big.status).toBe(413);
    await big.arrayBuffer();
    const ok = await reqWith(cap, loc, { method: "PATCH", headers: { "Content-Range": "0-99" }, body: bytes(100, 43) });
    expect(ok.status).toBe(202);
    expect(ok.headers.get("Range")).toBe("0-99");
  });

  it("chunks under the cap assemble a blob larger than the cap", async () => {
    const data = bytes(3 * 1024 * 1024 + 5, 44);
    const digest = await sha256(data);
    const loc = (await reqWith(cap, "/v2/up/cap3/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    for (let off = 0; off < data.length; off += 1024 * 1024) {
      const chunk = data.subarray(off, Math.min(off + 1024 * 1024, data.length));
      expect((await reqWith(cap, loc, { method: "PATCH", headers: { "Content-Range": `${off}-${off + chunk.length - 1}` }, body: chunk })).status).toBe(202);
    }
    expect((await reqWith(cap, withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("up/cap3", digest), data);
  });
});

describe("deduplication", () => {
  it("stores a blob pushed twice, or into two repositories, once", async () => {
    const data = bytes(4096, 51);
    const digest = await pushBlobCounted("up/dup1", data);
    const count = (await env.BUCKET.list({ prefix: "data/" })).objects.length;
    await pushBlobCounted("up/dup1", data);
    await pushBlobCounted("up/dup2", data);
    expect((await env.BUCKET.list({ prefix: "data/" })).objects.length).toBe(count);
    await expectBytes(await pull("up/dup2", digest), data);
  });
});

async function pushBlobCounted(repo: string, data: Uint8Array) {
  const digest = await sha256(data);
  const res = await exports.default.fetch(new Request(`http://registry.test/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data }));
  expect(res.status).toBe(201);
  return digest;
}

describe("build-cache/v1 overload switch (BLAKE3_IN_SHA256)", () => {
  const b3claim = (data: Uint8Array) => "sha256:" + [...blake3(data)].map((b) => b.toString(16).padStart(2, "0")).join("");

  it("accepts BLAKE3 claims only in repositories matching the configured globs", async () => {
    const data = bytes(5000, 61);
    const vars = { BLAKE3_IN_SHA256: "cache/**, ci/*-cache" };
    const ok1 = await reqWith(vars, `/v2/cache/a/b/blobs/uploads/?digest=${b3claim(data)}`, { method: "POST", body: data });
    expect(ok1.status).toBe(201);
    const ok2 = await reqWith(vars, `/v2/ci/x-cache/blobs/uploads/?digest=${b3claim(data)}`, { method: "POST", body: data });
    expect(ok2.status).toBe(201);
    const refused = await reqWith(vars, `/v2/ci/x/blobs/uploads/?digest=${b3claim(data)}`, { method: "POST", body: data });
    expect(refused.status).toBe(400);
    // genuine SHA-256 still works everywhere
    expect((await reqWith(vars, `/v2/ci/x/blobs/uploads/?digest=${await sha256(data)}`, { method: "POST", body: data })).status).toBe(201);
  });

  it("false turns the overload off but keeps native blake3: digests", async () => {
    const data = bytes(3000, 62);
    const vars = { BLAKE3_IN_SHA256: "false" };
    expect((await reqWith(vars, `/v2/off/a/blobs/uploads/?digest=${b3claim(data)}`, { method: "POST", body: data })).status).toBe(400);
    const native = b3claim(data).replace("sha256:", "blake3:");
    expect((await reqWith(vars, `/v2/off/a/blobs/uploads/?digest=${native}`, { method: "POST", body: data })).status).toBe(201);
    const loc = (await reqWith(vars, "/v2/off/b/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    expect((await reqWith(vars, loc, { method: "PATCH", body: data })).status).toBe(202);
    expect((await reqWith(vars, withQuery(loc, `digest=${native}`), { method: "PUT" })).status).toBe(201);
    const got = await req(`/v2/off/b/blobs/${native}`);
    expect(got.headers.get("Docker-Content-Digest")).toBe(native);
    await expectBytes(new Uint8Array(await got.arrayBuffer()), data);
  });
});

describe("BLAKE3 verification cost", () => {
  const b3 = (data: Uint8Array) => [...blake3(data)].map((b) => b.toString(16).padStart(2, "0")).join("");

  it("ordinary uploads hash only SHA-256 while streaming; a BLAKE3 claim is still verified at close", async () => {
    const data = bytes(6 * MiB + 1, 71);
    const loc = await startUpload("bc/lazy");
    expect((await patch(loc, data.subarray(0, 5 * MiB + 7), 0)).status).toBe(202);
    const state = await sessionState(loc);
    expect(Object.keys(state.hashStates)).toEqual(["sha256"]);
    expect((await patch(loc, data.subarray(5 * MiB + 7), 5 * MiB + 7)).status).toBe(202);
    const res = await req(withQuery(loc, `digest=sha256:${b3(data)}`), { method: "PUT" });
    expect(res.status).toBe(201);
    await expectBytes(await pull("bc/lazy", `sha256:${b3(data)}`), data);
  });

  it("a chunked upload that declares digest-algorithm=blake3 carries resumable BLAKE3 state across PATCHes", async () => {
    const data = bytes(5 * MiB + 99, 72);
    const res = await req("/v2/bc/declared/blobs/uploads/?digest-algorithm=blake3", { method: "POST" });
    const loc = res.headers.get("Location")!;
    const cut = 5 * MiB + 1;
    expect((await patch(loc, data.subarray(0, cut), 0)).status).toBe(202);
    const state = await sessionState(loc);
    expect(Object.keys(state.hashStates).sort()).toEqual(["blake3", "sha256"]);
    expect(Hasher.resume("blake3", base64ToBytes(state.hashStates.blake3)).digestHex()).toBe(b3(data.subarray(0, cut)));
    expect((await patch(loc, data.subarray(cut), cut)).status).toBe(202);
    expect((await req(withQuery(loc, `digest=sha256:${b3(data)}`), { method: "PUT" })).status).toBe(201);
  });
});

/** A request body the test feeds by hand, to keep a PATCH streaming for as long as it likes. */
function manualStream() {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({ start: (c) => { ctl = c; } });
  return { stream, push: (b: Uint8Array) => ctl.enqueue(b), end: () => ctl.close() };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until some request holds the upload's write lease. */
async function leaseTaken(loc: string) {
  for (let i = 0; i < 200; i++) {
    const [row] = await sessionSql<{ t: string | null }>(loc, "SELECT lease_token AS t FROM session");
    if (row?.t) return;
    await sleep(10);
  }
  throw new Error("no request took the lease");
}

describe("write leases: busy is retryable, a dead writer's lease lapses (issue 9 defect 6)", () => {
  it("a PATCH while another writer holds the lease gets 503 with Retry-After and Range, never 416", async () => {
    const loc = await startUpload("lease/busy");
    expect((await patch(loc, bytes(100, 81), 0)).status).toBe(202);
    // A writer that took the lease (as a crashed PATCH leaves it): 20 s, the default lease.
    const taken = await sessionStub(idOf(loc)).begin(repoOf(loc), OPEN_PRINCIPAL, null, { leaseMs: 20_000, final: false });
    expect(taken.ok).toBe(true);
    const res = await patch(loc, bytes(50, 82), 100);
    expect(res.status).toBe(503);
    const retryAfter = Number(res.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(20);
    expect(res.headers.get("Range")).toBe("0-99");
    expect(res.headers.get("Location")).toBe(loc);
    const msg = await expectError(res, 503, "TOOMANYREQUESTS");
    expect(msg).toMatch(/another request is writing to this upload; retry in \d+ s/);
    // the close is refused the same way while the lease is held
    expect((await req(withQuery(loc, `digest=${await sha256(bytes(100, 81))}`), { method: "PUT" })).status).toBe(503);
    // a wrong offset is still 416 once the writer is gone
    if (taken.ok) await sessionStub(idOf(loc)).release(taken.lease);
    expect((await patch(loc, bytes(50, 82), 70)).status).toBe(416);
    expect((await patch(loc, bytes(50, 82), 100)).status).toBe(202);
  });

  it("a concurrent PATCH during a live streaming PATCH gets 503, and the first one completes", async () => {
    const data = bytes(3 * MiB, 83);
    const loc = await startUpload("lease/concurrent");
    const body = manualStream();
    const first = req(loc, { method: "PATCH", body: body.stream, duplex: "half" } as RequestInit);
    body.push(data.slice(0, MiB));
    await leaseTaken(loc);
    const second = await patch(loc, bytes(10, 84), 0);
    expect(second.status).toBe(503);
    expect(Number(second.headers.get("Retry-After"))).toBeGreaterThan(0);
    await second.arrayBuffer();
    body.push(data.slice(MiB));
    body.end();
    const done = await first;
    expect(done.status).toBe(202);
    expect(done.headers.get("Range")).toBe(`0-${data.length - 1}`);
    expect((await req(withQuery(loc, `digest=${await sha256(data)}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("lease/concurrent", await sha256(data)), data);
  });

  it("the lease of a writer that vanished lapses after UPLOAD_LEASE_SECONDS, and the upload resumes from GET's Range", async () => {
    const vars = { UPLOAD_LEASE_SECONDS: "1" };
    const data = bytes(7 * MiB + 11, 85);
    const digest = await sha256(data);
    const loc = (await reqWith(vars, "/v2/lease/lapse/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const cut = 6 * MiB;
    expect((await reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": `0-${cut - 1}` }, body: data.subarray(0, cut) })).status).toBe(202);
    // A writer takes the lease for the configured time and dies: it never renews or releases.
    const taken = await sessionStub(idOf(loc)).begin(repoOf(loc), OPEN_PRINCIPAL, cut, { leaseMs: 1000, final: false });
    expect(taken.ok).toBe(true);
    const started = Date.now();
    const busy = await reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": `${cut}-${data.length - 1}` }, body: data.subarray(cut) });
    expect(busy.status).toBe(503);
    expect(busy.headers.get("Retry-After")).toBe("1");
    await busy.arrayBuffer();
    await sleep(1100 - (Date.now() - started));
    const st = await reqWith(vars, loc);
    expect(st.status).toBe(204);
    expect(st.headers.get("Range")).toBe(`0-${cut - 1}`);
    const resumed = await reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": `${cut}-${data.length - 1}` }, body: data.subarray(cut) });
    expect(resumed.status).toBe(202);
    expect((await reqWith(vars, withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("lease/lapse", digest), data);
  });

  it("a slow writer keeps its lease while it streams for several lease times", async () => {
    const vars = { UPLOAD_LEASE_SECONDS: "2" };
    const data = bytes(64 * 1024, 86);
    const loc = (await reqWith(vars, "/v2/lease/slow/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const body = manualStream();
    const first = reqWith(vars, loc, { method: "PATCH", body: body.stream, duplex: "half" } as RequestInit);
    body.push(data.slice(0, 1024));
    await leaseTaken(loc);
    // 5 s of trickling bytes: two and a half times the lease.
    for (let i = 1; i <= 10; i++) {
      await sleep(500);
      body.push(data.slice(i * 1024, (i + 1) * 1024));
    }
    const other = await reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": "0-9" }, body: bytes(10, 87) });
    expect(other.status).toBe(503);
    await other.arrayBuffer();
    body.push(data.slice(11 * 1024));
    body.end();
    const done = await first;
    expect(done.status).toBe(202);
    expect(done.headers.get("Range")).toBe(`0-${data.length - 1}`);
  });
  it("a writer whose lease was taken over commits nothing and gets 503; what it wrote is deleted", async () => {
    const vars = { UPLOAD_LEASE_SECONDS: "1" };
    const loc = (await reqWith(vars, "/v2/lease/taken/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    expect((await reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": "0-99" }, body: bytes(100, 88) })).status).toBe(202);
    const body = manualStream();
    const first = reqWith(vars, loc, { method: "PATCH", body: body.stream, duplex: "half" } as RequestInit);
    body.push(bytes(6 * MiB, 89));
    await leaseTaken(loc);
    // Another request takes the upload over (as if this writer had stalled past its lease).
    await sessionSql(loc, "UPDATE session SET lease_token = 'someone-else', lease_until = ?", Date.now() + 60_000);
    await sleep(600); // a renewal tick (every 250 ms) notices
    body.push(bytes(MiB, 90));
    body.end();
    const res = await first;
    const msg = await expectError(res, 503, "TOOMANYREQUESTS");
    expect(msg).toContain("lost its write lease");
    await sessionSql(loc, "UPDATE session SET lease_token = NULL, lease_until = 0");
    expect((await reqWith(vars, loc)).headers.get("Range")).toBe("0-99");
    const objects = await sessionSql<{ key: string }>(loc, "SELECT key FROM objects");
    const state = await sessionState(loc);
    expect(state.layout.kind).toBe("single");
    expect(objects.map((o) => o.key)).toEqual([(state.layout as { key: string }).key]);
    const stored = await env.BUCKET.list({ prefix: `data/${idOf(loc)}/` });
    expect(stored.objects.map((o: R2Object) => o.key)).toEqual([(state.layout as { key: string }).key]);
  });
});

describe("bounded session state (issue 16)", () => {
  it("keeps one row per part and per live object, however many PATCHes came", async () => {
    const data = bytes(24 * MiB + 5, 91);
    const loc = await startUpload("bounded/rows");
    const chunk = 3 * MiB;
    for (let off = 0; off < data.length; off += chunk) {
      const piece = data.subarray(off, Math.min(off + chunk, data.length));
      expect((await patch(loc, piece, off)).status).toBe(202);
    }
    const state = await sessionState(loc);
    expect(state.layout.kind).toBe("multipart");
    if (state.layout.kind !== "multipart") return;
    // 24 MiB + 5 in 5 MiB test parts: 4 full parts and a tail.
    expect(state.layout.partCount).toBe(4);
    expect(state.chunks).toBe(9);
    const parts = await sessionSql<{ n: number }>(loc, "SELECT count(*) AS n FROM parts");
    expect(parts[0].n).toBe(4);
    // Only the multipart upload and the current tail are tracked: superseded tails and unused
    // reserved keys were forgotten (and deleted from R2).
    const objects = await sessionSql<{ key: string }>(loc, "SELECT key FROM objects ORDER BY key");
    expect(objects.map((o) => o.key).sort()).toEqual([state.layout.key, state.layout.tail!.key].sort());
    const stored = await env.BUCKET.list({ prefix: `data/${idOf(loc)}/` });
    expect(stored.objects.map((o: R2Object) => o.key)).toEqual([state.layout.tail!.key]);
    // The session row holds no list that grows with the upload.
    const [row] = await sessionSql<{ n: number }>(loc, "SELECT length(layout) + length(hash_states) + length(algorithms) AS n FROM session");
    expect(row.n).toBeLessThan(1024);
    const digest = await sha256(data);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("bounded/rows", digest), data);
  });

  it("a PATCH that fails mid-body deletes what it wrote and leaves no rows behind", async () => {
    const cap = { MAX_BODY_BYTES: String(6 * MiB) };
    const loc = (await reqWith(cap, "/v2/bounded/fail/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const big = await reqWith(cap, loc, { method: "PATCH", body: streamOf(bytes(8 * MiB, 92)), duplex: "half" } as RequestInit);
    expect(big.status).toBe(413);
    await big.arrayBuffer();
    expect(await sessionSql(loc, "SELECT key FROM objects")).toEqual([]);
    expect((await env.BUCKET.list({ prefix: `data/${idOf(loc)}/` })).objects).toHaveLength(0);
    // A signed upload refused before its first write has no session row at all (docs/adr/0013).
    const [row] = await sessionSql<{ t: string | null }>(loc, "SELECT lease_token AS t FROM session");
    expect(row?.t ?? null).toBeNull();
  });

  it("refuses appends past MAX_UPLOAD_CHUNKS with 400 and a clear message, but still closes", async () => {
    const data = bytes(30, 93);
    const loc = await startUpload("bounded/chunks");
    expect((await patch(loc, data.subarray(0, 10), 0)).status).toBe(202);
    await sessionSql(loc, "UPDATE session SET chunks = 10000");
    const res = await patch(loc, data.subarray(10, 20), 10);
    expect(res.headers.get("Range")).toBe("0-9");
    const msg = await expectError(res, 400, "BLOB_UPLOAD_INVALID");
    expect(msg).toContain("10000 chunks");
    const digest = await sha256(data.subarray(0, 30));
    const close = await req(withQuery(loc, `digest=${digest}`), { method: "PUT", headers: { "Content-Range": "10-29" }, body: data.subarray(10) });
    expect(close.status).toBe(201);
  });

  it("imports a session written by the previous whole-state layout", async () => {
    const loc = await startUpload("bounded/legacy");
    const id = idOf(loc);
    const data = bytes(6 * MiB + 3, 94);
    // Rebuild what the old code kept: one multipart part and a tail object, keys in a list.
    const key = `data/${id}/legacy-mp`;
    const mp = await env.BUCKET.createMultipartUpload(key);
    const part = await mp.uploadPart(1, data.subarray(0, 5 * MiB));
    const tailKey = `data/${id}/legacy-tail`;
    await env.BUCKET.put(tailKey, data.subarray(5 * MiB));
    const sha = Hasher.create("sha256");
    sha.update(data);
    await runInDurableObject(sessionStub(id), async (inst, s) => {
      const now = Date.now();
      await s.storage.put("state", {
        id, repo: "bounded/legacy", principal: OPEN_PRINCIPAL, createdAt: now, expiresAt: now + 3600_000, offset: data.length, partSize: 5 * MiB,
        algorithms: [], hashStates: { sha256: bytesToBase64(sha.save()) }, keys: [key, tailKey], multiparts: { [key]: mp.uploadId }, lease: null,
        layout: { kind: "multipart", key, uploadId: mp.uploadId, parts: [part], tail: { key: tailKey, size: data.length - 5 * MiB } },
      });
      s.storage.sql.exec("DELETE FROM session");
      await (inst as unknown as { importLegacy(): Promise<void> }).importLegacy();
    });
    expect((await req(loc)).headers.get("Range")).toBe(`0-${data.length - 1}`);
    expect((await sessionState(loc)).layout).toMatchObject({ kind: "multipart", partCount: 1 });
    // the imported SHA-256 state carries on: closing verifies the whole blob
    const digest = await sha256(data);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("bounded/legacy", digest), data);
  });
});

describe("Content-Range without Content-Length (a chunked PATCH): the range's length is the body's", () => {
  const chunked = (loc: string, range: string, data: Uint8Array, vars: Record<string, string> = {}) =>
    reqWith(vars, loc, { method: "PATCH", headers: { "Content-Range": range }, body: streamOf(data), duplex: "half" } as RequestInit);
  /** Nothing appended: offset 0, no objects in R2 or in the session, lease free. */
  async function untouched(loc: string, range = "0-0") {
    expect((await req(loc)).headers.get("Range")).toBe(range);
    if (range === "0-0") {
      expect((await env.BUCKET.list({ prefix: `data/${idOf(loc)}/` })).objects).toHaveLength(0);
      expect(await sessionSql(loc, "SELECT key FROM objects")).toEqual([]);
    }
    // A signed upload refused before its first write has no session row at all (docs/adr/0013).
    const [row] = await sessionSql<{ t: string | null }>(loc, "SELECT lease_token AS t FROM session");
    expect(row?.t ?? null).toBeNull();
  }

  it("a body shorter than the range is refused with 400 naming Content-Range; nothing is appended", async () => {
    const loc = await startUpload("crange/short");
    const msg = await expectError(chunked(loc, "0-99", bytes(50, 110)), 400, "BLOB_UPLOAD_INVALID");
    expect(msg).toMatch(/Content-Range/);
    expect(msg).toMatch(/50 of 100/);
    await untouched(loc);
  });

  it("a body longer than the range is refused with 400 naming Content-Range; nothing is appended", async () => {
    const loc = await startUpload("crange/long");
    const msg = await expectError(chunked(loc, "0-9", bytes(3 * MiB, 111)), 400, "BLOB_UPLOAD_INVALID");
    expect(msg).toMatch(/longer than the 10 bytes declared by Content-Range/);
    await untouched(loc);
  });

  it("after earlier chunks (multipart with a tail), a mismatched chunk commits nothing and a matching one continues", async () => {
    const data = bytes(7 * MiB + 123, 112);
    const digest = await sha256(data);
    const loc = await startUpload("crange/multi");
    const first = 6 * MiB; // one 5 MiB part + a tail
    expect((await req(loc, { method: "PATCH", body: streamOf(data.subarray(0, first)), duplex: "half" } as RequestInit)).status).toBe(202);
    const before = await sessionState(loc);
    expect(before.layout.kind).toBe("multipart");
    const rest = data.subarray(first);
    // declares 10 bytes, sends the whole rest (> a part's worth with the tail): refused
    await expectError(chunked(loc, `${first}-${first + 9}`, rest), 400, "BLOB_UPLOAD_INVALID");
    // declares the rest, sends 10 bytes fewer: refused
    await expectError(chunked(loc, `${first}-${data.length - 1}`, rest.subarray(0, rest.length - 10)), 400, "BLOB_UPLOAD_INVALID");
    await untouched(loc, `0-${first - 1}`);
    expect({ ...(await sessionState(loc)), chunks: 0 }).toEqual({ ...before, chunks: 0 }); // chunks counts attempts
    const ok = await chunked(loc, `${first}-${data.length - 1}`, rest);
    expect(ok.status).toBe(202);
    expect(ok.headers.get("Range")).toBe(`0-${data.length - 1}`);
    expect((await req(withQuery(loc, `digest=${digest}`), { method: "PUT" })).status).toBe(201);
    await expectBytes(await pull("crange/multi", digest), data);
  });

  it("a Content-Range with no body at all is refused with 400; nothing is appended", async () => {
    const loc = await startUpload("crange/nobody");
    const msg = await expectError(req(loc, { method: "PATCH", headers: { "Content-Range": "0-99" } }), 400, "BLOB_UPLOAD_INVALID");
    expect(msg).toMatch(/0 of 100 bytes declared by Content-Range/);
    await untouched(loc);
  });

  it("a matching chunked PATCH is taken as before", async () => {
    const data = bytes(1000, 113);
    const loc = await startUpload("crange/ok");
    const r = await chunked(loc, "0-999", data);
    expect(r.status).toBe(202);
    expect(r.headers.get("Range")).toBe("0-999");
    expect((await req(withQuery(loc, `digest=${await sha256(data)}`), { method: "PUT" })).status).toBe(201);
  });

  it("absurd ranges are refused with 416 before the body is read: past 2^53, past the largest upload", async () => {
    const loc = await startUpload("crange/absurd");
    const maxUpload = 10_000 * 5 * MiB; // MAX_UPLOAD_PARTS × UPLOAD_PART_BYTES of this suite
    for (const range of ["0-99999999999999999999", "0-9007199254740993", "0-" + "1".repeat(70_000), `0-${maxUpload}`]) {
      let pulled = 0;
      const body = new ReadableStream<Uint8Array>({ pull(ctl) { pulled++; ctl.enqueue(bytes(10)); ctl.close(); } });
      const res = await reqWith({}, loc, { method: "PATCH", headers: { "Content-Range": range }, body, duplex: "half" } as RequestInit);
      const msg = await expectError(res, 416, "BLOB_UPLOAD_INVALID");
      expect(msg).toMatch(/Content-Range/);
      expect(msg).toMatch(/largest upload/);
      expect(pulled, `body of ${range.slice(0, 30)} read`).toBeLessThanOrEqual(1); // a stream may pre-pull once; never consumed
    }
    // The largest range that fits is not refused for its size (here: it is longer than the body).
    await expectError(chunked(loc, `0-${maxUpload - 1}`, bytes(10)), 400, "BLOB_UPLOAD_INVALID");
    await untouched(loc);
  });

  it("a range longer than MAX_BODY_BYTES is 413 naming Content-Range, before the body is read", async () => {
    const loc = await startUpload("crange/cap");
    const msg = await expectError(chunked(loc, `0-${MiB}`, bytes(10), { MAX_BODY_BYTES: String(MiB) }), 413, "SIZE_INVALID");
    expect(msg).toMatch(/Content-Range 0-1048576 declares a 1048577-byte chunk/);
    await untouched(loc);
  });
});

describe("a refused request's half-read body is drained before the answer (wrangler dev stalled the next request)", () => {
  /** A chunked body that counts the bytes the Worker pulled and whether it was cancelled. */
  function counted(total: number) {
    const seen = { pulled: 0, cancelled: false };
    let off = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (off >= total) return ctl.close();
        const n = Math.min(64 * 1024, total - off);
        ctl.enqueue(bytes(n, off + 1));
        off += n;
        seen.pulled = off;
      },
      cancel() { seen.cancelled = true; },
    });
    return { stream, seen };
  }

  it("a chunked PATCH over MAX_BODY_BYTES: 413, and the rest of the body was read, not left pending", async () => {
    const cap = { MAX_BODY_BYTES: String(MiB) };
    const loc = (await reqWith(cap, "/v2/drain/cap/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const { stream, seen } = counted(3 * MiB);
    const res = await reqWith(cap, loc, { method: "PATCH", body: stream, duplex: "half" } as RequestInit);
    expect(res.status).toBe(413);
    expect(seen.pulled).toBe(3 * MiB);
    expect(seen.cancelled).toBe(false);
    expect((await req(loc)).headers.get("Range")).toBe("0-0");
  });

  it("a chunked PATCH longer than its Content-Range: 400, and the rest of the body was read", async () => {
    const loc = await startUpload("drain/range");
    const { stream, seen } = counted(2 * MiB);
    const res = await reqWith({}, loc, { method: "PATCH", headers: { "Content-Range": "0-99" }, body: stream, duplex: "half" } as RequestInit);
    expect(res.status).toBe(400);
    expect(seen.pulled).toBe(2 * MiB);
  });

  it("a body refused before it was read is left to the runtime (not read to its end)", async () => {
    const { stream, seen } = counted(8 * MiB);
    const res = await reqWith({}, "/v2/drain/unknown/blobs/uploads/00000000-0000-4000-8000-000000000000", { method: "PATCH", body: stream, duplex: "half" } as RequestInit);
    expect(res.status).toBe(404);
    expect(seen.pulled).toBeLessThan(MiB);
  });

  it("drains at most DRAIN_MAX_BYTES of an endless body, then cancels it", async () => {
    const cap = { MAX_BODY_BYTES: String(MiB) };
    const loc = (await reqWith(cap, "/v2/drain/endless/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    const { stream, seen } = counted(Number.MAX_SAFE_INTEGER);
    const res = await reqWith(cap, loc, { method: "PATCH", body: stream, duplex: "half" } as RequestInit);
    expect(res.status).toBe(413);
    expect(seen.cancelled).toBe(true);
    expect(seen.pulled).toBeGreaterThan(DRAIN_MAX_BYTES);
    expect(seen.pulled).toBeLessThan(DRAIN_MAX_BYTES + 4 * MiB);
  });

  it("stops draining a body that stalls after DRAIN_MAX_MS, and cancels it", async () => {
    const cap = { MAX_BODY_BYTES: String(MiB) };
    const loc = (await reqWith(cap, "/v2/drain/stall/blobs/uploads/", { method: "POST" })).headers.get("Location")!;
    let sent = 0;
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        if (sent >= 2 * MiB) return new Promise<void>(() => {}); // the client stops sending, keeps the connection
        ctl.enqueue(bytes(64 * 1024, sent + 1));
        sent += 64 * 1024;
      },
      cancel() { cancelled = true; },
    });
    const t0 = Date.now();
    const res = await reqWith(cap, loc, { method: "PATCH", body: stream, duplex: "half" } as RequestInit);
    expect(res.status).toBe(413);
    expect(cancelled).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DRAIN_MAX_MS - 100);
  });
});
