// Retention rules (issue 11), applied by GC phase 1: keep the newest N tags by push time, always
// keep tags matching patterns, never remove immutable tags, delete untagged manifests older than
// D days (not children of a remaining index), delete referrers whose subject is gone — in one run,
// cascades included (an index's children, a deleted subject's referrers); a dry run shows the plan.
import { describe, expect, it } from "vitest";
import { expectError, makeImage, putManifest, req, sha256 } from "./helpers";
import { runGc } from "./gc-helpers";

const R = "ret/app";
const json = (method: string, body: unknown) => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
const tick = () => new Promise((ok) => setTimeout(ok, 15)); // distinct push times
const head = async (ref: string) => (await req(`/v2/${R}/manifests/${ref}`, { method: "HEAD", headers: { Accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json" } })).status;

describe("retention", () => {
  it("keeps the newest tags, kept and immutable tags, index children and live referrers; deletes the rest; dry run first", async () => {
    expect((await req("/admin/policies", json("POST", { id: "frozen", kind: "immutable-tags", repositories: ["ret/**"], tags: ["release-*"] }))).status).toBe(201);
    const img = [];
    for (let i = 1; i <= 6; i++) img.push(await makeImage(R, { seed: 100 + i }));
    expect((await putManifest(R, "stable", img[0].manifest)).status).toBe(201);
    await tick();
    expect((await putManifest(R, "release-1", img[1].manifest)).status).toBe(201);
    await tick();
    // an index whose child (img[2]) is untagged
    expect((await putManifest(R, img[2].digest, img[2].manifest)).status).toBe(201);
    const index = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: img[2].digest, size: img[2].manifest.length }],
    }));
    const indexDigest = await sha256(index);
    expect((await putManifest(R, "multi", index, "application/vnd.oci.image.index.v1+json")).status).toBe(201);
    await tick();
    for (const [i, tag] of [[3, "v1"], [4, "v2"], [5, "v3"]] as const) {
      expect((await putManifest(R, tag, img[i].manifest)).status).toBe(201);
      await tick();
    }
    // a referrer of v3 (kept) and a referrer of a subject that will be deleted (img[3], tag v1)
    const referrer = async (subject: { digest: string; manifest: Uint8Array }, n: number) => {
      const base = await makeImage(R, { seed: 200 + n });
      const m = JSON.parse(new TextDecoder().decode(base.manifest));
      m.subject = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: subject.digest, size: subject.manifest.length };
      m.artifactType = "application/vnd.example.sig";
      const bytes = new TextEncoder().encode(JSON.stringify(m));
      expect((await putManifest(R, await sha256(bytes), bytes)).status).toBe(201);
      return sha256(bytes);
    };
    const liveRef = await referrer(img[5], 1);
    const orphanRef = await referrer(img[3], 2);
    // an untagged manifest (pushed by digest)
    const loose = await makeImage(R, { seed: 300 });
    expect((await putManifest(R, loose.digest, loose.manifest)).status).toBe(201);

    const rule = { pattern: "ret/**", keepLastTags: 2, keepTags: ["stable*"], untaggedOlderThanDays: 0, deleteOrphanReferrers: true };
    expect((await req("/admin/retention", json("PUT", rule))).status).toBe(200);
    expect(((await (await req("/admin/retention")).json()) as { rules: unknown[] }).rules).toEqual([expect.objectContaining(rule)]);

    const dry = await runGc({ dryRun: true, graceSeconds: 3600 });
    const plan = dry.stats.retention.map((p) => p.tag ?? p.digest);
    expect(plan).toEqual(expect.arrayContaining(["v1", "multi", loose.digest]));
    expect(plan).not.toContain("stable");
    expect(plan).not.toContain("release-1");
    expect(await head("v1")).toBe(200); // nothing removed
    expect(await head(loose.digest)).toBe(200);

    // the dry run's plan is the whole cascade: the index's child and the orphaned referrer too
    expect(plan).toEqual(expect.arrayContaining([indexDigest, img[2].digest, img[3].digest, orphanRef]));

    const run = await runGc({ graceSeconds: 3600 });
    expect(run.stats.retentionTagsRemoved).toBe(2); // v1, multi
    // kept: newest two, stable*, immutable release-1, the live referrer
    for (const ref of ["v2", "v3", "stable", "release-1", liveRef]) expect(await head(ref)).toBe(200);
    // removed in ONE run: tags beyond the newest two, the index (now untagged), its child (untagged,
    // referenced only by the index), v1's manifest, the referrer whose subject that was, the loose one
    for (const ref of ["v1", "multi"]) expect(await head(ref)).toBe(404);
    for (const d of [indexDigest, img[2].digest, img[3].digest, orphanRef, loose.digest]) expect(await head(d)).toBe(404);
    expect(run.stats.retentionManifestsDeleted).toBe(5);
    // nothing was left for a second run
    const next = await runGc({ graceSeconds: 3600 });
    expect(next.stats.retentionTagsRemoved + next.stats.retentionManifestsDeleted).toBe(0);
    const tags = ((await (await req(`/v2/${R}/tags/list`)).json()) as { tags: string[] }).tags;
    expect(tags.sort()).toEqual(["release-1", "stable", "v2", "v3"]);

    expect((await req(`/admin/retention?pattern=${encodeURIComponent("ret/**")}`, { method: "DELETE" })).status).toBe(204);
    await expectError(req("/admin/retention", json("PUT", { pattern: "ret/**", keepLastTags: -1 })), 400, "BAD_REQUEST");
    await expectError(req("/admin/retention", json("PUT", { pattern: "ret/**", keepTags: ["a/b"] })), 400, "BAD_REQUEST");
  });
});
