// /_bench/audit/* (mounted by src/bench.ts: BENCH_ROUTES=true and admin only; never in production).
// The audit write's cost on push latency (`npm run bench -- --only audit`): every mutation awaits
// one record() before its 2xx, so its latency is what a push pays for the audit log.
//   POST /_bench/audit/append?n=N   N (≤ 2000) sequential record() calls of a manifest.put-sized
//        event, as a push makes them; answers {n, p50Ms, p99Ms, meanMs, totalMs}
import { Hono } from "hono";
import type { Env } from "../env";
import { record } from "./record";

export const auditBenchRoutes = new Hono<{ Bindings: Env }>();

auditBenchRoutes.post("/append", async (c) => {
  const n = Math.max(1, Math.min(2000, Number(c.req.query("n") ?? 200) || 200));
  const lat: number[] = [];
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    // The Worker's clock advances on I/O: each record() is a Durable Object call, so each is timed.
    const s = Date.now();
    await record(c.env, {
      action: "manifest.put",
      target: { repository: "_bench/audit", tag: `t${i}`, digest: `sha256:${"0".repeat(60)}${String(i).padStart(4, "0")}` },
      outcome: { status: 201 },
      details: { previous: null, mediaType: "application/vnd.oci.image.manifest.v1+json", size: 1234 },
    });
    lat.push(Date.now() - s);
  }
  const totalMs = Date.now() - t0;
  lat.sort((a, b) => a - b);
  return c.json({ n, p50Ms: lat[Math.floor(n / 2)], p99Ms: lat[Math.min(n - 1, Math.floor(n * 0.99))], meanMs: totalMs / n, totalMs });
});
