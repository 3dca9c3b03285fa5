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
