// Heavy manifest PUTs in slices (issue 10, docs/adr/0022): a manifest with more than
// PUT_SLICE_REFS references is checked and indexed in slices with the thread given back between
// them, so other repositories' objects answer meanwhile; the outcome is that of the one
// transaction it replaces — refusals write nothing, GC cannot slip in between the check and the
// write, and a put that fails or crashes half-way leaves nothing that outlives the object's restart.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { expectError, pushBlob, putManifest, req, bytes } from "./helpers";
import { trustStoreFor } from "../../src/stores";
import { parseManifest, parseManifestSliced } from "../../src/oci/manifest";
import { PUT_SLICE_REFS, type PutManifestInput, type TrustStore } from "../../src/stores/trust-store";
import type { Env } from "../../src/env";

const e = env as unknown as Env;
const uid = () => "hm" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
/** A fake digest of a seeded blob (index rows only; the PUT path checks membership, not bytes). */
const fake = (run: string, i: number) => `sha256:${run.padEnd(32, "0").slice(0, 32)}${i.toString(16).padStart(32, "0")}`;

/** Make `repo`'s object exist (one real blob), then seed `n` blob memberships directly, created long ago. */
async function seed(repo: string, n: number, run = crypto.randomUUID().replace(/-/g, "")): Promise<string[]> {
  await pushBlob(repo, bytes(64, 3));
  const digests = Array.from({ length: n }, (_, i) => fake(run, i));
  await runInDurableObject(trustStoreFor(e, repo), (_i: TrustStore, s) => {
    for (const d of digests) {
      s.storage.sql.exec(`INSERT INTO members (repo, digest, kind, size, r2_key, media_type, created_at) VALUES (?, ?, 'blob', 1, ?, NULL, 0)`, repo, d, `seed/${d}`);
    }
  });
  return digests;
}

function heavyBody(digests: string[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2, mediaType: MANIFEST, artifactType: "application/vnd.cloister.build-cache.v1",
    config: { mediaType: "application/vnd.oci.empty.v1+json", digest: digests[0], size: 1 },
    layers: digests.map((d) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d, size: 1 })),
  }));
}

function input(repo: string, manifest: string, required: string[], more: Partial<PutManifestInput> = {}): PutManifestInput {
  return {
    repo, manifest: { digest: manifest, size: 10, r2Key: `m/${manifest}`, mediaType: MANIFEST }, tag: "t",
    subject: null, artifactType: null, annotations: null, requiredBlobs: required, requiredManifests: [], ...more,
  };
}

/** Rows of this repository's object: refs of `manifest`, pending puts, whether it is a member. */
async function rows(repo: string, manifest: string) {
  return runInDurableObject(trustStoreFor(e, repo), (_i: TrustStore, s) => ({
    refs: s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM refs WHERE manifest = ?`, manifest).one().n,
    pending: s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM pending_puts`).one().n,
    member: s.storage.sql.exec(`SELECT 1 FROM members WHERE digest = ? AND kind = 'manifest'`, manifest).toArray().length > 0,
    indexed: s.storage.sql.exec<{ r: number }>(`SELECT refs_indexed AS r FROM members WHERE digest = ? AND kind = 'manifest'`, manifest).toArray()[0]?.r ?? null,
  }));
}

describe("heavy manifest PUTs run in slices", () => {
  it("a PUT over PUT_SLICE_REFS references is stored whole: membership, tag, every GC reference, no pending row", async () => {
    const repo = uid();
    const digests = await seed(repo, 2 * PUT_SLICE_REFS + 500);
    const body = heavyBody(digests);
    const res = await putManifest(repo, "big", body);
    expect(res.status, await res.clone().text()).toBe(201);
    const digest = res.headers.get("Docker-Content-Digest")!;
    expect(await rows(repo, digest)).toEqual({ refs: digests.length, pending: 0, member: true, indexed: 1 });
    const got = await req(`/v2/${repo}/manifests/big`, { headers: { Accept: MANIFEST } });
    expect(got.status).toBe(200);
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(body);
  });

  it("the object works in many short slices, not one transaction", async () => {
    const repo = uid();
    const digests = await seed(repo, 3 * PUT_SLICE_REFS);
    const r = await trustStoreFor(e, repo).putManifest(input(repo, fake("m1", 1), digests));
    expect(r.ok).toBe(true);
    // 3 check slices + the fence/tag check + 3 reference slices + the final transaction.
    expect(r.slices?.n).toBe(8);
  });

  it("another repository's object answers while a heavy put is in progress", async () => {
    const [a, b] = [uid(), uid()];
    const digests = await seed(a, 10 * PUT_SLICE_REFS);
    await pushBlob(b, bytes(32, 4));
    const order: string[] = [];
    const put = trustStoreFor(e, a).putManifest(input(a, fake("m2", 2), digests)).then((r) => { order.push("put"); return r; });
    // Let the put start its slices, then ask B: on one thread, B can only answer first if A yields.
    await new Promise((r) => setTimeout(r, 0));
    const tags = trustStoreFor(e, b).tags(b, null, null).then(() => order.push("B"));
    await Promise.all([put, tags]);
    expect((await put).ok).toBe(true);
    expect(order).toEqual(["B", "put"]);
  });

  it("a missing reference refuses the sliced PUT with MANIFEST_BLOB_UNKNOWN and writes nothing", async () => {
    const repo = uid();
    const digests = await seed(repo, 2 * PUT_SLICE_REFS + 10);
    const absent = fake("abcdef", 7);
    const body = heavyBody([...digests, absent]);
    const msg = await expectError(putManifest(repo, "big", body), 400, "MANIFEST_BLOB_UNKNOWN");
    expect(msg).toContain(absent);
    const digest = "sha256:" + [...new Uint8Array(await crypto.subtle.digest("SHA-256", body))].map((x) => x.toString(16).padStart(2, "0")).join("");
    expect(await rows(repo, digest)).toEqual({ refs: 0, pending: 0, member: false, indexed: null });
    expect((await req(`/v2/${repo}/tags/list`)).status).toBe(200);
    expect(((await (await req(`/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags ?? []).not.toContain("big");
  });

  it("a tag that would move is refused in the sliced path before anything is written", async () => {
    const repo = uid();
    const digests = await seed(repo, 2 * PUT_SLICE_REFS + 1);
    const trust = trustStoreFor(e, repo);
    const first = fake("m3", 1);
    expect((await trust.putManifest(input(repo, first, digests))).ok).toBe(true);
    const second = fake("m3", 2);
    const r = await trust.putManifest(input(repo, second, digests, { ifTagMoves: "refuse" }));
    expect(r).toMatchObject({ ok: false, tagIsAt: first });
    expect(await rows(repo, second)).toEqual({ refs: 0, pending: 0, member: false, indexed: null });
    expect(await trust.tagDigest(repo, "t")).toBe(first);
  });

  it("GC's membership drop issued during a sliced put waits for it and drops nothing the manifest references", async () => {
    const repo = uid();
    const digests = await seed(repo, 4 * PUT_SLICE_REFS); // created long ago and unreferenced: GC-eligible
    const trust = trustStoreFor(e, repo);
    const put = trust.putManifest(input(repo, fake("m4", 1), digests));
    await new Promise((r) => setTimeout(r, 0));
    const drop = trust.gcDrop(repo, Date.now() + 1000, 500, false);
    const [p, d] = await Promise.all([put, drop]);
    expect(p.ok).toBe(true);
    // Only the one real blob seed() pushed is unreferenced; none of the manifest's references went.
    expect(d.dropped.map((x) => x.digest).filter((x) => digests.includes(x))).toEqual([]);
    const still = await runInDurableObject(trust, (_i: TrustStore, s) =>
      s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM members WHERE kind = 'blob' AND digest LIKE ?`, digests[0].slice(0, 39) + "%").one().n);
    expect(still).toBe(digests.length);
  });

  it("a put that fails half-way through writing references removes what it wrote", async () => {
    const repo = uid();
    const digests = await seed(repo, 2 * PUT_SLICE_REFS);
    const trust = trustStoreFor(e, repo);
    const m = fake("m5", 1);
    // Unverified references (a proxy namespace's) with one SQLite refuses (SQLITE_TOOBIG) in the last slice.
    const huge = "sha256:" + "a".repeat(3_000_000);
    const err = await trust.putManifest(input(repo, m, [], { refs: [...digests, huge] })).then(() => null, (x: unknown) => x);
    expect(String(err)).toMatch(/TOOBIG|too big/);
    expect(await rows(repo, m)).toEqual({ refs: 0, pending: 0, member: false, indexed: null });
    // The object still works, and the same manifest goes through whole.
    expect((await trust.putManifest(input(repo, m, digests))).ok).toBe(true);
    expect(await rows(repo, m)).toMatchObject({ refs: digests.length, pending: 0, member: true });
  });

  it("a crash's leftovers (a pending row and part of the references) are swept: references of a non-member go, a member's stay", async () => {
    const repo = uid();
    const digests = await seed(repo, 3000);
    const trust = trustStoreFor(e, repo);
    const kept = fake("m6", 1);
    expect((await trust.putManifest(input(repo, kept, digests.slice(0, 100)))).ok).toBe(true);
    const lost = fake("m6", 2);
    // What a put that crashed while writing references leaves: its pending row and some refs.
    await runInDurableObject(trust, (_i: TrustStore, s) => {
      s.storage.sql.exec(`INSERT INTO pending_puts (id, repo, manifest, started_at) VALUES ('crashed-1', ?, ?, 0)`, repo, lost);
      s.storage.sql.exec(`INSERT INTO pending_puts (id, repo, manifest, started_at) VALUES ('crashed-2', ?, ?, 0)`, repo, kept);
      for (const d of digests) s.storage.sql.exec(`INSERT OR IGNORE INTO refs (repo, manifest, digest) VALUES (?, ?, ?)`, repo, lost, d);
    });
    expect(await rows(repo, lost)).toMatchObject({ refs: 3000, pending: 2 });
    // GC cannot drop what the crashed put pinned…
    expect((await trust.gcDrop(repo, Date.now() + 1000, 500, true)).dropped.filter((x) => digests.includes(x.digest))).toEqual([]);
    // …until the object starts again (the crash's restart): its constructor sweeps before any request runs.
    const aborted = await runInDurableObject(trust, (_i: TrustStore, s) => { s.abort("simulated crash"); }).then(() => null, (err: unknown) => String(err));
    expect(aborted).toContain("simulated crash");
    const restarted = trustStoreFor(e, repo);
    expect(await rows(repo, lost)).toEqual({ refs: 0, pending: 0, member: false, indexed: null });
    expect((await rows(repo, kept)).refs).toBe(100);
    expect(await restarted.sweepPending()).toBe(0);
    const plan = await restarted.gcDrop(repo, Date.now() + 1000, 500, true);
    // A full page of drops now: the seeded blobs only `lost` referenced (one slot may go to the real blob seed() pushed).
    expect(plan.dropped.length).toBe(500);
    expect(plan.dropped.filter((x) => !digests.includes(x.digest)).length).toBeLessThanOrEqual(1);
    expect(plan.dropped.some((x) => digests.slice(0, 100).includes(x.digest))).toBe(false); // `kept` still pins its 100
  });
});

describe("parseManifestSliced means exactly what parseManifest means", () => {
  const layer = (i: number, extra: Record<string, unknown> = {}) =>
    ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: `sha256:${i.toString(16).padStart(64, "0")}`, size: i + 1, ...extra });
  const enc = (s: string) => new TextEncoder().encode(s);
  const head = `{"schemaVersion":2,"mediaType":"${MANIFEST}","artifactType":"application/vnd.cloister.build-cache.v1",` +
    `"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:${"e".repeat(64)}","size":2}`;
  const layersJson = (n: number, indent?: number) => JSON.stringify(Array.from({ length: n }, (_, i) =>
    layer(i, i % 997 === 0 ? { annotations: { "org.example.note": `ünïcødé ✓ ${i}, "quoted" [x]` } } : {})), null, indent);
  const both = async (body: Uint8Array) => {
    const whole = (() => { try { return { ok: parseManifest(body, MANIFEST) }; } catch (err) { return { err: String((err as Error).message) }; } })();
    const sliced = await parseManifestSliced(body, MANIFEST).then((ok) => ({ ok }), (err: Error) => ({ err: String(err.message) }));
    return { whole, sliced };
  };

  it("a 30,000-layer manifest, pretty-printed with multi-byte annotations, parses to the same value", async () => {
    const body = enc(`${head},\n "layers": ${layersJson(30_000, 1)}, "annotations": {"a": "[,]"}}`);
    const { whole, sliced } = await both(body);
    expect("ok" in whole && whole.ok?.layers.length).toBe(30_000);
    expect(sliced).toEqual(whole);
  });

  it("a repeated layers key: the last one counts, as in JSON.parse", async () => {
    const body = enc(`${head},"layers":${layersJson(20_000)},"layers":[${JSON.stringify(layer(7))}]}`);
    const { whole, sliced } = await both(body);
    expect("ok" in whole && whole.ok?.layers.length).toBe(1);
    expect(sliced).toEqual(whole);
  });

  it("an escaped spelling of layers after the array overrides it, as in JSON.parse", async () => {
    const body = enc(`${head},"layers":${layersJson(20_000)},"la\\u0079ers":"not an array"}`);
    const { whole, sliced } = await both(body);
    expect("err" in whole && whole.err).toContain("layers must be an array");
    expect(sliced).toEqual(whole);
  });

  it("malformed JSON inside the large array gets the same error", async () => {
    const arr = layersJson(20_000);
    const body = enc(`${head},"layers":${arr.slice(0, -1)},]}`);
    const { whole, sliced } = await both(body);
    expect("err" in whole && whole.err).toContain("not valid JSON");
    expect(sliced).toEqual(whole);
  });
});
