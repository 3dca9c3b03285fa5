// /_bench/gc/* (mounted by src/bench.ts: BENCH_ROUTES=true and admin only; never in production).
// Seeds unheld blobs the way deleted pushes leave them, and starts a GC run with grace 0, so
// `npm run bench -- --only gc` can measure condemn + delete throughput on 100,000 blobs.
//   POST /_bench/gc/seed?n=N&size=BYTES   N (≤ 5000) objects of BYTES (≤ 65536) in R2 plus their
//        BlobStore rows (no holder, created long ago); answers {n, bytes, ms}
//   POST /_bench/gc/run                   starts a run with grace 0 (409 while one runs)
import { Hono } from "hono";
import type { Env } from "../env";
import { blobStoreFor, gcCoordinator } from "../stores";
import { toHex } from "../util/encoding";

export const gcBenchRoutes = new Hono<{ Bindings: Env }>();

gcBenchRoutes.post("/seed", async (c) => {
  const n = Math.max(1, Math.min(5000, Number(c.req.query("n") ?? 1000) || 1000));
  const size = Math.max(1, Math.min(65536, Number(c.req.query("size") ?? 1024) || 1024));
  const t0 = Date.now();
  const run = crypto.randomUUID();
  const rows: { digest: string; size: number; r2Key: string; contentSha256: string }[] = [];
  for (let i = 0; i < n; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - i) }, async (_, j) => {
      const body = new Uint8Array(size);
      const id = new TextEncoder().encode(`${run}/${i + j}`);
      body.set(id.subarray(0, Math.min(id.length, size)));
      const hex = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", body)));
      const r2Key = `data/${run}/${i + j}`;
      await c.env.BUCKET.put(r2Key, body);
      rows.push({ digest: `sha256:${hex}`, size, r2Key, contentSha256: hex });
    }));
  }
  const store = blobStoreFor(c.env, rows[0].digest);
  for (let i = 0; i < rows.length; i += 500) await store.benchSeedUnheld(rows.slice(i, i + 500));
  return c.json({ n, bytes: n * size, ms: Date.now() - t0 }, 201);
});

gcBenchRoutes.post("/run", async (c) => {
  const r = await gcCoordinator(c.env).start({ dryRun: false, reconcile: false, trigger: "bench", graceSeconds: 0 });
  return r.ok ? c.json({ id: r.run.id }, 202) : c.json({ error: r.message }, 409);
});
