// Garbage collection (docs/adr/0011): throughput on --gc-blobs (100,000) unheld blobs of
// --gc-kib (4) KiB each — condemn (fence + one BlobStore transaction per 500 rows), R2 delete
// and purge — and the p99 of 4 KiB pushes while the run goes, against a quiet baseline.
// Seeding uses /_bench/gc/seed (R2 objects plus BlobStore rows without holders, as deleted
// pushes leave them), so phase 1 (per-repository drops) is not part of the number.
import { pushPostDigest } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { request, BenchError } from "../lib/http.mjs";

const q = (arr, p) => [...arr].sort((a, b) => a - b)[Math.min(arr.length - 1, Math.floor(arr.length * p))];

async function json(url, opts) {
  const res = await request(url, opts);
  let body = null;
  try {
    body = JSON.parse(res.text);
  } catch {}
  return { status: res.status, body, text: res.text ?? "" };
}

export default {
  id: "gc",
  title: "Garbage collection: rows/s and bytes/s deleted, push p99 while GC runs",
  needs: ["benchRoutes", "cloisterRegistry"],
  async run(ctx) {
    const base = ctx.cloister.base;
    let agent = ctx.agent(1);
    const total = ctx.opts.gcBlobs;
    const size = ctx.opts.gcKib * 1024;
    try {
      const t0 = performance.now();
      for (let done = 0; done < total;) {
        const n = Math.min(2000, total - done);
        let r = await json(`${base}/_bench/gc/seed?n=${n}&size=${size}`, { method: "POST", agent });
        // Local workerd occasionally restarts the Worker under a long seeding run: seed that batch again.
        for (let retry = 0; r.status === 503 && retry < 3; retry++) r = await json(`${base}/_bench/gc/seed?n=${n}&size=${size}`, { method: "POST", agent });
        if (r.status !== 201) throw new BenchError(`seed answered ${r.status}: ${r.text.slice(0, 200)}`);
        done += n;
      }
      const seedSecs = (performance.now() - t0) / 1000;
      // The seeding's last restart (above) can still answer the next request with 503 "worker
      // restarted mid-request": let it land on a probe, not on a measured push.
      // (Seen here: a 503, or a request that never got an answer.)
      for (let i = 0; i < 20; i++) {
        const r = await request(`${base}/v2/`, { agent: ctx.agent(1), idleMs: 5000 }).catch(() => null);
        if (r?.status === 200) break;
        await new Promise((ok) => setTimeout(ok, 500));
      }
      // and measure on fresh connections (a keep-alive socket of the seeding may be the stuck one)
      agent.destroy();
      agent = ctx.agent(1);

      const pushOnce = async (b, lat) => {
        const s = performance.now();
        await pushPostDigest(base, "bench/gc-push", b, b.digest, agent);
        lat.push(performance.now() - s);
      };
      const quiet = [];
      for (const b of randomBlobs(200, 4096)) await pushOnce(b, quiet);

      const start = await json(`${base}/_bench/gc/run`, { method: "POST", agent });
      if (start.status !== 202) throw new BenchError(`gc run answered ${start.status}: ${start.text.slice(0, 200)}`);
      const id = start.body.id;
      const during = [];
      const pool = randomBlobs(5000, 4096);
      let run = null;
      for (let i = 0; !run; i++) {
        await pushOnce(pool[i % pool.length], during);
        if (i % 2 === 0) {
          const s = await json(`${base}/admin/gc`, { agent });
          run = s.body?.history?.find((h) => h.id === id) ?? null;
        }
      }
      if (run.state !== "done") throw new BenchError(`gc run ended ${run.state}: ${run.stats.errors.join("; ")}`);
      const secs = run.durationMs / 1000;
      const st = run.stats;
      if (st.condemned < total) throw new BenchError(`only ${st.condemned} of ${total} seeded blobs were condemned`);
      const metrics = {
        "gc.seed_s": seedSecs,
        "gc.run_s": secs,
        "gc.rows_per_s": st.condemned / secs,
        "gc.deleted_MBps": st.bytesFreed / 1e6 / secs,
        "gc.objects_per_s": st.objectsDeleted / secs,
        "gc.push_quiet.p99_ms": q(quiet, 0.99),
        "gc.push_during.p99_ms": q(during, 0.99),
      };
      return {
        metrics,
        rows: [
          { label: `GC of ${total} unheld ${ctx.opts.gcKib} KiB blobs: rows condemned + purged`, unit: "rows/s", values: { cloister: metrics["gc.rows_per_s"] }, note: `run ${secs.toFixed(1)} s; ${st.objectsDeleted} objects deleted; seeding took ${seedSecs.toFixed(1)} s` },
          { label: "GC bytes deleted from R2", unit: "MB/s", values: { cloister: metrics["gc.deleted_MBps"] }, note: `${(st.bytesFreed / 1e6).toFixed(1)} MB freed` },
          { label: "4 KiB push p99, quiet / while GC runs", unit: "ms", values: { cloister: metrics["gc.push_during.p99_ms"] }, note: `quiet p99 ${metrics["gc.push_quiet.p99_ms"].toFixed(1)} ms (p50 ${q(quiet, 0.5).toFixed(1)}); during GC p50 ${q(during, 0.5).toFixed(1)} ms over ${during.length} pushes` },
        ],
        notes: ["seeded rows have no holder (as deleted pushes leave them): the number covers selection, fencing, condemnation, R2 delete and purge, not phase 1's per-repository drops"],
      };
    } finally {
      agent.destroy();
    }
  },
};
