// Signed, stateless upload ids (docs/adr/0013): POST creates no object; a PUT with the whole blob
// commits without a session and ends the id in the link's transaction; the first PATCH creates the
// session; an ended id stays ended; ids that are forged, tampered with, expired, too far ahead, or
// signed for another repository, principal or key answer exactly like unknown ones.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bytes, expectBytes, expectError, patch, req, reqWith, sha256, startUpload, withQuery } from "./helpers";
import { mintUploadId } from "../../src/storage/upload-ids";
import { blobStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";

const OPEN_PRINCIPAL = "open";
const octet = { "Content-Type": "application/octet-stream" };
const uid = () => "sl" + crypto.randomUUID().slice(0, 8);
const idOf = (location: string) => location.split("/").pop()!;
const SIGNED = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.[0-9a-f]{8}\.[0-9a-f]{32}$/;
const sessionOf = (id: string) => env.UPLOAD_SESSION.get(env.UPLOAD_SESSION.idFromName(id.split(".")[0]));

/** Status, headers and body of a response, with `id` (and request ids) replaced so different ids compare equal. */
async function snap(res: Response, id: string) {
  const norm = (v: string) => v.split(id).join("<ID>").replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<UUID>");
  const body = norm(await res.text());
  const headers = [...res.headers].map(([k, v]) => `${k}: ${norm(v)}`).sort();
  return { status: res.status, headers, body };
}

/** Every upload operation on `id` in `repo`. */
function ops(repo: string, id: string, body: Uint8Array, d: string): [string, () => Promise<Response>][] {
  const loc = `/v2/${repo}/blobs/uploads/${id}`;
  return [
    ["GET", () => req(loc)],
    ["PATCH", () => req(loc, { method: "PATCH", body, headers: octet })],
    ["PATCH Content-Range", () => req(loc, { method: "PATCH", body, headers: { ...octet, "Content-Range": `0-${body.length - 1}` } })],
    ["PUT", () => req(`${loc}?digest=${d}`, { method: "PUT", body, headers: octet })],
    ["PUT empty", () => req(`${loc}?digest=${d}`, { method: "PUT" })],
    ["DELETE", () => req(loc, { method: "DELETE" })],
  ];
}

/** Every operation on `id` answers byte for byte like one on a random (unknown) UUID, and stores nothing. */
async function expectUnknown(repo: string, id: string) {
  const body = bytes(100, 7);
  const d = await sha256(body);
  const random = crypto.randomUUID();
  const want = ops(repo, random, body, d);
  const got = ops(repo, id, body, d);
  for (let i = 0; i < got.length; i++) {
    const a = await snap(await got[i][1](), id);
    const b = await snap(await want[i][1](), random);
    expect(a, `${id}: ${got[i][0]}`).toEqual(b);
    expect(a.status, got[i][0]).toBe(404);
    expect(JSON.parse(a.body).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
  }
  expect((await req(`/v2/${repo}/blobs/${d}`)).status).toBe(404);
}

describe("signed, stateless upload ids", () => {
  it("POST + PUT with the whole blob: no session object is ever created; the close ends the id", async () => {
    const repo = `${uid()}/a`;
    const data = bytes(3000, 1);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    const id = idOf(loc);
    expect(id).toMatch(SIGNED);
    const st = await req(loc); // before any write: offset 0 from the signature alone
    expect(st.status).toBe(204);
    expect(st.headers.get("Range")).toBe("0-0");
    const put = await req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet });
    expect(put.status).toBe(201);
    expect(put.headers.get("Docker-Content-Digest")).toBe(d);
    const got = await req(`/v2/${repo}/blobs/${d}`);
    expect(got.status).toBe(200);
    await expectBytes(new Uint8Array(await got.arrayBuffer()), data);
    expect(await sessionOf(id).exists()).toBe(false);
    // Ended: GET, PATCH, DELETE and another PUT answer 404.
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(loc, data, 0), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet }), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(loc, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect(await sessionOf(id).exists()).toBe(false);
  });

  it("a second PUT on an ended id with other bytes is 404 and stores nothing of them", async () => {
    const repo = `${uid()}/a`;
    const loc = await startUpload(repo);
    const a = bytes(700, 2);
    expect((await req(withQuery(loc, `digest=${await sha256(a)}`), { method: "PUT", body: a, headers: octet })).status).toBe(201);
    const b = bytes(800, 3);
    const db = await sha256(b);
    await expectError(req(withQuery(loc, `digest=${db}`), { method: "PUT", body: b, headers: octet }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await req(`/v2/${repo}/blobs/${db}`, { method: "HEAD" })).status).toBe(404);
    // The refused push gave back its holder, its BlobStore row and its object.
    expect(await blobStoreFor(env as unknown as Env, db).get(db)).toBeNull();
    expect((await blobStoreFor(env as unknown as Env, db).holders(db, 10)).repos).toEqual([]);
  });

  it("PUT with bytes that do not match → 400 DIGEST_INVALID, nothing stored, the upload ends", async () => {
    const repo = `${uid()}/a`;
    const data = bytes(500, 2);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: bytes(500, 3), headers: octet }), 400, "DIGEST_INVALID");
    expect((await req(`/v2/${repo}/blobs/${d}`)).status).toBe(404);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect(await sessionOf(idOf(loc)).exists()).toBe(false);
  });

  it("PATCHes then a final PUT carrying the last chunk WITHOUT Content-Range → 201, the whole blob", async () => {
    const repo = `${uid()}/a`;
    const data = bytes(6000, 4);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    expect((await patch(loc, data.subarray(0, 2500), 0)).status).toBe(202);
    expect((await patch(loc, data.subarray(2500, 5000), null)).status).toBe(202); // streamed, no Content-Range
    const put = await req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data.subarray(5000), headers: octet });
    expect(put.status, await put.clone().text()).toBe(201);
    const got = await req(`/v2/${repo}/blobs/${d}`);
    await expectBytes(new Uint8Array(await got.arrayBuffer()), data);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(loc, data.subarray(0, 10), 0), 404, "BLOB_UPLOAD_UNKNOWN");
    expect(await sessionOf(idOf(loc)).exists()).toBe(false);
  });

  it("PATCHes then a PUT whose last chunk makes the wrong blob → 400 DIGEST_INVALID and the upload ends", async () => {
    const repo = `${uid()}/a`;
    const data = bytes(4000, 5);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    expect((await patch(loc, data.subarray(0, 3000), 0)).status).toBe(202);
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: bytes(1000, 99), headers: octet }), 400, "DIGEST_INVALID");
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await req(`/v2/${repo}/blobs/${d}`, { method: "HEAD" })).status).toBe(404);
  });

  it("a PATCH creates the session; GET reports it; chunks resume; a Content-Range PUT closes", async () => {
    const repo = `${uid()}/a`;
    const data = bytes(6000, 4);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    const p1 = await patch(loc, data.subarray(0, 2500), 0);
    expect(p1.status).toBe(202);
    expect(p1.headers.get("Location")).toBe(loc);
    expect(p1.headers.get("Range")).toBe("0-2499");
    expect(await sessionOf(idOf(loc)).exists()).toBe(true);
    const st = await req(loc);
    expect(st.headers.get("Range")).toBe("0-2499");
    expect((await patch(loc, data.subarray(3000, 4000), 3000)).status).toBe(416);
    expect((await patch(loc, data.subarray(2500, 5000), 2500)).headers.get("Range")).toBe("0-4999");
    const put = await req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data.subarray(5000), headers: { ...octet, "Content-Range": `5000-${data.length - 1}` } });
    expect(put.status).toBe(201);
    await expectBytes(new Uint8Array(await (await req(`/v2/${repo}/blobs/${d}`)).arrayBuffer()), data);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(loc, data.subarray(0, 10), 0), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("DELETE of a never-written upload → 204; afterwards GET, PATCH, PUT and DELETE answer 404", async () => {
    const repo = `${uid()}/a`;
    const loc = await startUpload(repo);
    expect((await req(loc, { method: "DELETE" })).status).toBe(204);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(loc, bytes(10), 0), 404, "BLOB_UPLOAD_UNKNOWN");
    const data = bytes(10, 8);
    await expectError(req(withQuery(loc, `digest=${await sha256(data)}`), { method: "PUT", body: data, headers: octet }), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(req(loc, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect((await req(`/v2/${repo}/blobs/${await sha256(data)}`, { method: "HEAD" })).status).toBe(404);
  });

  it("DELETE after PATCHes cancels the session and ends the id", async () => {
    const repo = `${uid()}/a`;
    const loc = await startUpload(repo);
    expect((await patch(loc, bytes(100, 9), 0)).status).toBe(202);
    expect((await req(loc, { method: "DELETE" })).status).toBe(204);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(patch(loc, bytes(10), 0), 404, "BLOB_UPLOAD_UNKNOWN");
    expect(await sessionOf(idOf(loc)).exists()).toBe(false);
  });

  it("forged, tampered, expired, too-long-lived, other-repository, other-principal and other-key ids answer exactly like an unknown upload", async () => {
    const repo = `${uid()}/a`;
    const e = env as unknown as Env;
    const good = idOf(await startUpload(repo));
    const [uuid, expiry, mac] = good.split(".");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "0" ? "1" : "0") + s.slice(i + 1);
    const forged = [
      `${uuid}.${expiry}.${"0".repeat(32)}`, // made-up signature
      `${flip(uuid, 2)}.${expiry}.${mac}`, // tampered uuid
      `${uuid}.${(parseInt(expiry, 16) + 3600).toString(16).padStart(8, "0")}.${mac}`, // extended expiry
      `${uuid}.${expiry}.${flip(mac, 31)}`, // tampered signature
      `${uuid}.${expiry}`, // truncated
      await mintUploadId(e, repo, OPEN_PRINCIPAL, -10), // expired, correctly signed
      await mintUploadId(e, repo, OPEN_PRINCIPAL, 30 * 86400), // valid further ahead than UPLOAD_TTL_SECONDS
      await mintUploadId(e, `${repo}x`, OPEN_PRINCIPAL, 3600), // another repository
      await mintUploadId(e, repo, "user:someone-else", 3600), // another principal
      await mintUploadId({ ...e, UPLOAD_SIGNING_KEY: "another-key-of-at-least-32-characters!!" }, repo, OPEN_PRINCIPAL, 3600), // another key
      await mintUploadId({ ...e, ADMIN_PASSWORD: "an admin password" }, repo, OPEN_PRINCIPAL, 3600), // key derived from another secret
    ];
    for (const id of forged) await expectUnknown(repo, id);
    // A good id is not touched by any of that.
    const data = bytes(100, 7);
    expect((await req(withQuery(`/v2/${repo}/blobs/uploads/${good}`, `digest=${await sha256(data)}`), { method: "PUT", body: data, headers: octet })).status).toBe(201);
  });

  it("the key follows UPLOAD_SIGNING_KEY, else ADMIN_PASSWORD: an id minted under one is unknown under another", async () => {
    const repo = `${uid()}/a`;
    const own = { UPLOAD_SIGNING_KEY: "k".repeat(40) };
    const r = await reqWith(own, `/v2/${repo}/blobs/uploads/`, { method: "POST" });
    const loc = r.headers.get("Location")!;
    expect((await reqWith(own, loc)).status).toBe(204);
    await expectError(req(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(reqWith({ ADMIN_PASSWORD: "pw" }, loc), 404, "BLOB_UPLOAD_UNKNOWN");
    // A key shorter than 32 characters is ignored (the derived key is used).
    const short = await reqWith({ UPLOAD_SIGNING_KEY: "short" }, `/v2/${repo}/blobs/uploads/`, { method: "POST" });
    expect((await req(short.headers.get("Location")!)).status).toBe(204);
  });

  it("a declared digest-algorithm opens a session at POST with a UUID, as before", async () => {
    const repo = `${uid()}/a`;
    const r = await req(`/v2/${repo}/blobs/uploads/?digest-algorithm=sha512`, { method: "POST" });
    expect(r.status).toBe(202);
    const id = r.headers.get("Docker-Upload-UUID")!;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(await sessionOf(id).exists()).toBe(true);
  });

  it("an unmountable digest falls back to a signed upload location", async () => {
    const target = `${uid()}/b`;
    const miss = await req(`/v2/${target}/blobs/uploads/?mount=sha256:${"0".repeat(64)}&from=${uid()}/a`, { method: "POST" });
    expect(miss.status).toBe(202);
    expect(idOf(miss.headers.get("Location")!)).toMatch(SIGNED);
  });
});
