// Issue 9, defects 1–5: every size or count a client controls has a limit that answers 4xx with
// the OCI envelope, nothing large crosses a Durable Object call, and a refused write stores nothing.
// The numbers here are the documented limits (docs/limits.md); they are written out, not imported,
// so a change to a limit is a visible change to this test too.
import { env as workerEnv } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req, reqWith, sha256 } from "./helpers";
import { blobStoreFor, trustStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";

const env = workerEnv as unknown as Env;

const OCI = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const EMPTY = "application/vnd.oci.empty.v1+json";
const LAYER = "application/vnd.oci.image.layer.v1.tar";
const MiB = 1024 * 1024;
const te = new TextEncoder();
const enc = (v: unknown) => te.encode(JSON.stringify(v));

/** A syntactically valid digest that names no content (cheap to make by the thousand). */
const fakeDigest = (i: number, salt = 0) => `sha256:${salt.toString(16).padStart(8, "0")}${i.toString(16).padStart(56, "0")}`;

/** Count the R2 objects (and their bytes) under a prefix. */
async function r2Usage(prefix = ""): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let total = 0;
  let cursor: string | undefined;
  for (;;) {
    const page = await env.BUCKET.list({ prefix, cursor });
    for (const o of page.objects) {
      objects++;
      total += o.size;
    }
    if (!page.truncated) break;
    cursor = page.cursor;
  }
  return { objects, bytes: total };
}

/** An empty-config artifact referring to `subject`, with the given annotations (not pushed). */
async function referrer(repo: string, subject: string, annotations: Record<string, string>, artifactType = "application/x.test") {
  const empty = await pushBlob(repo, te.encode("{}"));
  return enc({
    schemaVersion: 2, mediaType: OCI, artifactType,
    config: { mediaType: EMPTY, digest: empty, size: 2 },
    layers: [],
    subject: { mediaType: OCI, digest: subject, size: 100 },
    annotations,
  });
}

type Index = { manifests: { digest: string; annotations?: Record<string, string> }[] };

/** Follow Link headers from `path`; returns every page's body length and the digests listed. */
async function walk(path: string) {
  const sizes: number[] = [];
  const digests: string[] = [];
  let next: string | null = path;
  while (next) {
    const res = await req(next);
    expect(res.status).toBe(200);
    const text = await res.text();
    sizes.push(te.encode(text).length);
    digests.push(...(JSON.parse(text) as Index).manifests.map((m) => m.digest));
    const link = res.headers.get("Link");
    next = link ? link.slice(1, link.indexOf(">")) : null;
  }
  return { sizes, digests };
}

describe("defect 1: referrers annotation filters", () => {
  it("49+ filters no longer reach SQLite: 17 filters get 400 naming the limit of 16", async () => {
    const subject = fakeDigest(1, 1);
    const filters = (k: number) => Array.from({ length: k }, (_, i) => `annotation=k${i}=v${i}`).join("&");
    const msg = await expectError(req(`/v2/lim/filters/referrers/${subject}?${filters(49)}`), 400, "UNSUPPORTED");
    expect(msg).toContain("16");
    expect(await expectError(req(`/v2/lim/filters/referrers/${subject}?${filters(17)}`), 400, "UNSUPPORTED")).toMatch(/at most 16/);
  });

  it("16 filters are evaluated, all must match, and keys match exactly (dots, spaces, quotes, JSON-path characters)", async () => {
    const repo = "lim/filter16";
    const subject = fakeDigest(2, 1);
    const ann: Record<string, string> = {};
    for (let i = 0; i < 16; i++) ann[`org.example.k${i}.x y/$[*]"'`] = `v${i}`;
    const m = await referrer(repo, subject, ann);
    expect((await putManifest(repo, await sha256(m), m)).status).toBe(201);
    const other = await referrer(repo, subject, { ...ann, "org.example.k15.x y/$[*]\"'": "different" });
    expect((await putManifest(repo, await sha256(other), other)).status).toBe(201);
    const q = Object.entries(ann).map(([k, v]) => `annotation=${encodeURIComponent(`${k}=${v}`)}`).join("&");
    const res = await req(`/v2/${repo}/referrers/${subject}?${q}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("OCI-Filters-Applied")).toBe("annotation");
    expect(((await res.json()) as Index).manifests.map((x) => x.digest)).toEqual([await sha256(m)]);
    // a filter on a key the referrer lacks matches nothing; a repeated key with two values matches nothing
    const none = await req(`/v2/${repo}/referrers/${subject}?annotation=absent=v0`);
    expect(((await none.json()) as Index).manifests).toEqual([]);
    const both = await req(`/v2/${repo}/referrers/${subject}?annotation=${encodeURIComponent("org.example.k0.x y/$[*]\"'=v0")}&annotation=${encodeURIComponent("org.example.k0.x y/$[*]\"'=v1")}`);
    expect(((await both.json()) as Index).manifests).toEqual([]);
  });

  it("bounds filter key and value length", async () => {
    const subject = fakeDigest(3, 1);
    expect(await expectError(req(`/v2/lim/filters/referrers/${subject}?annotation=${"k".repeat(257)}=v`), 400, "UNSUPPORTED")).toMatch(/256/);
    expect(await expectError(req(`/v2/lim/filters/referrers/${subject}?annotation=k=${"v".repeat(4097)}`), 400, "UNSUPPORTED")).toMatch(/4096/);
    expect((await req(`/v2/lim/filters/referrers/${subject}?annotation=${"k".repeat(256)}=${"v".repeat(4096)}`)).status).toBe(200);
  });
});

describe("defect 2: large manifests never cross a Durable Object call", () => {
  it("accepts an image manifest of exactly MAX_MANIFEST_BYTES (32 MiB) byte-exact; one byte more is 413", async () => {
    const repo = "lim/huge";
    const img = await makeImage(repo, { seed: 21 });
    const base = JSON.parse(new TextDecoder().decode(img.manifest)) as Record<string, unknown>;
    base.annotations = { pad: "" };
    const pad = 32 * MiB - enc(base).length;
    base.annotations = { pad: "x".repeat(pad) };
    const body = enc(base);
    expect(body.length).toBe(32 * MiB);
    const res = await putManifest(repo, "max", body);
    if (res.status !== 201) throw new Error(`expected 201, got ${res.status}: ${(await res.text()).slice(0, 300)}`);
    const digest = await sha256(body);
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    const got = await req(`/v2/${repo}/manifests/max`);
    expect(got.status).toBe(200);
    expect(await sha256(new Uint8Array(await got.arrayBuffer()))).toBe(digest);
    base.annotations = { pad: "x".repeat(pad + 1) };
    await expectError(putManifest(repo, "over", enc(base)), 413, "SIZE_INVALID");
  });

  it("refuses a referrer whose annotations exceed 64 KiB with 400 naming the limit, and stores nothing", async () => {
    const repo = "lim/bigann";
    const subject = fakeDigest(4, 1);
    const m = await referrer(repo, subject, { "org.example.blob": "a".repeat(4000 * 1024) });
    const digest = await sha256(m);
    const before = await r2Usage("manifests/");
    const msg = await expectError(putManifest(repo, digest, m), 400, "MANIFEST_INVALID");
    expect(msg).toContain("65536");
    expect(await r2Usage("manifests/")).toEqual(before);
    expect(await blobStoreFor(env, digest).get(digest)).toBeNull();
    await expectError(req(`/v2/${repo}/manifests/${digest}`), 404, "MANIFEST_UNKNOWN");
    expect(((await (await req(`/v2/${repo}/referrers/${subject}`)).json()) as Index).manifests).toEqual([]);
  });

  it("serves a referrer with annotations just under 64 KiB in full", async () => {
    const repo = "lim/okann";
    const subject = fakeDigest(5, 1);
    const big = "b".repeat(64 * 1024 - 40);
    const m = await referrer(repo, subject, { "org.example.sig": big });
    expect(te.encode(JSON.stringify({ "org.example.sig": big })).length).toBeLessThanOrEqual(64 * 1024);
    expect((await putManifest(repo, await sha256(m), m)).status).toBe(201);
    const idx = (await (await req(`/v2/${repo}/referrers/${subject}`)).json()) as Index;
    expect(idx.manifests[0].annotations).toEqual({ "org.example.sig": big });
  });

  it("a manifest without a subject may carry large annotations (only referrers index them)", async () => {
    const repo = "lim/plainann";
    const img = await makeImage(repo, { seed: 22, extra: { annotations: { pad: "p".repeat(3 * MiB) } } });
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201);
  });
});

describe("defect 3: a referrers page is bounded in bytes", () => {
  it("rows stored before the annotation cap (18 × 1.9 MiB) still list, in pages of at most 4 MiB", async () => {
    const repo = "lim/legacyref";
    const subject = fakeDigest(6, 1);
    const want: string[] = [];
    // Such rows could be written before the 64 KiB cap existed; write them as that version did.
    await runInDurableObject(trustStoreFor(env, repo), (instance, state) => {
      // A repository's object creates its schema on its first write (ADR 0008): create it here.
      (instance as unknown as { init?: () => void }).init?.();
      const sql = state.storage.sql;
      const cols = sql.exec<{ name: string }>(`PRAGMA table_info(referrers)`).toArray().map((r) => r.name);
      for (let i = 0; i < 18; i++) {
        const digest = fakeDigest(i, 0xdead);
        want.push(digest);
        const annotations = JSON.stringify({ "org.example.pad": "p".repeat(Math.floor(1.9 * MiB)), "org.example.i": String(i) });
        if (cols.includes("repo")) {
          sql.exec(`INSERT INTO referrers (repo, subject, digest, media_type, size, artifact_type, annotations, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
            repo, subject, digest, OCI, 1000, "application/x.legacy", annotations, Date.now());
        } else {
          sql.exec(`INSERT INTO referrers (subject, digest, media_type, size, artifact_type, annotations, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
            subject, digest, OCI, 1000, "application/x.legacy", annotations, Date.now());
        }
      }
    });
    const { sizes, digests } = await walk(`/v2/${repo}/referrers/${subject}`);
    expect(digests.sort()).toEqual(want.sort());
    expect(sizes.length).toBeGreaterThan(1);
    for (const s of sizes) expect(s).toBeLessThanOrEqual(4 * MiB + 64 * 1024);
  });

  it("a default page of pushed referrers shrinks to fit 4 MiB, with Link to the rest", async () => {
    const repo = "lim/manyref";
    const subject = fakeDigest(7, 1);
    const want: string[] = [];
    for (let i = 0; i < 72; i++) {
      const m = await referrer(repo, subject, { "org.example.i": String(i), "org.example.pad": "z".repeat(60 * 1024) });
      const d = await sha256(m);
      expect((await putManifest(repo, d, m)).status).toBe(201);
      want.push(d);
    }
    const first = await req(`/v2/${repo}/referrers/${subject}`);
    expect(first.headers.get("Link")).toMatch(/rel="next"/);
    const { sizes, digests } = await walk(`/v2/${repo}/referrers/${subject}`);
    expect(digests.sort()).toEqual(want.sort());
    expect(sizes.length).toBe(2);
    for (const s of sizes) expect(s).toBeLessThanOrEqual(4 * MiB);
    // `n` still bounds the count
    const two = (await (await req(`/v2/${repo}/referrers/${subject}?n=2`)).json()) as Index;
    expect(two.manifests.length).toBe(2);
  });
});

describe("defect 4: a refused manifest PUT stores nothing", () => {
  it("three 10 MiB manifests with a missing config get MANIFEST_BLOB_UNKNOWN and add no R2 object or BlobStore row", async () => {
    const repo = "lim/refused";
    const layer = await pushBlob(repo, bytes(100, 41));
    const before = await r2Usage();
    for (let i = 0; i < 3; i++) {
      const m = enc({
        schemaVersion: 2, mediaType: OCI,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: fakeDigest(i, 0xc0f), size: 10 },
        layers: [{ mediaType: LAYER, digest: layer, size: 100 }],
        annotations: { pad: String(i).repeat(10 * MiB) },
      });
      const digest = await sha256(m);
      await expectError(putManifest(repo, `t${i}`, m), 400, "MANIFEST_BLOB_UNKNOWN");
      expect(await blobStoreFor(env, digest).get(digest)).toBeNull();
    }
    expect(await r2Usage()).toEqual(before);
  });

  it("an index with a missing child stores nothing either", async () => {
    const repo = "lim/refusedidx";
    const before = await r2Usage();
    const m = enc({ schemaVersion: 2, mediaType: INDEX, manifests: [{ mediaType: OCI, digest: fakeDigest(1, 0x1d), size: 10 }], annotations: { pad: "q".repeat(MiB) } });
    await expectError(putManifest(repo, "idx", m, INDEX), 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await blobStoreFor(env, await sha256(m)).get(await sha256(m))).toBeNull();
    expect(await r2Usage()).toEqual(before);
  });
});

describe("defect 5: references per manifest are capped and checked in batches", () => {
  const manyLayers = (count: number, configDigest: string, salt: number) => enc({
    schemaVersion: 2, mediaType: OCI,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: 10 },
    layers: Array.from({ length: count }, (_, i) => ({ mediaType: LAYER, digest: fakeDigest(i, salt), size: 1 })),
  });

  it("100,000 layers: 400 MANIFEST_INVALID naming the limit of 10000, nothing stored", async () => {
    const before = await r2Usage();
    const m = manyLayers(100_000, fakeDigest(0, 0xcf), 0x100);
    const msg = await expectError(putManifest("lim/wide", "v1", m), 400, "MANIFEST_INVALID");
    expect(msg).toMatch(/10000/);
    expect(await r2Usage()).toEqual(before);
  });

  it("config + 10,000 layers is one over the limit; config + 9,999 layers is accepted when all are members", async () => {
    const repo = "lim/wide2";
    const config = fakeDigest(1, 0xcf);
    expect(await expectError(putManifest(repo, "v1", manyLayers(10_000, config, 0x200)), 400, "MANIFEST_INVALID")).toMatch(/10000/);
    // Membership for 10,000 digests, written through the store's own method (pushing 10,000 blobs would take minutes).
    await runInDurableObject(trustStoreFor(env, repo), (instance) => {
      const ts = instance as unknown as { link(repo: string, m: { digest: string; kind: "blob"; size: number; r2Key: string; mediaType: null }): void };
      ts.link(repo, { digest: config, kind: "blob", size: 10, r2Key: "blobs/none", mediaType: null });
      for (let i = 0; i < 9_999; i++) ts.link(repo, { digest: fakeDigest(i, 0x200), kind: "blob", size: 1, r2Key: "blobs/none", mediaType: null });
    });
    const m = manyLayers(9_999, config, 0x200);
    const res = await putManifest(repo, "v1", m);
    if (res.status !== 201) throw new Error(`expected 201, got ${res.status}: ${(await res.text()).slice(0, 300)}`);
    expect(res.headers.get("Docker-Content-Digest")).toBe(await sha256(m));
  });

  it("9,999 missing layers: MANIFEST_BLOB_UNKNOWN listing the first ones and counting the rest, nothing stored", async () => {
    const before = await r2Usage();
    const m = manyLayers(9_999, fakeDigest(2, 0xcf), 0x300);
    const msg = await expectError(putManifest("lim/wide3", "v1", m), 400, "MANIFEST_BLOB_UNKNOWN");
    expect(msg).toContain("and 9990 more");
    expect(await r2Usage()).toEqual(before);
  });

  it("the MAX_MANIFEST_REFERENCES variable sets the cap (clamped to 100000)", async () => {
    const img = await makeImage("lim/refvar", { seed: 25, layers: 3 }); // config + 3 layers = 4 references
    const put = (vars: Record<string, string>) => reqWith(vars, "/v2/lim/refvar/manifests/v1", { method: "PUT", headers: { "Content-Type": OCI }, body: img.manifest });
    expect(await expectError(put({ MAX_MANIFEST_REFERENCES: "3" }), 400, "MANIFEST_INVALID")).toMatch(/references 4 distinct.*at most 3 per manifest/);
    expect((await put({ MAX_MANIFEST_REFERENCES: "4" })).status).toBe(201);
    const wide = manyLayers(100_001, fakeDigest(3, 0xcf), 0x500);
    const res = await reqWith({ MAX_MANIFEST_REFERENCES: "1000000" }, "/v2/lim/refvar/manifests/v2", { method: "PUT", headers: { "Content-Type": OCI }, body: wide });
    expect(await expectError(res, 400, "MANIFEST_INVALID")).toMatch(/at most 100000 per manifest/);
  });

  it("an index with 10,001 children is refused with the limit", async () => {
    const m = enc({ schemaVersion: 2, mediaType: INDEX, manifests: Array.from({ length: 10_001 }, (_, i) => ({ mediaType: OCI, digest: fakeDigest(i, 0x400), size: 1 })) });
    expect(await expectError(putManifest("lim/wideidx", "v1", m, INDEX), 400, "MANIFEST_INVALID")).toMatch(/10000/);
  });

  it("deeply nested JSON in an unknown field is refused before parsing, naming the depth limit of 64", async () => {
    const img = await makeImage("lim/deep", { seed: 23 });
    const text = new TextDecoder().decode(img.manifest);
    const depth = 100_000;
    const deep = text.slice(0, -1) + `,"x":${"[".repeat(depth)}${"]".repeat(depth)}}`;
    expect(await expectError(putManifest("lim/deep", "v1", te.encode(deep)), 400, "MANIFEST_INVALID")).toMatch(/deeper than 64/);
    const fine = text.slice(0, -1) + `,"x":${"[".repeat(60)}${"]".repeat(60)}}`;
    expect((await putManifest("lim/deep", "v2", te.encode(fine))).status).toBe(201);
  });
});

describe("page sizes", () => {
  it("n above the maximum of 1000 is clamped (a registry may return fewer than n), never an error", async () => {
    const img = await makeImage("lim/pages", { seed: 24 });
    expect((await putManifest("lim/pages", "v1", img.manifest)).status).toBe(201);
    for (const path of ["/v2/lim/pages/tags/list", "/v2/_catalog", `/v2/lim/pages/referrers/${img.digest}`]) {
      const res = await req(`${path}?n=99999999999999999999`);
      expect(res.status).toBe(200);
    }
  });
});
