// Restore of a snapshot into an empty registry (docs/adr/0016), then the export of what was
// restored. The bytes are put into R2 directly first, as a bucket that survived its index would
// hold them; the records are what `cloister snapshot` writes.
import { env } from "cloudflare:workers";
import { describe, expect, test } from "vitest";
import { bytes, expectError, req, sha256 } from "./helpers";

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
const hex = (d: string) => d.slice("sha256:".length);

async function stored(data: Uint8Array, key: string) {
  await env.BUCKET.put(key, data);
  const digest = await sha256(data);
  return { type: "blob", digest, size: data.length, r2Key: key, contentSha256: hex(digest) };
}

const cfgBytes = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux" }));
const layerBytes = bytes(3000, 5);
const lostBytes = bytes(100, 9);

let restoreId = "";
let image: { manifest: Uint8Array; digest: string; config: string; layer: string; lost: string; artifact: string };
let records: Record<string, unknown>[];

describe("restore into an empty registry", () => {
  test("a restore starts only through the admin API, and an empty registry accepts it", async () => {
    const config = await stored(cfgBytes, `data/${crypto.randomUUID()}/${crypto.randomUUID()}`);
    const layer = await stored(layerBytes, `data/${crypto.randomUUID()}/${crypto.randomUUID()}`);
    const lostDigest = await sha256(lostBytes); // never put into R2: its bytes are "lost"
    const m = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config.digest, size: cfgBytes.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layerBytes.length }],
    }));
    const md = await sha256(m);
    const manifest = await stored(m, `manifests/sha256/${hex(md)}/${crypto.randomUUID()}`);
    // An artifact referring to the image (a referrer), to restore its referrers row too.
    const a = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/x-test-sbom",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config.digest, size: cfgBytes.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layerBytes.length }],
      subject: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: md, size: m.length },
    }));
    const ad = await sha256(a);
    const artifact = await stored(a, `manifests/sha256/${hex(ad)}/${crypto.randomUUID()}`);
    image = { manifest: m, digest: md, config: config.digest, layer: layer.digest, lost: lostDigest, artifact: ad };
    const t = 1_700_000_000_000;
    records = [
      { type: "user", name: "alice", createdAt: 1_700_000_000, updatedAt: 1_700_000_001 },
      { type: "rule", rule: { id: "public-app", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["snap/app"] }, robot: null, createdAt: 1_700_000_000, updatedAt: 1_700_000_000 },
      { type: "rule", rule: { id: "robot:alice+ci:0", effect: "allow", subjects: ["robot:alice+ci"], actions: ["pull"], repositories: ["alice/**"] }, robot: "robot$alice+ci", createdAt: 1, updatedAt: 1 },
      config, layer, manifest, artifact,
      { type: "blob", digest: lostDigest, size: lostBytes.length, r2Key: `data/${crypto.randomUUID()}/x`, contentSha256: hex(lostDigest) },
      { type: "rows", repository: "snap/app", table: "repos", rows: [{ created_at: t, needs_backfill: 0 }] },
      { type: "rows", repository: "snap/app", table: "refs", rows: [{ manifest: md, digest: config.digest }, { manifest: md, digest: layer.digest }, { manifest: ad, digest: config.digest }, { manifest: ad, digest: layer.digest }] },
      { type: "rows", repository: "snap/app", table: "members", rows: [
        { digest: config.digest, kind: "blob", size: cfgBytes.length, r2_key: "ignored", media_type: null, created_at: t, refs_indexed: 0 },
        { digest: layer.digest, kind: "blob", size: layerBytes.length, r2_key: "ignored", media_type: null, created_at: t, refs_indexed: 0 },
        { digest: lostDigest, kind: "blob", size: lostBytes.length, r2_key: "ignored", media_type: null, created_at: t, refs_indexed: 0 },
        { digest: md, kind: "manifest", size: m.length, r2_key: "ignored", media_type: "application/vnd.oci.image.manifest.v1+json", created_at: t, refs_indexed: 1 },
        { digest: ad, kind: "manifest", size: a.length, r2_key: "ignored", media_type: "application/vnd.oci.image.manifest.v1+json", created_at: t, refs_indexed: 1 },
      ] },
      { type: "rows", repository: "snap/app", table: "tags", rows: [{ tag: "v1", digest: md, updated_at: t }, { tag: "gone", digest: lostDigest, updated_at: t }] },
      { type: "rows", repository: "snap/app", table: "referrers", rows: [
        { subject: md, digest: ad, media_type: "application/vnd.oci.image.manifest.v1+json", size: a.length, artifact_type: "application/x-test-sbom", annotations: JSON.stringify({ "org.example.kind": "sbom" }), created_at: t },
      ] },
    ];
    expect((await (await req("/admin/restore")).json()) as unknown).toEqual({ restore: null });
    const r = await req("/admin/restore", json({}));
    expect(r.status).toBe(201);
    const begun = (await r.json()) as { id: string; state: string };
    expect(begun.state).toBe("running");
    restoreId = begun.id;
    // One restore at a time: a second begin is refused, a resume gets the same one.
    expect(await expectError(req("/admin/restore", json({})), 409, "CONFLICT")).toMatch(/running/);
    const resumed = await req("/admin/restore", json({ resume: true }));
    expect(resumed.status).toBe(201);
    expect(((await resumed.json()) as { id: string }).id).toBe(restoreId);
  });

  test("bad records are refused with 400 and nothing of the call is written", async () => {
    const url = `/admin/restore/${restoreId}/records`;
    const bad = [
      { records: [records[0], { type: "rows", repository: "snap/app", table: "tags", rows: [{ tag: "x", digest: image.digest, updated_at: 1, evil: "1); DROP TABLE tags; --" }] }] },
      { records: [records[0], { type: "blob", digest: image.layer, size: 1, r2Key: "audit-spool/x.json", contentSha256: hex(image.layer) }] },
      { records: [records[0], { type: "rows", repository: "Not A Name", table: "tags", rows: [] }] },
      { records: [records[0], { type: "rule", rule: { id: "builtin:x", effect: "allow" }, createdAt: 1, updatedAt: 1 }] },
      { records: [records[0], { type: "teleport" }] },
      { records: [{ type: "user", name: "admin", createdAt: 1, updatedAt: 1 }] },
      { records: Array.from({ length: 1001 }, () => records[0]) },
      { records: Array.from({ length: 101 }, (_, i) => ({ type: "rows", repository: `many/r${i}`, table: "tags", rows: [] })) },
    ];
    for (const body of bad) await expectError(req(url, json(body)), 400, "BAD_REQUEST");
    await expectError(req(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{not json" }), 400, "BAD_REQUEST");
    await expectError(req(`/admin/restore/not-the-id/records`, json({ records: [] })), 404, "NOT_FOUND");
    // None of the refused calls created the user.
    expect((await (await req("/admin/users")).json()) as { users: unknown[] }).toMatchObject({ users: [] });
  });

  test("records are restored; bytes missing from the bucket are reported and never referenced", async () => {
    const r = await req(`/admin/restore/${restoreId}/records`, json({ records }));
    expect(r.status).toBe(200);
    const out = (await r.json()) as Record<string, unknown>;
    expect(out).toMatchObject({ users: 1, rules: 1, skippedRobotRules: 1, blobs: 4, missingBytes: [image.lost] });
    expect(out.missing).toEqual([{ repository: "snap/app", digests: [image.lost] }]);
    // A retried call is harmless: nothing new is written.
    const again = (await (await req(`/admin/restore/${restoreId}/records`, json({ records }))).json()) as Record<string, unknown>;
    expect(again).toMatchObject({ users: 0, rules: 0, blobs: 0, rows: 0 });
    const fin = await req(`/admin/restore/${restoreId}/finish`, { method: "POST" });
    expect(fin.status).toBe(200);
    expect(((await fin.json()) as { state: string }).state).toBe("done");
  });

  test("the restored registry serves the image, tag, catalog, users and rules", async () => {
    const m = await req("/v2/snap/app/manifests/v1");
    expect(m.status).toBe(200);
    expect(m.headers.get("Docker-Content-Digest")).toBe(image.digest);
    expect(new Uint8Array(await m.arrayBuffer())).toEqual(image.manifest);
    const l = await req(`/v2/snap/app/blobs/${image.layer}`);
    expect(l.status).toBe(200);
    expect(new Uint8Array(await l.arrayBuffer())).toEqual(layerBytes);
    expect((await req(`/v2/snap/app/blobs/${image.lost}`)).status).toBe(404);
    const refs = (await (await req(`/v2/snap/app/referrers/${image.digest}`)).json()) as { manifests: { digest: string; artifactType: string; annotations: Record<string, string> }[] };
    expect(refs.manifests).toEqual([expect.objectContaining({ digest: image.artifact, artifactType: "application/x-test-sbom", annotations: { "org.example.kind": "sbom" } })]);
    expect((await req("/v2/snap/app/manifests/gone")).status).toBe(404);
    expect(await (await req("/v2/snap/app/tags/list")).json()).toEqual({ name: "snap/app", tags: ["v1"] });
    expect(await (await req("/v2/_catalog")).json()).toEqual({ repositories: ["snap/app"] });
    const users = (await (await req("/admin/users")).json()) as { users: { name: string; createdAt: number }[] };
    expect(users.users.map((u) => [u.name, u.createdAt])).toEqual([["alice", 1_700_000_000]]);
    const rule = await req("/admin/policies/public-app");
    expect(rule.status).toBe(200);
    expect((await req("/admin/policies/robot:alice+ci:0")).status).toBe(404);
    // The mount of a restored blob into another repository works (BlobStore holds it).
    const mount = await req(`/v2/other/app/blobs/uploads/?mount=${image.layer}&from=snap/app`, { method: "POST" });
    expect(mount.status).toBe(201);
  });

  test("a restored registry refuses another restore", async () => {
    expect(await expectError(req("/admin/restore", json({})), 409, "CONFLICT")).toMatch(/only into an empty registry/);
    await expectError(req(`/admin/restore/${restoreId}/records`, json({ records })), 404, "NOT_FOUND");
  });

  test("the export gives back what was restored, in bounded pages", async () => {
    const users = (await (await req("/admin/snapshot/accounts?kind=users")).json()) as { items: unknown[]; next: string | null };
    expect(users).toEqual({ items: [{ name: "alice", createdAt: 1_700_000_000, updatedAt: 1_700_000_001 }], next: null });
    expect(JSON.stringify(users)).not.toMatch(/pbkdf2/);
    const rules = (await (await req("/admin/snapshot/accounts?kind=rules")).json()) as { items: { rule: { id: string } }[] };
    expect(rules.items.map((r) => r.rule.id)).toEqual(["public-app"]);
    const p1 = (await (await req("/admin/snapshot/blobs?n=1")).json()) as { items: { digest: string }[]; next: string };
    expect(p1.items.length).toBe(1);
    const p2 = (await (await req(`/admin/snapshot/blobs?n=500&after=${encodeURIComponent(p1.next)}`)).json()) as { items: { digest: string }[]; next: null };
    expect([...p1.items, ...p2.items].map((b) => b.digest).sort()).toEqual([image.config, image.layer, image.digest, image.artifact].sort());
    expect(p2.next).toBeNull();
    expect(await (await req("/admin/snapshot/repositories")).json()).toEqual({ items: ["other/app", "snap/app"], next: null }); // other/app: the mount above
    const rows = (await (await req("/admin/snapshot/repositories/snap/app")).json()) as { parts: { table: string; rows: Record<string, unknown>[] }[]; next: unknown };
    expect(rows.next).toBeNull();
    const table = (t: string) => rows.parts.find((p) => p.table === t)?.rows ?? [];
    expect(table("tags")).toEqual([{ tag: "v1", digest: image.digest, updated_at: 1_700_000_000_000 }]);
    expect(table("members").map((m) => m.digest).sort()).toEqual([image.config, image.layer, image.digest, image.artifact].sort());
    expect(table("refs").length).toBe(4);
    expect(table("referrers")).toEqual([expect.objectContaining({ subject: image.digest, digest: image.artifact, artifact_type: "application/x-test-sbom" })]);
    await expectError(req("/admin/snapshot/repositories/no/such"), 404, "NAME_UNKNOWN");
    await expectError(req("/admin/snapshot/repositories/snap/app?cursor=%7Bbad"), 400, "BAD_REQUEST");
    const cursor = (c: unknown) => `/admin/snapshot/repositories/snap/app?cursor=${encodeURIComponent(JSON.stringify(c))}`;
    await expectError(req(cursor({ table: 1, after: ["only-one-of-two-keys"] })), 400, "BAD_REQUEST");
    await expectError(req(cursor({ table: 9, after: null })), 400, "BAD_REQUEST");
    await expectError(req("/admin/snapshot/repositories/snap/%E0%A4%A"), 400, "BAD_REQUEST");
    await expectError(req("/admin/snapshot/accounts?kind=secrets"), 400, "BAD_REQUEST");
    await expectError(req("/admin/snapshot/blobs?n=0"), 400, "BAD_REQUEST");
  });
});
