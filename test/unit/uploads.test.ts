import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectBytes, expectError, patch, req, reqWith, sha256, startUpload, streamOf, withQuery } from "./helpers";
import { Hasher } from "../../src/digest/hasher";
import { blake3 } from "@noble/hashes/blake3.js";
import { base64ToBytes } from "../../src/util/encoding";
import type { UploadSession, UploadState } from "../../src/stores/upload-session";

const MiB = 1024 * 1024;
const idOf = (location: string) => location.split("/").pop()!;
const sessionStub = (id: string) => env.UPLOAD_SESSION.get(env.UPLOAD_SESSION.idFromName(id)) as DurableObjectStub<UploadSession>;

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
    expect(loc).toMatch(/^\/v2\/up\/a\/blobs\/uploads\/[0-9a-f-]{36}$/);
    expect(res.headers.get("Docker-Upload-UUID")).toBe(idOf(loc));
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
      expect(res.headers.get("Docker-Upload-UUID")).toBe(idOf(loc));
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
    const state = await runInDurableObject(sessionStub(idOf(loc)), async (_i, s) => (await s.storage.get<UploadState>("state"))!);
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
    const state = await runInDurableObject(sessionStub(id), async (_i, s) => (await s.storage.get<UploadState>("state"))!);
    expect(state.layout.kind).toBe("multipart");
    const res = await req(loc, { method: "DELETE" });
    expect(res.status).toBe(204);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects).toHaveLength(0);
    if (state.layout.kind === "multipart") {
      const mp = env.BUCKET.resumeMultipartUpload(state.layout.key, state.layout.uploadId);
      await expect(mp.complete(state.layout.parts)).rejects.toThrow();
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
    const loc = await startUpload("up/expire");
    expect((await patch(loc, bytes(6 * MiB, 31), 0)).status).toBe(202);
    expect((await patch(loc, bytes(100, 32), 6 * MiB)).status).toBe(202);
    const id = idOf(loc);
    const stub = sessionStub(id);
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects.length).toBeGreaterThan(0);
    await runInDurableObject(stub, async (_i, s) => {
      const st = (await s.storage.get<UploadState>("state"))!;
      st.expiresAt = Date.now() - 1;
      await s.storage.put("state", st);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await env.BUCKET.list({ prefix: `data/${id}/` })).objects).toHaveLength(0);
  });

  it("a session's alarm is set from UPLOAD_TTL_SECONDS", async () => {
    const before = Date.now();
    const loc = await startUpload("up/ttl");
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
    const state = await runInDurableObject(sessionStub(idOf(loc)), async (_i, s) => (await s.storage.get<UploadState>("state"))!);
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
    const state = await runInDurableObject(sessionStub(idOf(loc)), async (_i, s) => (await s.storage.get<UploadState>("state"))!);
    expect(Object.keys(state.hashStates).sort()).toEqual(["blake3", "sha256"]);
    expect(Hasher.resume("blake3", base64ToBytes(state.hashStates.blake3)).digestHex()).toBe(b3(data.subarray(0, cut)));
    expect((await patch(loc, data.subarray(cut), cut)).status).toBe(202);
    expect((await req(withQuery(loc, `digest=sha256:${b3(data)}`), { method: "PUT" })).status).toBe(201);
  });
});
