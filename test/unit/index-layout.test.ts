// The per-repository index (ADR 0008): each repository's TrustStore holds only its own rows, the
// Catalog lists repositories after their first membership, BlobStore's holders follow links and
// unlinks, and an immutable tag is decided in the same transaction as the tag write.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req } from "./helpers";
import type { Env } from "../../src/env";
import type { TrustStore } from "../../src/stores/trust-store";
import { blobStoreFor, trustStoreFor } from "../../src/stores";

const E = env as unknown as Env;
const uid = () => "ix" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const holders = async (digest: string) => (await blobStoreFor(E, digest).holders(digest, 1000)).repos;
const json = (body: unknown) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

describe("per-repository layout", () => {
  it("a repository's object holds only that repository's rows", async () => {
    const p = uid();
    const a = await makeImage(`${p}/a`, { seed: 1 });
    expect((await putManifest(`${p}/a`, "v1", a.manifest)).status).toBe(201);
    const b = await makeImage(`${p}/b`, { seed: 2 });
    expect((await putManifest(`${p}/b`, "v1", b.manifest)).status).toBe(201);
    const stub = trustStoreFor(E, `${p}/a`) as unknown as DurableObjectStub<TrustStore>;
    const repos = await runInDurableObject(stub, (_i, s) =>
      ["members", "tags", "repos"].flatMap((t) => s.storage.sql.exec<{ repo: string }>(`SELECT DISTINCT repo FROM ${t}`).toArray().map((r) => r.repo)));
    expect(new Set(repos)).toEqual(new Set([`${p}/a`]));
  });

  it("the catalog lists a repository after its first membership, and not after a refused first push", async () => {
    const p = uid();
    await pushBlob(`${p}/pushed`, bytes(100, 3));
    const refused = await makeImage(`${p}/src`, { seed: 4 }); // blobs live in src only
    await expectError(putManifest(`${p}/refused`, "v1", refused.manifest), 400, "MANIFEST_BLOB_UNKNOWN");
    const cat = (await (await req(`/v2/_catalog?n=1000&last=${p}`)).json()) as { repositories: string[] };
    const mine = cat.repositories.filter((r) => r.startsWith(p + "/"));
    expect(mine).toEqual([`${p}/pushed`, `${p}/src`]);
  });

  it("holders follow uploads, mounts, manifest puts and deletes", async () => {
    const p = uid();
    const [A, B, C] = [`${p}/a`, `${p}/b`, `${p}/c`];
    const data = bytes(500, 5);
    const d = await pushBlob(A, data);
    expect(await holders(d)).toEqual([A]);
    await pushBlob(B, data); // same bytes, another repository
    expect(await holders(d)).toEqual([A, B]);
    // mount without `from`: found through the holders
    expect((await req(`/v2/${C}/blobs/uploads/?mount=${d}`, { method: "POST" })).status).toBe(201);
    expect(await holders(d)).toEqual([A, B, C]);
    expect((await req(`/v2/${A}/blobs/${d}`, { method: "DELETE" })).status).toBe(202);
    expect(await holders(d)).toEqual([B, C]);
    expect((await req(`/v2/${C}/blobs/${d}`)).status).toBe(200);

    const img = await makeImage(A, { seed: 6 });
    expect((await putManifest(A, "v1", img.manifest)).status).toBe(201);
    expect(await holders(img.digest)).toEqual([A]);
    // the manifest's bytes are also a blob member of A: deleting the manifest keeps the holder
    await pushBlob(A, img.manifest);
    expect((await req(`/v2/${A}/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    expect(await holders(img.digest)).toEqual([A]);
    expect((await req(`/v2/${A}/blobs/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    expect(await holders(img.digest)).toEqual([]);
    // a mount whose only holder let go falls back to an upload session
    expect((await req(`/v2/${A}/blobs/${img.digest}`)).status).toBe(404);
    expect((await req(`/v2/${p}/d/blobs/uploads/?mount=${img.digest}`, { method: "POST" })).status).toBe(202);
  });

  it("GET /admin/blobs/<digest>/holders answers the operator, and rejects a bad digest with 400", async () => {
    const p = uid();
    const d = await pushBlob(`${p}/x`, bytes(64, 7));
    const r = await req(`/admin/blobs/${d}/holders`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ digest: d, repositories: [`${p}/x`] });
    expect(await (await req(`/admin/blobs/${d}/holders?n=0`)).json()).toEqual({ digest: d, repositories: [] });
    await expectError(req(`/admin/blobs/${d}/holders?n=x`), 400, "UNSUPPORTED"); // the spec code for a bad n
    await expectError(req(`/admin/blobs/sha256:nothex/holders`), 400, "DIGEST_INVALID");
  });

  it("an immutable tag is decided in the tag write: of two concurrent first pushes, exactly one wins", async () => {
    const p = uid();
    const repo = `${p}/rel`;
    expect((await req("/admin/policies", json({ id: `${p}-imm`, kind: "immutable-tags", repositories: [`${p}/**`], tags: ["v*"] }))).status).toBe(201);
    const one = await makeImage(repo, { seed: 8 });
    const two = await makeImage(repo, { seed: 9 });
    const [r1, r2] = await Promise.all([putManifest(repo, "v1", one.manifest), putManifest(repo, "v1", two.manifest)]);
    expect([r1.status, r2.status].sort()).toEqual([201, 403]);
    const loser = r1.status === 403 ? r1 : r2;
    expect(((await loser.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DENIED");
    const winner = r1.status === 201 ? one : two;
    const got = await req(`/v2/${repo}/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(got.headers.get("Docker-Content-Digest")).toBe(winner.digest);
    // re-pushing the same digest stays allowed; a tag the rule does not cover moves freely
    expect((await putManifest(repo, "v1", winner.manifest)).status).toBe(201);
    expect((await putManifest(repo, "latest", one.manifest)).status).toBe(201);
    expect((await putManifest(repo, "latest", two.manifest)).status).toBe(201);
  });
});

describe("reads of repositories that do not exist", () => {
  it("leave no stored object behind (every read route, and a refused first manifest push)", async () => {
    const repo = `${uid()}/never`;
    const d = `sha256:${"ab".repeat(32)}`;
    await expectError(req(`/v2/${repo}/blobs/${d}`), 404, "BLOB_UNKNOWN");
    await expectError(req(`/v2/${repo}/manifests/latest`), 404, "MANIFEST_UNKNOWN");
    await expectError(req(`/v2/${repo}/tags/list`), 404, "NAME_UNKNOWN");
    expect((await req(`/v2/${repo}/referrers/${d}`)).status).toBe(200);
    await expectError(req(`/v2/${repo}/blobs/${d}`, { method: "DELETE" }), 404, "BLOB_UNKNOWN");
    await expectError(req(`/v2/${repo}/manifests/${d}`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
    const img = await makeImage(`${uid()}/elsewhere`, { seed: 11 });
    await expectError(putManifest(repo, "v1", img.manifest), 400, "MANIFEST_BLOB_UNKNOWN");
    const stub = trustStoreFor(E, repo) as unknown as DurableObjectStub<TrustStore>;
    const tables = await runInDurableObject(stub, (_i, s) => s.storage.sql.exec(`SELECT count(*) AS n FROM sqlite_master`).one().n);
    expect(tables).toBe(0);
    // the first write creates it, and the repository works from there
    const blob = await pushBlob(repo, bytes(32, 12));
    expect((await req(`/v2/${repo}/blobs/${blob}`)).status).toBe(200);
    expect(((await (await req(`/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags).toEqual([]);
  });
});
