// Raw routes for `npm run bench` (the ceiling our registry is measured against).
// Answer 404 unless BENCH_ROUTES=true, and then only to the admin (src/app.ts mounts them behind
// benchEnabled and the admin gate); never enable in production. Owned by the bench tooling.
//
//   PUT    /_bench/r2/:key   body → env.BUCKET.put(key, request.body), untouched (needs Content-Length)
//   PUT    /_bench/r2mp/:key?part=BYTES   body → R2 multipart upload, parts of `part` bytes (default
//          16 MiB, ≥ 5 MiB) buffered one at a time: the ceiling for chunked uploads; GET it via /r2/:key
//   GET    /_bench/r2/:key   streams the object back (Content-Type + Content-Length set)
//   HEAD   /_bench/r2/:key   size only
//   DELETE /_bench/r2/:key   deletes the object
//   POST   /_bench/hash?algo=none|native|sha256|sha512|blake3[&min=BYTES]
//          consumes the body inside the Worker, hashing it; answers {algo, bytes, ms, mbps, hex}
//   POST   /_bench/gc/seed, /_bench/gc/run   GC throughput (src/gc/bench-routes.ts)
//
// Keys are stored under the "_bench/" prefix so they never collide with registry objects.
import { Hono, type MiddlewareHandler } from "hono";
import type { Env } from "./env";
import { Hasher, hashHex, type HashAlgorithm } from "./digest/hasher";
import { toHex } from "./util/encoding";
import { blobStoreFor, blobStoreShard, trustStoreFor } from "./stores";
import { parseManifest, parseManifestSliced, requiredBlobs } from "./oci/manifest";
import { computeAllSliced } from "./digest/verify";
import { SliceClock } from "./util/slices";
import { MAX_MANIFEST_REFERENCES_CEILING } from "./oci/limits";
import { record } from "./audit/record";
import { gcBenchRoutes } from "./gc/bench-routes";
import { auditBenchRoutes } from "./audit/bench-routes";

export const benchRoutes = new Hono<{ Bindings: Env }>();
benchRoutes.route("/gc", gcBenchRoutes); // GC throughput (src/gc/bench-routes.ts)
benchRoutes.route("/audit", auditBenchRoutes); // audit append latency (src/audit/bench-routes.ts)

/** Runs before the admin gate, so that with BENCH_ROUTES off /_bench is a plain 404 for everyone. */
export const benchEnabled: MiddlewareHandler<{ Bindings: Env }> = async (c, next) => {
  if (String(c.env.BENCH_ROUTES ?? "false").toLowerCase() !== "true") return c.notFound();
  await next();
};

const KEY_PREFIX = "_bench/";
const KEY_RE = /^[A-Za-z0-9._-]{1,200}$/;
const MB = 1e6;
/** BYOB reads of at least this many bytes: ~2x less JS overhead than workerd's default 4 KiB chunks. */
const READ_AT_LEAST = 256 * 1024;

function keyOf(raw: string): string | null {
  return KEY_RE.test(raw) ? KEY_PREFIX + raw : null;
}

function benchError(status: number, message: string): Response {
  return new Response(JSON.stringify({ error: message }), { status, headers: { "Content-Type": "application/json" } });
}

benchRoutes.put("/r2/:key", async (c) => {
  const key = keyOf(c.req.param("key"));
  if (!key) return benchError(400, "key must match " + KEY_RE.source);
  const length = c.req.header("Content-Length");
  const body = c.req.raw.body;
  if (!body || length === undefined) return benchError(411, "PUT needs a body with Content-Length (R2 put needs a known length)");
  const t0 = Date.now();
  const obj = await c.env.BUCKET.put(key, body);
  const ms = Date.now() - t0;
  return c.json({ key, size: obj?.size ?? null, etag: obj?.etag ?? null, ms }, 201);
});

benchRoutes.put("/r2mp/:key", async (c) => {
  const key = keyOf(c.req.param("key"));
  if (!key) return benchError(400, "key must match " + KEY_RE.source);
  const partRaw = Number(c.req.query("part") ?? 16 * 1024 * 1024);
  if (!Number.isInteger(partRaw) || partRaw < 5 * 1024 * 1024 || partRaw > 256 * 1024 * 1024) return benchError(400, "part must be 5 MiB..256 MiB");
  const body = c.req.raw.body;
  if (!body) return benchError(400, "PUT a body");
  const t0 = Date.now();
  const upload = await c.env.BUCKET.createMultipartUpload(key);
  const parts: R2UploadedPart[] = [];
  try {
    const reader = body.getReader({ mode: "byob" });
    let buf = new ArrayBuffer(partRaw);
    let fill = 0;
    let done = false;
    while (!done) {
      while (fill < partRaw) {
        const r = await reader.readAtLeast(Math.min(READ_AT_LEAST, partRaw - fill), new Uint8Array(buf, fill, partRaw - fill));
        if (r.value) {
          buf = r.value.buffer as ArrayBuffer;
          fill += r.value.byteLength;
        }
        if (r.done) {
          done = true;
          break;
        }
      }
      if (fill > 0 || parts.length === 0) {
        parts.push(await upload.uploadPart(parts.length + 1, new Uint8Array(buf, 0, fill)));
        fill = 0;
      }
    }
    const obj = await upload.complete(parts);
    return c.json({ key, size: obj.size, parts: parts.length, ms: Date.now() - t0 }, 201);
  } catch (err) {
    await upload.abort().catch(() => {});
    throw err;
  }
});

async function getObject(c: import("hono").Context<{ Bindings: Env }>, head: boolean): Promise<Response> {
  const key = keyOf(c.req.param("key") ?? "");
  if (!key) return benchError(400, "key must match " + KEY_RE.source);
  const obj = head ? await c.env.BUCKET.head(key) : await c.env.BUCKET.get(key);
  if (!obj) return benchError(404, "no such object");
  const headers = new Headers({
    // Without Content-Type local wrangler gzips the response on the fly for gzip-accepting clients.
    "Content-Type": "application/octet-stream",
    "Content-Length": String(obj.size),
    ETag: obj.httpEtag,
  });
  const body = head ? null : (obj as R2ObjectBody).body;
  return new Response(body, { status: 200, headers });
}

benchRoutes.get("/r2/:key", (c) => getObject(c, false));
benchRoutes.on("HEAD", "/r2/:key", (c) => getObject(c, true));

benchRoutes.delete("/r2/:key", async (c) => {
  const key = keyOf(c.req.param("key"));
  if (!key) return benchError(400, "key must match " + KEY_RE.source);
  await c.env.BUCKET.delete(key);
  return c.body(null, 204);
});

type BenchAlgo = "none" | "native" | HashAlgorithm;
const ALGOS: readonly BenchAlgo[] = ["none", "native", "sha256", "sha512", "blake3"];

benchRoutes.post("/hash", async (c) => {
  const algo = (c.req.query("algo") ?? "sha256") as BenchAlgo;
  if (!ALGOS.includes(algo)) return benchError(400, `algo must be one of ${ALGOS.join(", ")}`);
  const minRaw = Number(c.req.query("min") ?? READ_AT_LEAST);
  const min = Number.isInteger(minRaw) && minRaw >= 1 && minRaw <= 16 * 1024 * 1024 ? minRaw : READ_AT_LEAST;
  const body = c.req.raw.body;
  if (!body) return benchError(400, "POST a body to hash");

  // Date.now() in Workers advances only across I/O; each body read is I/O, so the
  // elapsed time below covers the whole consumption.
  const t0 = Date.now();
  let bytes = 0;
  let reads = 0;
  let hex = "";
  const reader = body.getReader({ mode: "byob" });
  let buf = new ArrayBuffer(min);

  // Reads into `buf` (transferred on each read) and hands every filled view to `sink`.
  const pump = async (sink: (chunk: Uint8Array) => void | Promise<void>) => {
    for (;;) {
      const { value, done } = await reader.readAtLeast(min, new Uint8Array(buf));
      if (value) {
        if (value.byteLength > 0) {
          bytes += value.byteLength;
          reads++;
          await sink(value);
        }
        buf = value.buffer as ArrayBuffer;
      }
      if (done) break;
    }
  };

  if (algo === "none") {
    await pump(() => {});
  } else if (algo === "native") {
    const digest = new crypto.DigestStream("SHA-256");
    const writer = digest.getWriter();
    // Wait for each write so the buffer is no longer referenced when the next read transfers it.
    await pump((chunk) => writer.write(chunk));
    await writer.close();
    hex = toHex(new Uint8Array(await digest.digest));
  } else {
    const hasher = Hasher.create(algo);
    await pump((chunk) => hasher.update(chunk));
    hex = hasher.digestHex();
  }
  const ms = Date.now() - t0;
  return c.json({ algo, bytes, reads, readAtLeast: min, ms, mbps: ms > 0 ? bytes / MB / (ms / 1000) : null, hex });
});

// POST /_bench/index?store=blob|trust&n=N&concurrency=C&objects=K — index write rate: N commits
// issued by C concurrent loops from this Worker, to one BlobStore object ("blob") or spread over K
// repositories' TrustStore objects ("trust"). Uses bench-only object names and repositories
// ("_bench/…"), never registry ones. Answers {store, commits, concurrency, objects, ms, perSecond}.
benchRoutes.post("/index", async (c) => {
  const q = new URL(c.req.url).searchParams;
  const int = (k: string, dflt: number, max: number) => Math.max(1, Math.min(max, Math.floor(Number(q.get(k) ?? dflt)) || dflt));
  const store = q.get("store") === "trust" ? "trust" : "blob";
  const n = int("n", 2000, 100_000);
  const concurrency = int("concurrency", 16, 256);
  const objects = store === "trust" ? int("objects", 1, 256) : 1;
  const run = crypto.randomUUID().replace(/-/g, "");
  const blobs = blobStoreShard(c.env, "_bench/blobs");
  let next = 0;
  const t0 = Date.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++;
      const hex = run + i.toString(16).padStart(32, "0");
      const digest = `sha256:${hex}`;
      if (store === "blob") {
        await blobs.commit({ digest, size: 1, r2Key: `_bench/index/${hex}`, contentSha256: hex }, "_bench/repo");
      } else {
        const repo = `_bench/repo-${i % objects}`;
        // "_bench/…" is not a valid repository name, so these objects never meet real ones.
        await trustStoreFor(c.env, repo).link(repo, { digest, kind: "blob", size: 1, r2Key: `_bench/index/${hex}`, mediaType: null });
      }
    }
  }));
  const ms = Date.now() - t0;
  return c.json({ store, commits: n, concurrency, objects, ms, perSecond: ms > 0 ? (n * 1000) / ms : null });
});

// POST /_bench/heavyput?refs=N — object-level cost of a heavy manifest PUT: links N blobs into a
// fresh bench repository, then times one putManifest that requires all N (the transaction that
// used to run inside the object every repository shared). Answers {refs, linkMs, putMs}.
benchRoutes.post("/heavyput", async (c) => {
  const refs = Math.max(1, Math.min(10_000, Math.floor(Number(new URL(c.req.url).searchParams.get("refs") ?? 5000)) || 5000));
  const run = crypto.randomUUID().replace(/-/g, "");
  const repo = `_bench/heavy-${run.slice(0, 8)}`;
  const trust = trustStoreFor(c.env, repo);
  const digests = Array.from({ length: refs }, (_, i) => `sha256:${run}${i.toString(16).padStart(32, "0")}`);
  const t0 = Date.now();
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < refs) {
      const d = digests[next++];
      await trust.link(repo, { digest: d, kind: "blob", size: 1, r2Key: `_bench/heavy/${d.slice(7)}`, mediaType: null });
    }
  }));
  const t1 = Date.now();
  const r = await trust.putManifest({
    repo, manifest: { digest: `sha256:${run}${"f".repeat(32)}`, size: 1, r2Key: "_bench/heavy/manifest", mediaType: "application/vnd.oci.image.manifest.v1+json" },
    tag: "heavy", subject: null, artifactType: null, annotations: null, requiredBlobs: digests, requiredManifests: [],
  });
  const putMs = Date.now() - t1;
  if (!r.ok) return benchError(500, "heavy putManifest was refused");
  return c.json({ refs, linkMs: t1 - t0, putMs });
});


// POST /_bench/heavy-seed?repo=R&prefix=HEX32&from=I&n=N — seed N blobs into repository R's index
// without bytes: BlobStore rows, their holders and R's memberships (restoreRows), for digests
// `sha256:<prefix><i as 32 hex>` with i in [from, from+N). Lets the bench PUT a 100,000-layer manifest
// in seconds instead of pushing 100,000 blobs. N ≤ 20,000 per request. Answers {n, ms}.
benchRoutes.post("/heavy-seed", async (c) => {
  const q = new URL(c.req.url).searchParams;
  const repo = q.get("repo") ?? "";
  const prefix = q.get("prefix") ?? "";
  if (!repo || !/^[0-9a-f]{32}$/.test(prefix)) return benchError(400, "repo and prefix (32 hex) are required");
  const from = Math.max(0, Math.floor(Number(q.get("from") ?? 0)) || 0);
  const n = Math.max(1, Math.min(20_000, Math.floor(Number(q.get("n") ?? 1000)) || 1000));
  const t0 = Date.now();
  const trust = trustStoreFor(c.env, repo);
  for (let i = 0; i < n; i += 500) {
    const rows = Array.from({ length: Math.min(500, n - i) }, (_, j) => {
      const hex = prefix + (from + i + j).toString(16).padStart(32, "0");
      return { digest: `sha256:${hex}`, size: 1, r2Key: `_bench/heavy/${hex}`, contentSha256: hex };
    });
    await blobStoreFor(c.env, rows[0].digest).benchSeedUnheld(rows);
    const now = Date.now();
    await trust.restoreRows(repo, [{ table: "members", rows: rows.map((r) => ({ digest: r.digest, kind: "blob", size: 1, r2_key: r.r2Key, media_type: null, created_at: now, refs_indexed: 0 })) }]);
  }
  return c.json({ n, ms: Date.now() - t0 });
});

// POST /_bench/manifest-phases?repo=R — the manifest PUT's steps (src/oci/manifests.ts put,
// src/storage/handoff.ts commitManifest) on the posted body, each timed on its own: which
// synchronous block on the Worker's thread, and which inside the repository's object, is longest
// (docs/capacity.md "Where a heavy manifest PUT spends its time"). Stores the manifest as tag
// `phases`. Answers {bytes, refs, ms: {phase: ms}, object: SliceStats}.
benchRoutes.post("/manifest-phases", async (c) => {
  const repo = new URL(c.req.url).searchParams.get("repo") ?? "";
  if (!repo) return benchError(400, "repo is required");
  const ms: Record<string, number> = {};
  let t = performance.now();
  const lap = (k: string) => { const now = performance.now(); ms[k] = Math.round((now - t) * 10) / 10; t = now; };
  const body = new Uint8Array(await c.req.arrayBuffer());
  lap("bodyRead (async)");
  JSON.parse(new TextDecoder().decode(body));
  lap("decode + JSON.parse alone (sync)");
  parseManifest(body, c.req.header("Content-Type"), { maxReferences: MAX_MANIFEST_REFERENCES_CEILING, limits: false });
  lap("parse + validate, no shape scan (sync)");
  parseManifest(body, c.req.header("Content-Type"), { maxReferences: MAX_MANIFEST_REFERENCES_CEILING });
  lap("shape scan + parse + validate in one block (sync)");
  hashHex("sha256", body);
  lap("sha256 in one block (sync)");
  // What the route runs: the same work in slices (src/util/slices.ts).
  const parseClock = new SliceClock();
  const parsed = await parseManifestSliced(body, c.req.header("Content-Type"), { maxReferences: MAX_MANIFEST_REFERENCES_CEILING }, parseClock);
  lap("parse + validate, sliced (total, with yields)");
  const hashClock = new SliceClock();
  const sha = (await computeAllSliced(body, null, { blake3InSha256: false }, hashClock)).sha256!;
  lap("sha256, sliced (total, with yields)");
  const blobs = requiredBlobs(parsed).map((d) => d.digest);
  lap("reference list (sync)");
  structuredClone(blobs);
  lap("structuredClone of the reference list (sync, ≈ one side of the RPC)");
  const r2Key = `_bench/phases/${sha}/${crypto.randomUUID()}`;
  await c.env.BUCKET.put(r2Key, body);
  lap("R2 put (async)");
  const digest = `sha256:${sha}`;
  const stored = await blobStoreFor(c.env, digest).commit({ digest, size: body.length, r2Key, contentSha256: sha }, repo);
  lap("BlobStore.commit (RPC)");
  const r = await trustStoreFor(c.env, repo).putManifest({
    repo, manifest: { digest, size: body.length, r2Key: stored.r2Key, mediaType: parsed.mediaType }, tag: "phases",
    subject: null, artifactType: parsed.artifactType ?? null, annotations: null, requiredBlobs: blobs, requiredManifests: [], heldSeq: stored.heldSeq,
  });
  lap("TrustStore.putManifest (RPC, total)");
  if (!r.ok) return benchError(500, `putManifest refused: ${JSON.stringify({ ...r, missingBlobs: r.missingBlobs.length })}`);
  await record(c.env, { action: "manifest.put", target: { repository: repo, tag: "phases", digest }, outcome: { status: 201 } });
  lap("AuditLog.append (RPC)");
  return c.json({ bytes: body.length, refs: blobs.length, ms, parseSlices: parseClock.stats(), hashSlices: hashClock.stats(), object: r.slices ?? null });
});

// POST /_bench/lookup?objects=K&n=N&concurrency=C — the pull path's index read: N membership
// lookups (TrustStore.blob, what every blob GET/HEAD costs) issued by C concurrent loops from this
// Worker over K repositories' objects (one linked blob each). Per-object read ceiling for the
// capacity model (docs/capacity.md). Answers {objects, lookups, concurrency, ms, perSecond}.
benchRoutes.post("/lookup", async (c) => {
  const q = new URL(c.req.url).searchParams;
  const int = (k: string, dflt: number, max: number) => Math.max(1, Math.min(max, Math.floor(Number(q.get(k) ?? dflt)) || dflt));
  const n = int("n", 2000, 100_000);
  const concurrency = int("concurrency", 16, 256);
  const objects = int("objects", 1, 256);
  const digest = `sha256:${"0".repeat(63)}1`;
  const repos = Array.from({ length: objects }, (_, i) => `_bench/lookup-${i}`);
  await Promise.all(repos.map((r) => trustStoreFor(c.env, r).link(r, { digest, kind: "blob", size: 1, r2Key: "_bench/lookup", mediaType: null })));
  let next = 0;
  const t0 = Date.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const r = repos[next++ % objects];
      if (!(await trustStoreFor(c.env, r).blob(r, digest))) throw new Error("seeded membership missing");
    }
  }));
  const ms = Date.now() - t0;
  return c.json({ objects, lookups: n, concurrency, ms, perSecond: ms > 0 ? (n * 1000) / ms : null });
});
