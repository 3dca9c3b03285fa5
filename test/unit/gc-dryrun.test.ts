// A dry run reports exactly what a real run would delete (issue 11): on the same state, the dry
// run's plan — memberships dropped, retention removals, rows condemned and bytes — equals the real
// run's result, including digests freed only by the run's own phase 1 (blobs whose last holder
// the drops release, children of an index retention deletes, referrers whose subject it
// deletes, blobs only a deleted manifest referenced); and the dry run deletes nothing.
import { describe, expect, it } from "vitest";
import { bytes, makeImage, pushBlob, putManifest, req, sha256 } from "./helpers";
import { E, keyOf, pullsVerified, r2Has, runGc } from "./gc-helpers";
import type { RunStats } from "../../src/gc/steps";

const json = (method: string, body: unknown) => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
const counts = (s: RunStats) => ({
  membershipsDropped: s.membershipsDropped, membershipBytesDropped: s.membershipBytesDropped, reposUncataloged: s.reposUncataloged,
  retentionTagsRemoved: s.retentionTagsRemoved, retentionManifestsDeleted: s.retentionManifestsDeleted, condemned: s.condemned,
});

async function r2Total(): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let total = 0;
  let cursor: string | undefined;
  do {
    const page = await E.BUCKET.list({ cursor, limit: 1000 });
    for (const o of page.objects) {
      objects++;
      total += o.size;
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return { objects, bytes: total };
}

describe("dry run", () => {
  it("plans exactly what the real run then deletes, including what its own drops and retention free", async () => {
    // shared: one blob in two repositories; both delete it → freed only because both drops release it
    const shared = bytes(5000, 1);
    const s = await pushBlob("dry/one", shared);
    await pushBlob("dry/two", shared);
    // held elsewhere: dry/one deletes it, dry/keep still holds it → not freed
    const kept = bytes(4000, 2);
    const k = await pushBlob("dry/one", kept);
    await pushBlob("dry/keep", kept);
    const cfg = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", keep: true }));
    const keepManifest = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await pushBlob("dry/keep", cfg), size: cfg.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: k, size: kept.length }],
    }));
    expect((await putManifest("dry/keep", "v1", keepManifest)).status).toBe(201); // dry/keep still needs it
    // an image whose manifest is deleted: its config and layer are freed by the drops
    const gone = await makeImage("dry/one", { seed: 3 });
    expect((await putManifest("dry/one", "old", gone.manifest)).status).toBe(201);
    expect((await req(`/v2/dry/one/manifests/${gone.digest}`, { method: "DELETE" })).status).toBe(202);
    for (const d of [s, k]) expect((await req(`/v2/dry/one/blobs/${d}`, { method: "DELETE" })).status).toBe(202);
    expect((await req(`/v2/dry/two/blobs/${s}`, { method: "DELETE" })).status).toBe(202);

    // retention: an index beyond keepLastTags whose child is untagged, and a referrer of a manifest that goes
    const R = "dry/ret";
    const child = await makeImage(R, { seed: 4 });
    expect((await putManifest(R, child.digest, child.manifest)).status).toBe(201);
    const index = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: child.digest, size: child.manifest.length }],
    }));
    expect((await putManifest(R, "multi", index, "application/vnd.oci.image.index.v1+json")).status).toBe(201);
    await new Promise((ok) => setTimeout(ok, 15));
    const subject = await makeImage(R, { seed: 5 });
    expect((await putManifest(R, "v1", subject.manifest)).status).toBe(201);
    await new Promise((ok) => setTimeout(ok, 15));
    const base = await makeImage(R, { seed: 6 });
    const m = JSON.parse(new TextDecoder().decode(base.manifest));
    m.subject = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: subject.digest, size: subject.manifest.length };
    const ref = new TextEncoder().encode(JSON.stringify(m));
    expect((await putManifest(R, await sha256(ref), ref)).status).toBe(201);
    const newest = await makeImage(R, { seed: 7 });
    expect((await putManifest(R, "v2", newest.manifest)).status).toBe(201);
    expect((await req("/admin/retention", json("PUT", { pattern: "dry/ret", keepLastTags: 1, untaggedOlderThanDays: 0, deleteOrphanReferrers: true }))).status).toBe(200);

    const before = await r2Total();
    const dry = await runGc({ dryRun: true });
    expect(await r2Total()).toEqual(before); // deletes nothing
    for (const [repo, d] of [["dry/keep", k], ["dry/ret", child.config], ["dry/ret", base.config]] as const) expect(await pullsVerified(repo, d)).toBe(true);
    expect(await keyOf(gone.digest)).not.toBeNull();

    const real = await runGc();
    const after = await r2Total();
    console.log("dry run plan vs real run:", JSON.stringify({ dry: counts(dry.stats), real: counts(real.stats), condemnedBytes: dry.stats.condemnedBytes, bytesFreed: real.stats.bytesFreed }));
    expect(real.stats.errors).toEqual([]);
    expect(counts(dry.stats)).toEqual(counts(real.stats));
    expect(dry.stats.condemnedBytes).toBe(real.stats.bytesFreed);
    expect(before.bytes - after.bytes).toBe(real.stats.bytesFreed);
    expect(dry.stats.retention.map((r) => r.digest).sort()).toEqual(real.stats.retention.map((r) => r.digest).sort());
    // what the plan counts includes digests only this run's own phase 1 frees
    expect(real.stats.retentionTagsRemoved).toBe(2); // multi, v1
    expect(real.stats.retentionManifestsDeleted).toBe(4); // index, its child, v1's manifest, its referrer
    for (const d of [s, gone.config, gone.digest, child.digest, child.config]) expect(await keyOf(d)).toBeNull();
    expect(await r2Has((await keyOf(k))!)).toBe(true);
    expect(await pullsVerified(R, newest.layers[0])).toBe(true);
  });
});
