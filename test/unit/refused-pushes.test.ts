// Refused pushes give back what their BlobStore commit took (issue 10): the holder, and the row and
// the bytes when the push created them, so nothing is left that garbage collection would have to
// find. Never the holder of a repository that already holds the digest as a member: that holder
// is what keeps the member's bytes from being collected.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req, sha256, startUpload, withQuery } from "./helpers";
import { blobStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";

const e = env as unknown as Env;
const octet = { "Content-Type": "application/octet-stream" };

async function holders(digest: string): Promise<string[]> {
  return (await blobStoreFor(e, digest).holders(digest, 100)).repos;
}

async function r2Keys(): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await e.BUCKET.list({ cursor, limit: 1000 });
    keys.push(...page.objects.map((o) => o.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return keys.sort();
}

async function setQuota(pattern: string, limitBytes: number) {
  const r = await req(`/admin/quotas`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pattern, limitBytes }) });
  expect(r.status, await r.clone().text()).toBe(200);
}

async function addRule(rule: Record<string, unknown>) {
  const r = await req("/admin/policies", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) });
  expect(r.status, await r.clone().text()).toBe(201);
}

describe("a refused push leaves nothing behind", () => {
  it("blob over quota (POST ?digest= and POST + PUT): no holder, no BlobStore row, no R2 object", async () => {
    await setQuota("refq/**", 1000);
    await pushBlob("refq/a", bytes(900, 1));
    const before = await r2Keys();
    const data = bytes(500, 2);
    const d = await sha256(data);
    await expectError(req(`/v2/refq/a/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: octet }), 403, "DENIED");
    const loc = await startUpload("refq/a");
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet }), 403, "DENIED");
    expect(await holders(d)).toEqual([]);
    expect(await blobStoreFor(e, d).get(d)).toBeNull();
    expect(await r2Keys()).toEqual(before);
  });

  it("a refused blob whose bytes another repository holds keeps that repository's holder and the row", async () => {
    await setQuota("refq2/**", 1000);
    const data = bytes(500, 3);
    const d = await pushBlob("refshared/a", data);
    await pushBlob("refq2/a", bytes(900, 4));
    await expectError(req(`/v2/refq2/a/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: octet }), 403, "DENIED");
    expect(await holders(d)).toEqual(["refshared/a"]);
    expect(await blobStoreFor(e, d).get(d)).not.toBeNull();
    expect((await req(`/v2/refshared/a/blobs/${d}`)).status).toBe(200);
  });

  it("a mount refused by quota gives back the holder it took", async () => {
    await setQuota("refq3/**", 1000);
    const data = bytes(600, 5);
    const d = await pushBlob("refsrc/a", data);
    await pushBlob("refq3/a", bytes(900, 6));
    const r = await req(`/v2/refq3/a/blobs/uploads/?mount=${d}&from=refsrc/a`, { method: "POST" });
    expect(r.status).toBe(202); // not mountable: a new upload instead
    expect(await holders(d)).toEqual(["refsrc/a"]);
  });

  it("a manifest refused for moving an immutable tag: no holder, no row, no R2 object", async () => {
    await addRule({ id: "ref-frozen", kind: "immutable-tags", repositories: ["refimm/**"], tags: ["v*"] });
    const repo = "refimm/a";
    const one = await makeImage(repo, { seed: 41 });
    const two = await makeImage(repo, { seed: 42 });
    expect((await putManifest(repo, "v1", one.manifest)).status).toBe(201);
    const before = await r2Keys();
    await expectError(putManifest(repo, "v1", two.manifest), 403, "DENIED");
    expect(await holders(two.digest)).toEqual([]);
    expect(await blobStoreFor(e, two.digest).get(two.digest)).toBeNull();
    expect(await r2Keys()).toEqual(before);
  });

  it("a manifest refused while the repository already holds it as a member keeps its holder (no data loss)", async () => {
    await addRule({ id: "ref-frozen2", kind: "immutable-tags", repositories: ["refimm2/**"], tags: ["v*"] });
    const repo = "refimm2/a";
    const one = await makeImage(repo, { seed: 43 });
    const two = await makeImage(repo, { seed: 44 });
    expect((await putManifest(repo, "v1", one.manifest)).status).toBe(201);
    expect((await putManifest(repo, "other", two.manifest)).status).toBe(201); // two is a member
    await expectError(putManifest(repo, "v1", two.manifest), 403, "DENIED");
    expect(await holders(two.digest)).toEqual([repo]);
    const got = await req(`/v2/${repo}/manifests/other`);
    expect(got.status).toBe(200);
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(two.manifest);
  });

  it("a manifest with a missing reference: no holder, no row, no R2 object", async () => {
    const repo = "refmiss/a";
    const img = await makeImage(repo, { seed: 45 });
    await pushBlob(repo, bytes(10, 46)); // the repository exists
    const before = await r2Keys();
    const other = await makeImage("refmiss/elsewhere", { seed: 47 }); // its blobs are members of another repository only
    await expectError(putManifest(repo, "v1", other.manifest), 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await holders(other.digest)).toEqual([]);
    expect(await blobStoreFor(e, other.digest).get(other.digest)).toBeNull();
    const after = (await r2Keys()).filter((k) => !before.includes(k));
    expect(after.every((k) => !k.startsWith("manifests/")), after.join(", ")).toBe(true);
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201);
  });

  it("a re-PUT of a member blob on an ended upload id is 404 but keeps the repository's holder", async () => {
    const repo = "refended/a";
    const data = bytes(800, 48);
    const d = await sha256(data);
    const loc = await startUpload(repo);
    expect((await req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet })).status).toBe(201);
    await expectError(req(withQuery(loc, `digest=${d}`), { method: "PUT", body: data, headers: octet }), 404, "BLOB_UPLOAD_UNKNOWN");
    expect(await holders(d)).toEqual([repo]);
    expect((await req(`/v2/${repo}/blobs/${d}`)).status).toBe(200);
  });

  it("race: a refused and an accepted PUT of the same manifest in two repositories at once — the accepted one always keeps row, holder and bytes", async () => {
    await pushBlob("refrace/a", bytes(10, 60)); // A exists but never has the image's blobs
    for (let i = 0; i < 12; i++) {
      const img = await makeImage("refrace/b", { seed: 600 + i });
      const [refused, accepted] = await Promise.all([putManifest("refrace/a", "v1", img.manifest), putManifest("refrace/b", `v${i}`, img.manifest)]);
      expect(refused.status).toBe(400);
      await refused.arrayBuffer();
      expect(accepted.status, await accepted.clone().text()).toBe(201);
      await accepted.arrayBuffer();
      const row = await blobStoreFor(e, img.digest).get(img.digest);
      expect(row, `iteration ${i}`).not.toBeNull();
      expect(await e.BUCKET.head(row!.r2Key), `iteration ${i}: object of the row`).not.toBeNull();
      expect(await holders(img.digest)).toEqual(["refrace/b"]);
      const got = await req(`/v2/refrace/b/manifests/v${i}`);
      expect(got.status).toBe(200);
      expect(new Uint8Array(await got.arrayBuffer())).toEqual(img.manifest);
    }
  });
});
