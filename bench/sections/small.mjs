// Many small blobs, sequentially over one keep-alive connection.
import { pushMonolithic, pushPostDigest, headBlob, startUpload } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { request, BenchError } from "../lib/http.mjs";

/** Blocks the small pushes are cut into; the targets take turns block by block. */
const BLOCKS = 10;

/**
 * `count` small blobs per target, sequentially on one keep-alive connection each, the targets
 * taking turns in BLOCKS blocks, so a load change on this shared machine hits every target alike
 * (one target's whole run after the other's varied the ratio 0.65–1.24× between runs). A target's
 * rate is its blobs over the time of its own blocks. Answers name → result, or {error}.
 */
async function runInterleaved(ctx, targets, flow, count, size) {
  const name = "bench/small";
  const st = targets.map((target) => ({ target, agent: ctx.agent(1), blobs: randomBlobs(count, size), lat: [], ms: 0, fresh: 0, error: null }));
  const per = Math.ceil(count / BLOCKS);
  try {
    for (const s of st) {
      try {
        const warm = await request(`${s.target.base}/v2/`, { agent: s.agent }); // open the connection outside the timing
        if (warm.status !== 200) throw new BenchError(`GET /v2/ answered ${warm.status}`);
      } catch (err) {
        s.error = err;
      }
    }
    for (let b = 0; b < BLOCKS; b++) {
      for (const s of st) {
        if (s.error) continue;
        try {
          const t0 = performance.now();
          for (const blob of s.blobs.slice(b * per, (b + 1) * per)) {
            const t = performance.now();
            const res = flow === "postDigest" ? await pushPostDigest(s.target.base, name, blob, blob.digest, s.agent) : await pushMonolithic(s.target.base, name, blob, blob.digest, s.agent);
            if (!res.reused) s.fresh++;
            s.lat.push(performance.now() - t);
          }
          s.ms += performance.now() - t0;
        } catch (err) {
          s.error = err;
        }
      }
    }
    const out = {};
    for (const s of st) {
      if (s.error) {
        out[s.target.name] = { error: s.error };
        continue;
      }
      // Spot-check that the blobs landed.
      for (let i = 0; i < s.blobs.length; i += Math.max(1, Math.floor(s.blobs.length / 10))) {
        const h = await headBlob(s.target.base, name, s.blobs[i].digest, s.agent);
        if (h.status !== 200 || Number(h.headers["content-length"]) !== s.blobs[i].size) {
          out[s.target.name] = { error: new BenchError(`HEAD ${s.blobs[i].digest} after push: ${h.status}, Content-Length ${h.headers["content-length"]}`) };
          break;
        }
      }
      if (out[s.target.name]) continue;
      const lat = [...s.lat].sort((a, b) => a - b);
      out[s.target.name] = { rate: s.blobs.length / (s.ms / 1000), p50: lat[Math.floor(lat.length / 2)], p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))], fresh: s.fresh };
    }
    return out;
  } finally {
    for (const s of st) s.agent.destroy();
  }
}

const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Where a small POST + PUT's time goes, seen from the client (one keep-alive connection, p50 over
 * `n` rounds, steps interleaved so load drifts hit all alike): `GET /v2/` (the Worker's own
 * request floor: routing, auth, request log), `POST` alone (the signed id), `PUT` with the body
 * alone (hashing, R2 put, index calls, audit), and the raw R2 put of the same size through the
 * same workerd (`PUT /_bench/r2/…`). PUT − raw R2 put ≈ what the registry adds to the bytes' write.
 */
async function breakdown(ctx, target, blobs) {
  const agent = ctx.agent(1);
  const name = "bench/small-steps";
  const t = { floor: [], post: [], put: [], r2: [] };
  const time = async (arr, fn) => { const s = performance.now(); await fn(); arr.push(performance.now() - s); };
  try {
    await request(`${target.base}/v2/`, { agent });
    for (const [i, b] of blobs.entries()) {
      await time(t.floor, async () => { const r = await request(`${target.base}/v2/`, { agent }); if (r.status !== 200) throw new BenchError(`GET /v2/ answered ${r.status}`); });
      let loc;
      await time(t.post, async () => { loc = await startUpload(target.base, name, agent); });
      loc.searchParams.set("digest", b.digest);
      await time(t.put, async () => {
        const r = await request(loc, { method: "PUT", agent, body: b.buffer, headers: { "Content-Type": "application/octet-stream", "Content-Length": String(b.buffer.length) } });
        if (r.status !== 201) throw new BenchError(`PUT answered ${r.status}`);
      });
      await time(t.r2, async () => {
        const r = await request(`${target.base}/_bench/r2/small-step-${i}`, { method: "PUT", agent, body: b.buffer, headers: { "Content-Length": String(b.buffer.length) } });
        if (r.status >= 300) throw new BenchError(`PUT /_bench/r2 answered ${r.status}`);
      });
    }
  } finally {
    agent.destroy();
  }
  return { floor: p50(t.floor), post: p50(t.post), put: p50(t.put), r2: p50(t.r2) };
}

export default {
  id: "small",
  title: "Small blobs, sequential, one keep-alive connection per registry, registries taking turns in blocks",
  needs: ["registries"],
  async run(ctx) {
    const { smallCount, smallKib } = ctx.opts;
    const metrics = {};
    const notes = [];
    const mono = { label: `${smallCount} × ${smallKib} KiB, POST + PUT ?digest=`, unit: "blobs/s", values: {}, note: "" };
    const post = { label: `${smallCount} × ${smallKib} KiB, single POST ?digest=`, unit: "blobs/s", values: { distribution: "unsupported" } };
    const noteParts = [];
    const size = smallKib * 1024;
    const monoRes = await runInterleaved(ctx, ctx.registries(), "monolithic", smallCount, size);
    for (const t of ctx.registries()) {
      const r = monoRes[t.name];
      if (r.error) {
        mono.values[t.name] = "failed";
        notes.push(`${t.name} (POST + PUT): ${r.error.message}`);
        continue;
      }
      metrics[`small.monolithic.${t.name}.blobs_per_s`] = r.rate;
      mono.values[t.name] = r.rate;
      noteParts.push(`${t.name} p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`);
      if (r.fresh > 1) notes.push(`${t.name}: ${r.fresh} new connections were opened during the run (keep-alive not kept)`);
    }
    const cloister = ctx.registries().filter((t) => t.name === "cloister");
    if (cloister.length) {
      const r = (await runInterleaved(ctx, cloister, "postDigest", smallCount, size)).cloister;
      if (r.error) {
        post.values.cloister = "failed";
        notes.push(`cloister (POST ?digest=): ${r.error.message}`);
      } else {
        metrics["small.postDigest.cloister.blobs_per_s"] = r.rate;
        post.values.cloister = r.rate;
        post.note = `p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`;
      }
    }
    const cl = ctx.registries().find((t) => t.name === "cloister");
    if (cl) {
      try {
        const b = await breakdown(ctx, cl, randomBlobs(Math.min(100, smallCount), smallKib * 1024));
        for (const [k, v] of Object.entries(b)) metrics[`small.steps.${k}_p50_ms`] = v;
        notes.push(`cloister per-step p50 (ms): GET /v2/ ${b.floor.toFixed(1)}, POST ${b.post.toFixed(1)}, PUT with body ${b.put.toFixed(1)}, raw R2 put of ${smallKib} KiB ${b.r2.toFixed(1)}; PUT − raw R2 put ${(b.put - b.r2).toFixed(1)}`);
      } catch (err) {
        notes.push(`cloister per-step breakdown: ${err.message}`);
      }
    }
    mono.note = noteParts.join("; ");
    notes.push("distribution 2.8.2 answers 202 to POST ?digest= with a body and ignores the body, so that row is cloister-only");
    return { metrics, rows: [mono, post], notes };
  },
};
