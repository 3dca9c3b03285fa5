// Reconcile (docs/adr/0011): R2 objects no BlobStore row names and older than the grace period
// are deleted, except an open upload's; rows whose object is missing are reported (the
// data-loss alarm), listed and kept; a dry run deletes nothing.
import { describe, expect, it } from "vitest";
import { bytes, makeImage, patch, pushBlob, putManifest, req, sha256, startUpload, withQuery } from "./helpers";
import { E, keyOf, pullsVerified, r2Has, runGc } from "./gc-helpers";

const uid = () => "rc" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);

describe("reconcile", () => {
  it("deletes unindexed objects older than the grace period, keeps young ones, open uploads' and indexed ones", async () => {
    const orphan = `data/${crypto.randomUUID()}/blob`; // as a crashed monolithic POST leaves it
    await E.BUCKET.put(orphan, bytes(2048, 1));
    const stray = `manifests/sha256/${"ab".repeat(32)}/${crypto.randomUUID()}`;
    await E.BUCKET.put(stray, bytes(300, 2));
    // objects outside the indexed prefixes belong to other parts (the audit spool) and are never orphans
    const spooled = `audit-spool/2026-01-01/${crypto.randomUUID()}.json`;
    await E.BUCKET.put(spooled, "{}");
    const r = uid();
    const img = await makeImage(r, { seed: 3 });
    expect((await putManifest(r, "v1", img.manifest)).status).toBe(201);
    const kept = img.layers[0];
    // an open chunked upload: its tail object has no row yet
    const loc = await startUpload(r);
    const part = bytes(3000, 4);
    expect((await patch(loc, part, 0)).status).toBe(202);

    const young = await runGc({ reconcile: true, graceSeconds: 3600 });
    expect(young.stats.orphansDeleted).toBe(0);
    expect(await r2Has(orphan)).toBe(true);

    const dry = await runGc({ reconcile: true, dryRun: true });
    expect(dry.stats.orphansDeleted).toBeGreaterThanOrEqual(2);
    expect(await r2Has(orphan)).toBe(true);

    const run = await runGc({ reconcile: true, graceSeconds: 0 });
    expect(run.stats.orphansDeleted).toBeGreaterThanOrEqual(2);
    expect(run.stats.orphanBytes).toBeGreaterThanOrEqual(2048 + 300);
    expect(await r2Has(orphan)).toBe(false);
    expect(await r2Has(stray)).toBe(false);
    expect(await r2Has(spooled)).toBe(true);
    // the open upload still completes, and what was indexed is untouched
    const d = await sha256(part);
    expect((await req(withQuery(loc, `digest=${d}`), { method: "PUT" })).status).toBe(201);
    expect(await pullsVerified(r, d)).toBe(true);
    expect(await r2Has((await keyOf(kept))!)).toBe(true);
    expect(await pullsVerified(r, kept)).toBe(true);
  });

  it("reports a row whose object is gone (data-loss alarm) and keeps the row", async () => {
    const r = uid();
    const d = await pushBlob(r, bytes(1800, 5));
    // keep it referenced-free but young: grace 3600 keeps the membership; the object is deleted by hand
    const key = (await keyOf(d))!;
    await E.BUCKET.delete(key);
    const run = await runGc({ reconcile: true, graceSeconds: 3600 });
    expect(run.stats.missingCount).toBeGreaterThanOrEqual(1);
    expect(run.stats.missing).toContainEqual({ digest: d, r2Key: key });
    expect(await keyOf(d)).toBe(key); // listed for the operator, not dropped
    const status = (await (await req(`/admin/gc`)).json()) as { history: { stats: { missing: { digest: string }[] } }[] };
    expect(status.history[0].stats.missing.map((m) => m.digest)).toContain(d);
  });
});
