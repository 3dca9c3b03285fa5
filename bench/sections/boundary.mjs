// Tenant boundary cost: HEAD latency on a digest that is a member of the repository, on one that
// exists only in another repository, and on one that exists nowhere. Interleaved, one keep-alive
// connection; the three medians should be within noise of each other.
import { pushPostDigest, headBlob } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { BenchError } from "../lib/http.mjs";

const ROUNDS = 400;

export default {
  id: "boundary",
  title: "Tenant boundary: HEAD latency member / elsewhere / nowhere",
  needs: ["cloisterRegistry"],
  async run(ctx) {
    const agent = ctx.agent(1);
    const base = ctx.cloister.base;
    const [mine, theirs, none] = randomBlobs(3, 4096);
    await pushPostDigest(base, "bench/tenant-a", mine, mine.digest, agent);
    await pushPostDigest(base, "bench/tenant-b", theirs, theirs.digest, agent);
    const cases = { member: [mine.digest, 200], elsewhere: [theirs.digest, 404], nowhere: [none.digest, 404] };
    const lat = { member: [], elsewhere: [], nowhere: [] };
    try {
      for (let i = 0; i < 20; i++) for (const [d] of Object.values(cases)) await headBlob(base, "bench/tenant-a", d, agent); // warm
      for (let i = 0; i < ROUNDS; i++) {
        for (const [name, [digest, want]] of Object.entries(cases)) {
          const t = performance.now();
          const res = await headBlob(base, "bench/tenant-a", digest, agent);
          lat[name].push(performance.now() - t);
          if (res.status !== want) throw new BenchError(`HEAD ${name} answered ${res.status}, expected ${want}`);
        }
      }
    } finally {
      agent.destroy();
    }
    const q = (arr, p) => [...arr].sort((a, b) => a - b)[Math.min(arr.length - 1, Math.floor(arr.length * p))];
    const metrics = {};
    const rows = [];
    for (const name of Object.keys(cases)) {
      metrics[`boundary.${name}.p50_ms`] = q(lat[name], 0.5);
      metrics[`boundary.${name}.p90_ms`] = q(lat[name], 0.9);
      rows.push({ label: `HEAD blob, ${name} (median of ${ROUNDS})`, unit: "ms", values: { cloister: q(lat[name], 0.5) }, note: `p90 ${q(lat[name], 0.9).toFixed(2)} ms` });
    }
    const spread = Math.max(...Object.keys(cases).map((k) => metrics[`boundary.${k}.p50_ms`])) - Math.min(...Object.keys(cases).map((k) => metrics[`boundary.${k}.p50_ms`]));
    metrics["boundary.p50_spread_ms"] = spread;
    return { rows, metrics, notes: [`median spread across the three cases: ${spread.toFixed(3)} ms (each answer is one TrustStore lookup)`] };
  },
};
