// The audit write's cost on push latency (issue 12): every mutation awaits one audit append
// (record(): one AuditLog Durable Object call) before its 2xx. Measured two ways, interleaved in
// time on one keep-alive connection: the append alone, timed inside the Worker over N appends
// (/_bench/audit/append), and N small pushes (POST ?digest=, which include one append each).
import { pushPostDigest } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { request, expectStatus } from "../lib/http.mjs";

const q = (arr, p) => [...arr].sort((a, b) => a - b)[Math.min(arr.length - 1, Math.floor(arr.length * p))];

export default {
  id: "audit",
  title: "Audit write cost on push latency",
  needs: ["benchRoutes", "cloisterRegistry"],
  async run(ctx) {
    const n = Math.max(20, Math.min(2000, ctx.opts.smallCount));
    const base = ctx.cloister.base;
    const agent = ctx.agent(1);
    const push = [];
    const appends = [];
    try {
      const warm = randomBlobs(10, ctx.opts.smallKib * 1024);
      for (const b of warm) await pushPostDigest(base, "bench/audit", b, b.digest, agent);
      const blobs = randomBlobs(n, ctx.opts.smallKib * 1024);
      // Ten rounds alternating pushes and appends, so load changes hit both alike.
      const per = Math.ceil(n / 10);
      for (let r = 0; r < 10; r++) {
        for (const b of blobs.slice(r * per, (r + 1) * per)) {
          const t = performance.now();
          await pushPostDigest(base, "bench/audit", b, b.digest, agent);
          push.push(performance.now() - t);
        }
        const res = await request(`${base}/_bench/audit/append?n=${per}`, { method: "POST", agent });
        expectStatus(res, 200, "POST /_bench/audit/append");
        const j = JSON.parse(res.text);
        appends.push({ n: j.n, p50: j.p50Ms, p99: j.p99Ms, mean: j.meanMs });
      }
    } finally {
      agent.destroy();
    }
    const appendMean = appends.reduce((a, x) => a + x.mean * x.n, 0) / appends.reduce((a, x) => a + x.n, 0);
    const appendP50 = q(appends.map((x) => x.p50), 0.5);
    const appendP99 = Math.max(...appends.map((x) => x.p99));
    const pushP50 = q(push, 0.5);
    const metrics = {
      "audit.append.mean_ms": appendMean,
      "audit.append.p50_ms": appendP50,
      "audit.push.p50_ms": pushP50,
      "audit.push.p99_ms": q(push, 0.99),
      "audit.share_of_push_p50": appendMean / pushP50,
    };
    const rows = [
      { label: `audit append (awaited by every mutation), in the Worker, ${n} appends`, unit: "ms", values: { cloister: appendMean },
        note: `mean; per-round p50 median ${appendP50} ms, worst round p99 ${appendP99} ms (the Worker's clock has ms steps)` },
      { label: `${ctx.opts.smallKib} KiB blob push, POST ?digest= (one append inside), ${n} pushes`, unit: "ms", values: { cloister: pushP50 },
        note: `p50; p99 ${q(push, 0.99).toFixed(1)} ms; the append is ${(100 * appendMean / pushP50).toFixed(0)}% of the p50 push` },
    ];
    return { rows, metrics, notes: ["There is no switch to skip the awaited append (it is the durability guarantee, docs/audit.md), so the append is timed on its own through /_bench/audit/append with the same record() a push calls."] };
  },
};
