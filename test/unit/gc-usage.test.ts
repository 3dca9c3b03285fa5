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
  type Rule = { pattern: string; limitBytes: number; usedBytes: number; repositories: number };
  const rule = async (pattern: string) => ((await (await req(`/admin/quotas`)).json()) as { quotas: Rule[] }).quotas.find((q) => q.pattern === pattern);
  const digestOf = async (data: Uint8Array) => "sha256:" + [...new Uint8Array(await crypto.subtle.digest("SHA-256", data))].map((b) => b.toString(16).padStart(2, "0")).join("");

  it("limits the TOTAL of a namespace: two repositories that together exceed it get 403 DENIED 'quota exceeded: used / limit' at blob commit and manifest PUT", async () => {
    const set = await put({ pattern: "ns/**", limitBytes: 6000 });
    expect(set.status).toBe(200);
    expect(((await set.json()) as { seeded: unknown }).seeded).toEqual({ counted: 0, complete: true });

    const a = await pushBlob("ns/a", bytes(3000, 11)); // 3000 of 6000, in ns/a
    // ns/b alone holds nothing: only the namespace total refuses this
    const big = bytes(3500, 12);
    const msg = await expectError(req(`/v2/ns/b/blobs/uploads/?digest=${await digestOf(big)}`, { method: "POST", body: big }), 403, "DENIED");
    expect(msg).toContain("quota exceeded: 3000 / 6000");
    expect((await req(`/v2/ns/b/blobs/${await digestOf(big)}`, { method: "HEAD" })).status).toBe(404);
    // re-pushing what a repository already holds costs nothing
    await pushBlob("ns/a", bytes(3000, 11));

    // manifest PUT: config + layer + a blob fit in ns/b, the manifest itself does not
    const img = await makeImage("ns/b", { seed: 13 }); // config (~50 bytes) + a 1000-byte layer
    await pushBlob("ns/b", bytes(1900, 14));
    const cfg = Number((await req(`/v2/ns/b/blobs/${img.config}`, { method: "HEAD" })).headers.get("Content-Length"));
    const used = 3000 + 1900 + 1000 + cfg;
    expect(used + img.manifest.length).toBeGreaterThan(6000);
    const m = await expectError(putManifest("ns/b", "v1", img.manifest), 403, "DENIED");
    expect(m).toContain(`quota exceeded: ${used} / 6000`);
    expect((await req(`/v2/ns/b/manifests/v1`, { method: "HEAD" })).status).toBe(404);
    expect(await rule("ns/**")).toMatchObject({ usedBytes: used, repositories: 2 });

    // deleting in one repository frees room for the other
    expect((await req(`/v2/ns/a/blobs/${a}`, { method: "DELETE" })).status).toBe(202);
    expect(await rule("ns/**")).toMatchObject({ usedBytes: used - 3000 });
    expect((await putManifest("ns/b", "v1", img.manifest)).status).toBe(201);
    expect(await rule("ns/**")).toMatchObject({ usedBytes: used - 3000 + img.manifest.length });
    // outside the glob: no limit
    await pushBlob("other/a", bytes(9000, 15));

    expect((await req(`/admin/quotas?pattern=${encodeURIComponent("ns/**")}`, { method: "DELETE" })).status).toBe(204);
    expect((await req(`/admin/quotas?pattern=nope`, { method: "DELETE" })).status).toBe(404);
  });

  it("a new rule counts what its namespace already holds; every matching rule must hold", async () => {
    await pushBlob("seed/a", bytes(4000, 21));
    await pushBlob("seed/b/x", bytes(3000, 22));
    await pushBlob("seed-other", bytes(5000, 23)); // sorts between "seed" and "seed/": not in the namespace
    const set = await put({ pattern: "seed/**", limitBytes: 8000 });
    expect(((await set.json()) as { seeded: unknown }).seeded).toEqual({ counted: 2, complete: true });
    expect(await rule("seed/**")).toMatchObject({ usedBytes: 7000, repositories: 2 });
    const more = bytes(1500, 24);
    expect(await expectError(req(`/v2/seed/c/blobs/uploads/?digest=${await digestOf(more)}`, { method: "POST", body: more }), 403, "DENIED"))
      .toContain("quota exceeded: 7000 / 8000");
    await pushBlob("seed/c", bytes(900, 25)); // 7900: fits
    // a narrower rule inside the namespace: both must hold
    expect((await put({ pattern: "seed/b/**", limitBytes: 3050 })).status).toBe(200);
    const small = bytes(60, 26);
    expect(await expectError(req(`/v2/seed/b/x/blobs/uploads/?digest=${await digestOf(small)}`, { method: "POST", body: small }), 403, "DENIED"))
      .toContain("quota exceeded: 3000 / 3050");
    // raising a limit keeps the counts
    expect((await put({ pattern: "seed/**", limitBytes: 9000 })).status).toBe(200);
    expect(await rule("seed/**")).toMatchObject({ usedBytes: 7900, repositories: 3 });
    await pushBlob("seed/a", bytes(1000, 27));
    expect(await rule("seed/**")).toMatchObject({ usedBytes: 8900 });
    // a deleted rule stops refusing at once (repositories may still have it cached)
    expect((await req(`/admin/quotas?pattern=${encodeURIComponent("seed/**")}`, { method: "DELETE" })).status).toBe(204);
    await pushBlob("seed/a", bytes(5000, 28));
  });

  it("concurrent pushes never take a namespace over its limit, across repositories and within one", async () => {
    expect((await put({ pattern: "race/**", limitBytes: 5000 })).status).toBe(200);
    const post = async (repo: string, data: Uint8Array) => (await req(`/v2/${repo}/blobs/uploads/?digest=${await digestOf(data)}`, { method: "POST", body: data })).status;
    // two repositories, 3000 bytes each: only one fits
    const across = await Promise.all([post("race/a", bytes(3000, 31)), post("race/b", bytes(3000, 32))]);
    expect(across.sort()).toEqual([201, 403]);
    // one repository (its in-flight reservations count): 2000 left, three pushes of 900 → two fit
    const within = await Promise.all([post("race/c", bytes(900, 33)), post("race/c", bytes(900, 34)), post("race/c", bytes(900, 35))]);
    expect(within.sort()).toEqual([201, 201, 403]);
    expect(await rule("race/**")).toMatchObject({ usedBytes: 4800, repositories: 3 });
  });

  it("rejects bad rules with 400", async () => {
    await expectError(put({ pattern: "Bad Pattern", limitBytes: 1 }), 400, "BAD_REQUEST");
    await expectError(put({ pattern: "a/**", limitBytes: -1 }), 400, "BAD_REQUEST");
    await expectError(put({ pattern: "a/**", limitBytes: 1, extra: true }), 400, "BAD_REQUEST");
    await expectError(req(`/admin/quotas`, { method: "PUT", body: "{" }), 400, "BAD_REQUEST");
  });
});
