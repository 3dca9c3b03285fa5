// Usage (issue 11): per repository logical bytes, counts and last push; registry-wide physical
// bytes, logical (held) bytes and the dedupe ratio. This file's storage is its own, so the
// registry-wide numbers are exact.
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req } from "./helpers";

type Usage = { repository: string; logicalBytes: number; blobs: number; manifests: number; tags: number; lastPush: number | null };
type Registry = { physicalBytes: number; logicalBytes: number; dedupeRatio: number | null; digests: number; objects: number; repositories: Usage[] };

describe("usage", () => {
  it("reports per-repository and registry-wide usage, with the dedupe ratio", async () => {
    const empty = (await (await req(`/admin/usage`)).json()) as Registry;
    expect(empty).toMatchObject({ physicalBytes: 0, logicalBytes: 0, dedupeRatio: null, repositories: [] });

    const shared = bytes(10_000, 1);
    const t0 = Date.now();
    await pushBlob("use/a", shared);
    await pushBlob("use/b", shared); // same bytes: stored once, held twice
    const img = await makeImage("use/a", { seed: 2 }); // config + one 1000-byte layer
    expect((await putManifest("use/a", "v1", img.manifest)).status).toBe(201);
    expect((await putManifest("use/a", "v2", img.manifest)).status).toBe(201);
    const cfgSize = Number((await req(`/v2/use/a/blobs/${img.config}`, { method: "HEAD" })).headers.get("Content-Length"));

    const a = (await (await req(`/admin/usage/use/a`)).json()) as Usage;
    expect(a).toMatchObject({ repository: "use/a", blobs: 3, manifests: 1, tags: 2 });
    expect(a.logicalBytes).toBe(10_000 + cfgSize + 1000 + img.manifest.length);
    expect(a.lastPush).toBeGreaterThanOrEqual(t0);
    const b = (await (await req(`/admin/usage/use/b`)).json()) as Usage;
    expect(b).toMatchObject({ repository: "use/b", logicalBytes: 10_000, blobs: 1, manifests: 0, tags: 0 });

    const all = (await (await req(`/admin/usage`)).json()) as Registry;
    expect(all.physicalBytes).toBe(10_000 + cfgSize + 1000 + img.manifest.length);
    expect(all.logicalBytes).toBe(all.physicalBytes + 10_000);
    expect(all.dedupeRatio).toBeCloseTo((all.physicalBytes + 10_000) / all.physicalBytes, 6);
    expect(all.repositories.map((r) => r.repository)).toEqual(["use/a", "use/b"]);

    // paging
    const p1 = await req(`/admin/usage?n=1`);
    expect(((await p1.json()) as Registry).repositories.map((r) => r.repository)).toEqual(["use/a"]);
    expect(p1.headers.get("Link")).toContain("last=use%2Fa");
    const p2 = (await (await req(`/admin/usage?n=1&last=use/a`)).json()) as Registry;
    expect(p2.repositories.map((r) => r.repository)).toEqual(["use/b"]);

    await expectError(req(`/admin/usage/use/none`), 404, "NAME_UNKNOWN");
    await expectError(req(`/admin/usage/Bad..Name`), 400, "BAD_REQUEST");
    await expectError(req(`/admin/usage?n=x`), 400, "BAD_REQUEST");
  });
});

describe("quotas", () => {
  const put = (body: unknown) => req(`/admin/quotas`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

  it("a push over its namespace quota gets 403 DENIED 'quota exceeded: used / limit' at blob commit and manifest PUT", async () => {
    // the rule is read by each repository's object at most every 30 s: use repositories it has not seen
    expect((await put({ pattern: "quota/**", limitBytes: 5000 })).status).toBe(200);
    const list = (await (await req(`/admin/quotas`)).json()) as { quotas: { pattern: string; limitBytes: number }[] };
    expect(list.quotas).toContainEqual(expect.objectContaining({ pattern: "quota/**", limitBytes: 5000 }));

    await pushBlob("quota/a", bytes(3000, 11)); // 3000 of 5000
    const d = "sha256:" + [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes(2500, 12)))].map((b) => b.toString(16).padStart(2, "0")).join("");
    const refused = req(`/v2/quota/a/blobs/uploads/?digest=${d}`, { method: "POST", body: bytes(2500, 12) });
    const msg = await expectError(refused, 403, "DENIED");
    expect(msg).toContain("quota exceeded: 3000 / 5000");
    expect((await req(`/v2/quota/a/blobs/${d}`, { method: "HEAD" })).status).toBe(404);
    // re-pushing what the repository already holds costs nothing
    await pushBlob("quota/a", bytes(3000, 11));

    // manifest PUT: config + layer fit, the manifest itself does not
    const img = await makeImage("quota/b", { seed: 13 }); // ~60 + 1000 bytes
    await pushBlob("quota/b", bytes(3900, 14));
    const used = 3900 + 1000 + Number((await req(`/v2/quota/b/blobs/${img.config}`, { method: "HEAD" })).headers.get("Content-Length"));
    const m = await expectError(putManifest("quota/b", "v1", img.manifest), 403, "DENIED");
    expect(m).toContain(`quota exceeded: ${used} / 5000`);
    expect((await req(`/v2/quota/b/manifests/v1`, { method: "HEAD" })).status).toBe(404);
    // outside the glob: no limit
    await pushBlob("other/a", bytes(9000, 15));

    expect((await req(`/admin/quotas?pattern=${encodeURIComponent("quota/**")}`, { method: "DELETE" })).status).toBe(204);
    expect((await req(`/admin/quotas?pattern=nope`, { method: "DELETE" })).status).toBe(404);
  });

  it("rejects bad rules with 400", async () => {
    await expectError(put({ pattern: "Bad Pattern", limitBytes: 1 }), 400, "BAD_REQUEST");
    await expectError(put({ pattern: "a/**", limitBytes: -1 }), 400, "BAD_REQUEST");
    await expectError(put({ pattern: "a/**", limitBytes: 1, extra: true }), 400, "BAD_REQUEST");
    await expectError(req(`/admin/quotas`, { method: "PUT", body: "{" }), 400, "BAD_REQUEST");
  });
});
