// Many small blobs, sequentially over one keep-alive connection.
import { pushMonolithic, pushPostDigest, headBlob } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { request, BenchError } from "../lib/http.mjs";

async function run(ctx, target, flow, blobs) {
  const agent = ctx.agent(1);
  const name = "bench/small";
  let fresh = 0;
  const lat = [];
  try {
    const warm = await request(`${target.base}/v2/`, { agent }); // open the connection outside the timing
    if (warm.status !== 200) throw new BenchError(`GET /v2/ answered ${warm.status}`);
    const t0 = performance.now();
    for (const b of blobs) {
      const s = performance.now();
      const res = flow === "postDigest" ? await pushPostDigest(target.base, name, b, b.digest, agent) : await pushMonolithic(target.base, name, b, b.digest, agent);
      if (!res.reused) fresh++;
      lat.push(performance.now() - s);
    }
    const secs = (performance.now() - t0) / 1000;
    // Spot-check that the blobs landed.
    for (let i = 0; i < blobs.length; i += Math.max(1, Math.floor(blobs.length / 10))) {
      const h = await headBlob(target.base, name, blobs[i].digest, agent);
      if (h.status !== 200 || Number(h.headers["content-length"]) !== blobs[i].size)
        throw new BenchError(`HEAD ${blobs[i].digest} after push: ${h.status}, Content-Length ${h.headers["content-length"]}`);
    }
    lat.sort((a, b) => a - b);
    return { rate: blobs.length / secs, p50: lat[Math.floor(lat.length / 2)], p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))], fresh };
  } finally {
    agent.destroy();
  }
}

export default {
  id: "small",
  title: "Small blobs, sequential, one keep-alive connection",
  needs: ["registries"],
  async run(ctx) {
    const { smallCount, smallKib } = ctx.opts;
    const metrics = {};
    const notes = [];
    const mono = { label: `${smallCount} × ${smallKib} KiB, POST + PUT ?digest=`, unit: "blobs/s", values: {}, note: "" };
    const post = { label: `${smallCount} × ${smallKib} KiB, single POST ?digest=`, unit: "blobs/s", values: { distribution: "unsupported" } };
    const noteParts = [];
    for (const t of ctx.registries()) {
      try {
        const r = await run(ctx, t, "monolithic", randomBlobs(smallCount, smallKib * 1024));
        metrics[`small.monolithic.${t.name}.blobs_per_s`] = r.rate;
        mono.values[t.name] = r.rate;
        noteParts.push(`${t.name} p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`);
        if (r.fresh > 1) notes.push(`${t.name}: ${r.fresh} new connections were opened during the run (keep-alive not kept)`);
      } catch (err) {
        mono.values[t.name] = "failed";
        notes.push(`${t.name} (POST + PUT): ${err.message}`);
      }
      if (t.name !== "cloister") continue;
      try {
        const r = await run(ctx, t, "postDigest", randomBlobs(smallCount, smallKib * 1024));
        metrics[`small.postDigest.${t.name}.blobs_per_s`] = r.rate;
        post.values[t.name] = r.rate;
        post.note = `p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`;
      } catch (err) {
        post.values[t.name] = "failed";
        notes.push(`${t.name} (POST ?digest=): ${err.message}`);
      }
    }
    mono.note = noteParts.join("; ");
    notes.push("distribution 2.8.2 answers 202 to POST ?digest= with a body and ignores the body, so that row is cloister-only");
    return { metrics, rows: [mono, post], notes };
  },
};
