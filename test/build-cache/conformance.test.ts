// build-cache/v1 conformance: cloister must implement cloister-spec/build-cache/v1/README.md
// ("Conformance contract") against the committed vectors. Runs inside workerd; the vectors come
// base64-inlined from vectors.generated.ts (regenerate with `npm run gen:vectors`).
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { VECTOR_FILES } from "./vectors.generated";

const BASE = "http://registry.test";
const ARTIFACT_TYPE = "application/vnd.cloister.build-cache.v1";
const CONFIG_MT = "application/vnd.cloister.build-cache.v1.config+json";
const CHUNK_MT = "application/vnd.cloister.build-cache.v1.chunk";
const MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json";

type DigestEntry = { blake3: string; digest: string; mediaType: string; sha256: string; size: number };
type TreeEntry = { path: string; mode: string; size: number; blake3: string; sha256: string };
type Descriptor = { mediaType: string; digest: string; size: number; annotations?: Record<string, string> };
type Manifest = { schemaVersion: number; mediaType?: string; artifactType?: string; config: Descriptor; layers: Descriptor[] };
type Config = { schemaVersion: number; mediaType: string; chunkSize: number; files: { path: string; mode: string; size: number; chunks: string[] }[] };

const bytesOf = (name: string): Uint8Array => {
  const b64 = VECTOR_FILES[name];
  if (b64 === undefined) throw new Error(`no vector ${name}`);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
};
const textOf = (name: string) => new TextDecoder().decode(bytesOf(name));
const digests: Record<string, DigestEntry> = JSON.parse(textOf("digests.json"));
const tree: { chunkSize: number; files: TreeEntry[] } = JSON.parse(textOf("tree.json"));
const BLOB_VECTORS = Object.keys(digests).filter((n) => n !== "manifest.json");
const CHUNK_VECTORS = BLOB_VECTORS.filter((n) => digests[n].mediaType === CHUNK_MT);

const b3 = (b: Uint8Array) => bytesToHex(blake3(b));
const sha256 = async (b: Uint8Array) => bytesToHex(new Uint8Array(await crypto.subtle.digest("SHA-256", b)));
const claimOf = (name: string) => `sha256:${digests[name].blake3}`;

function req(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(BASE + path, init));
}
const bodyBytes = async (r: Response) => new Uint8Array(await r.arrayBuffer());
/** Byte equality without vitest's element-wise deep diff (slow for MiB-sized arrays). */
function expectBytes(got: Uint8Array, want: Uint8Array, what = "bytes") {
  expect(got.length, `${what}: length`).toBe(want.length);
  let first = -1;
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) { first = i; break; }
  expect(first, `${what}: first differing byte`).toBe(-1);
}
async function ociError(r: Response): Promise<{ code: string; message: string }> {
  const j = (await r.json()) as { errors: { code: string; message: string }[] };
  expect(Array.isArray(j.errors) && j.errors.length > 0).toBe(true);
  return j.errors[0];
}

/** Monolithic upload: POST /v2/<repo>/blobs/uploads/?digest=<claim> with the whole body. */
async function pushMonolithic(repo: string, body: Uint8Array, claim: string): Promise<Response> {
  return req(`/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(claim)}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(body.length) },
    body,
  });
}

async function expectBlob(repo: string, claim: string, want: Uint8Array) {
  const head = await req(`/v2/${repo}/blobs/${claim}`, { method: "HEAD" });
  expect(head.status).toBe(200);
  expect(head.headers.get("Docker-Content-Digest")).toBe(claim);
  expect(head.headers.get("Content-Length")).toBe(String(want.length));
  const get = await req(`/v2/${repo}/blobs/${claim}`);
  expect(get.status).toBe(200);
  expect(get.headers.get("Docker-Content-Digest")).toBe(claim);
  expectBytes(await bodyBytes(get), want, `GET ${claim}`);
}

/** Push every blob vector (chunks + config) monolithically under its BLAKE3 claim. */
async function pushAllBlobs(repo: string) {
  for (const name of BLOB_VECTORS) {
    const r = await pushMonolithic(repo, bytesOf(name), claimOf(name));
    expect(r.status, `push ${name}: ${r.status}`).toBe(201);
    await r.body?.cancel();
  }
}

async function putManifest(repo: string, ref: string, body: Uint8Array, contentType = MANIFEST_MT): Promise<Response> {
  return req(`/v2/${repo}/manifests/${ref}`, {
    method: "PUT",
    headers: { "Content-Type": contentType, "Content-Length": String(body.length) },
    body,
  });
}

describe("build-cache/v1 vectors", () => {
  it("VECTORS.sha256 covers every vector file and matches", async () => {
    const lines = textOf("VECTORS.sha256").trimEnd().split("\n");
    const listed = lines.map((l) => {
      const m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(l);
      expect(m, l).not.toBeNull();
      return [m![2], m![1]] as const;
    });
    expect(listed.map(([n]) => n).sort()).toEqual(Object.keys(VECTOR_FILES).filter((n) => n !== "VECTORS.sha256").sort());
    for (const [name, hex] of listed) expect(await sha256(bytesOf(name)), name).toBe(hex);
  });

  it("every vector's BLAKE3, SHA-256 and size match digests.json", async () => {
    expect(Object.keys(digests).sort()).toEqual(["chunk-001.bin", "chunk-002.bin", "chunk-003.bin", "chunk-004.bin", "config.json", "manifest.json"]);
    for (const [name, d] of Object.entries(digests)) {
      const bytes = bytesOf(name);
      expect(bytes.length, name).toBe(d.size);
      expect(b3(bytes), name).toBe(d.blake3);
      expect(await sha256(bytes), name).toBe(d.sha256);
      expect(d.digest).toBe(`sha256:${d.blake3}`);
      // The whole point of the encoding: the wire digest is not the SHA-256 of the body.
      expect(d.blake3).not.toBe(d.sha256);
    }
    expect(digests["chunk-003.bin"].blake3).toBe("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  });

  it("manifest and config are well-formed and reference the vectors", () => {
    const m: Manifest = JSON.parse(textOf("manifest.json"));
    expect(m.schemaVersion).toBe(2);
    expect(m.mediaType).toBe(MANIFEST_MT);
    expect(m.artifactType).toBe(ARTIFACT_TYPE);
    expect(m.config).toMatchObject({ mediaType: CONFIG_MT, digest: claimOf("config.json"), size: digests["config.json"].size });
    const byDigest = new Map(CHUNK_VECTORS.map((n) => [claimOf(n), n]));
    for (const l of m.layers) {
      expect(l.mediaType).toBe(CHUNK_MT);
      expect(byDigest.has(l.digest), l.digest).toBe(true);
      expect(l.size).toBe(digests[byDigest.get(l.digest)!].size);
    }
    const c: Config = JSON.parse(textOf("config.json"));
    expect(c).toMatchObject({ schemaVersion: 1, mediaType: CONFIG_MT, chunkSize: tree.chunkSize });
    expect(c.files.map((f) => f.path)).toEqual(tree.files.map((f) => f.path));
    const layerDigests = new Set(m.layers.map((l) => l.digest));
    for (const f of c.files) for (const d of f.chunks) expect(layerDigests.has(d)).toBe(true);
  });
});

describe("build-cache/v1 push and pull (conformance contract)", () => {
  it("monolithic POST ?digest= accepts every blob under its BLAKE3 claim and serves it byte-exact", async () => {
    const repo = "bc/mono";
    for (const name of BLOB_VECTORS) {
      const claim = claimOf(name);
      const r = await pushMonolithic(repo, bytesOf(name), claim);
      expect(r.status, `${name}: ${r.status} ${await r.clone().text()}`).toBe(201);
      expect(r.headers.get("Docker-Content-Digest")).toBe(claim);
      expect(r.headers.get("Location")).toBeTruthy();
      await expectBlob(repo, claim, bytesOf(name));
    }
  });

  it("pushing an existing blob again is idempotent (dedupe is allowed)", async () => {
    const repo = "bc/again";
    for (let i = 0; i < 2; i++) {
      const r = await pushMonolithic(repo, bytesOf("chunk-002.bin"), claimOf("chunk-002.bin"));
      expect(r.status).toBe(201);
      expect(r.headers.get("Docker-Content-Digest")).toBe(claimOf("chunk-002.bin"));
    }
    await expectBlob(repo, claimOf("chunk-002.bin"), bytesOf("chunk-002.bin"));
  });

  it("chunked upload (POST, PATCH, PATCH, PUT ?digest=) finalizes under the BLAKE3 claim", async () => {
    const repo = "bc/chunked";
    const body = bytesOf("chunk-002.bin");
    const claim = claimOf("chunk-002.bin");
    const start = await req(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    expect(start.status).toBe(202);
    let loc = start.headers.get("Location")!;
    expect(loc).toBeTruthy();
    const cut = 40_000;
    for (const [from, to] of [[0, cut], [cut, body.length]] as const) {
      const part = body.slice(from, to);
      const r = await req(new URL(loc, BASE).pathname + new URL(loc, BASE).search, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream", "Content-Range": `${from}-${to - 1}`, "Content-Length": String(part.length) },
        body: part,
      });
      expect(r.status, await r.clone().text()).toBe(202);
      loc = r.headers.get("Location")!;
    }
    const u = new URL(loc, BASE);
    u.searchParams.set("digest", claim);
    const fin = await req(u.pathname + u.search, { method: "PUT", headers: { "Content-Length": "0" } });
    expect(fin.status, await fin.clone().text()).toBe(201);
    expect(fin.headers.get("Docker-Content-Digest")).toBe(claim);
    await expectBlob(repo, claim, body);
  });

  it("manifest PUT by tag and by its BLAKE3 digest; GET returns the exact bytes", async () => {
    const repo = "bc/manifest";
    await pushAllBlobs(repo);
    const body = bytesOf("manifest.json");
    const claim = claimOf("manifest.json");

    const byTag = await putManifest(repo, "v1", body);
    expect(byTag.status, await byTag.clone().text()).toBe(201);
    const byDigest = await putManifest(repo, claim, body);
    expect(byDigest.status, await byDigest.clone().text()).toBe(201);
    expect(byDigest.headers.get("Docker-Content-Digest")).toBe(claim);

    for (const ref of ["v1", claim]) {
      const r = await req(`/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_MT } });
      expect(r.status, ref).toBe(200);
      expect(r.headers.get("Content-Type")).toBe(MANIFEST_MT);
      expectBytes(await bodyBytes(r), body, `manifest ${ref}`);
    }
    const head = await req(`/v2/${repo}/manifests/${claim}`, { method: "HEAD", headers: { Accept: MANIFEST_MT } });
    expect(head.status).toBe(200);
    expect(head.headers.get("Docker-Content-Digest")).toBe(claim);
    expect(head.headers.get("Content-Length")).toBe(String(body.length));
  });

  it("consumer walk: manifest by digest → config → every layer, all byte-exact, tree restores", async () => {
    const repo = "bc/walk";
    await pushAllBlobs(repo);
    const claim = claimOf("manifest.json");
    const put = await putManifest(repo, claim, bytesOf("manifest.json"));
    expect(put.status, await put.clone().text()).toBe(201);

    const mr = await req(`/v2/${repo}/manifests/${claim}`, { headers: { Accept: MANIFEST_MT } });
    expect(mr.status).toBe(200);
    const mBytes = await bodyBytes(mr);
    expect(`sha256:${b3(mBytes)}`).toBe(claim);
    const m: Manifest = JSON.parse(new TextDecoder().decode(mBytes));
    expect(m.artifactType).toBe(ARTIFACT_TYPE);

    const fetchVerified = async (d: Descriptor) => {
      const r = await req(`/v2/${repo}/blobs/${d.digest}`);
      expect(r.status, d.digest).toBe(200);
      const b = await bodyBytes(r);
      expect(b.length).toBe(d.size);
      expect(`sha256:${b3(b)}`).toBe(d.digest);
      return b;
    };
    const cBytes = await fetchVerified(m.config);
    expectBytes(cBytes, bytesOf("config.json"), "config");
    const chunks = new Map<string, Uint8Array>();
    for (const l of m.layers) chunks.set(l.digest, await fetchVerified(l));

    const c: Config = JSON.parse(new TextDecoder().decode(cBytes));
    for (const [i, f] of c.files.entries()) {
      const out = new Uint8Array(f.size);
      let off = 0;
      for (const d of f.chunks) {
        const part = chunks.get(d)!;
        out.set(part, off);
        off += part.length;
      }
      expect(off).toBe(f.size);
      expect(tree.files[i]).toMatchObject({ path: f.path, mode: f.mode, size: f.size, blake3: b3(out), sha256: await sha256(out) });
    }
  });

  it("a claim matching neither hash is 400 DIGEST_INVALID naming both computed digests, and stores nothing", async () => {
    const repo = "bc/wrong";
    const body = bytesOf("chunk-001.bin");
    const wrong = claimOf("chunk-002.bin");
    const r = await pushMonolithic(repo, body, wrong);
    expect(r.status).toBe(400);
    const e = await ociError(r);
    expect(e.code).toBe("DIGEST_INVALID");
    expect(e.message).toContain(digests["chunk-001.bin"].sha256);
    expect(e.message).toContain(digests["chunk-001.bin"].blake3);
    const after = await req(`/v2/${repo}/blobs/${wrong}`, { method: "HEAD" });
    expect(after.status).toBe(404);
  });

  it("a wrong claim at chunked PUT finalize is 400 DIGEST_INVALID naming both computed digests", async () => {
    const repo = "bc/wrong-chunked";
    const body = bytesOf("chunk-001.bin");
    const wrong = claimOf("chunk-004.bin");
    const start = await req(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    expect(start.status).toBe(202);
    const loc = new URL(start.headers.get("Location")!, BASE);
    const p = await req(loc.pathname + loc.search, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${body.length - 1}`, "Content-Length": String(body.length) },
      body,
    });
    expect(p.status).toBe(202);
    const u = new URL(p.headers.get("Location")!, BASE);
    u.searchParams.set("digest", wrong);
    const fin = await req(u.pathname + u.search, { method: "PUT", headers: { "Content-Length": "0" } });
    expect(fin.status).toBe(400);
    const e = await ociError(fin);
    expect(e.code).toBe("DIGEST_INVALID");
    expect(e.message).toContain(digests["chunk-001.bin"].sha256);
    expect(e.message).toContain(digests["chunk-001.bin"].blake3);
    expect((await req(`/v2/${repo}/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
  });

  it("a manifest PUT under a digest matching neither hash is 400 DIGEST_INVALID naming both", async () => {
    const repo = "bc/wrong-manifest";
    await pushAllBlobs(repo);
    const wrong = claimOf("config.json");
    const r = await putManifest(repo, wrong, bytesOf("manifest.json"));
    expect(r.status).toBe(400);
    const e = await ociError(r);
    expect(e.code).toBe("DIGEST_INVALID");
    expect(e.message).toContain(digests["manifest.json"].sha256);
    expect(e.message).toContain(digests["manifest.json"].blake3);
    expect((await req(`/v2/${repo}/manifests/${wrong}`, { method: "HEAD" })).status).toBe(404);
  });

  it("the OCI-native path still works: a blob pushed under its real SHA-256", async () => {
    const repo = "bc/native-sha";
    const body = bytesOf("chunk-002.bin");
    const claim = `sha256:${digests["chunk-002.bin"].sha256}`;
    const r = await pushMonolithic(repo, body, claim);
    expect(r.status).toBe(201);
    expect(r.headers.get("Docker-Content-Digest")).toBe(claim);
    await expectBlob(repo, claim, body);
  });

  it("accepts a manifest of at least 16 MiB (many chunk descriptors)", async () => {
    const repo = "bc/huge";
    await pushAllBlobs(repo);
    const base: Manifest = JSON.parse(textOf("manifest.json"));
    const template = base.layers[0];
    // Realistic descriptors: a distinct path per file, same referenced chunk (registries must not
    // require layer digests to be distinct).
    const layers: Descriptor[] = [];
    let approx = 0;
    for (let i = 0; approx < 16 * 1024 * 1024 + 4096; i++) {
      const d: Descriptor = {
        annotations: {
          "dev.cloister.build-cache.chunk-index": "0",
          "dev.cloister.build-cache.file-mode": "0644",
          "dev.cloister.build-cache.file-size": String(template.size),
          "dev.cloister.build-cache.path": `node_modules/pkg-${String(i).padStart(6, "0")}/dist/index.min.js`,
        },
        digest: template.digest,
        mediaType: CHUNK_MT,
        size: template.size,
      };
      layers.push(d);
      approx += JSON.stringify(d).length + 1;
    }
    const body = new TextEncoder().encode(JSON.stringify({ ...base, layers }));
    expect(body.length).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    const claim = `sha256:${b3(body)}`;
    const r = await putManifest(repo, claim, body);
    expect(r.status, `${r.status} ${(await r.clone().text()).slice(0, 500)}`).toBe(201);
    expect(r.headers.get("Docker-Content-Digest")).toBe(claim);
    const t = await putManifest(repo, "huge", body);
    expect(t.status).toBe(201);
    const g = await req(`/v2/${repo}/manifests/${claim}`, { headers: { Accept: MANIFEST_MT } });
    expect(g.status).toBe(200);
    expectBytes(await bodyBytes(g), body, "16 MiB manifest");
  });
});

describe("cloister extension: native blake3: digests", () => {
  it("accepts blake3:<hex> at monolithic POST and serves it back under that digest", async () => {
    const repo = "bc/native-blake3";
    const body = bytesOf("chunk-001.bin");
    const claim = `blake3:${digests["chunk-001.bin"].blake3}`;
    const r = await pushMonolithic(repo, body, claim);
    expect(r.status, await r.clone().text()).toBe(201);
    expect(r.headers.get("Docker-Content-Digest")).toBe(claim);
    await expectBlob(repo, claim, body);
  });

  it("rejects a blake3: claim that does not match with 400 DIGEST_INVALID", async () => {
    const r = await pushMonolithic("bc/native-blake3-bad", bytesOf("chunk-001.bin"), `blake3:${digests["chunk-002.bin"].blake3}`);
    expect(r.status).toBe(400);
    expect((await ociError(r)).code).toBe("DIGEST_INVALID");
  });
});
