// Large layer push/pull, monolithic (POST + PUT ?digest= with the body) and chunked (PATCH + Content-Range).
import { createReadStream } from "node:fs";
import { pushMonolithic, pushChunked, pullAndVerify } from "../lib/oci.mjs";
import { request, expectStatus, MB, MiB } from "../lib/http.mjs";

/** Rounds of the interleaved monolithic-push / raw-R2-put comparison (medians reported). */
const AB_ROUNDS = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * cloister's monolithic push against the raw R2 put of the same file through the same workerd,
 * alternated AB_ROUNDS times so both see the same load (a single pair taken minutes apart on a
 * shared machine varied 0.5×–1.05×). Pushes after the first are deduplicated at the commit, so they
 * still stream, hash and write every byte and then delete the redundant object.
 */
async function interleaved(ctx, file) {
  const { base } = ctx.cloister;
  const agent = ctx.bulkAgent();
  const push = [];
  const raw = [];
  try {
    for (let i = 0; i < AB_ROUNDS; i++) {
      let t0 = performance.now();
      const put = await request(`${base}/_bench/r2/ab-${i}`, {
        method: "PUT", agent, body: createReadStream(file.path, { highWaterMark: MiB }),
        headers: { "Content-Type": "application/octet-stream", "Content-Length": String(file.size) },
      });
      raw.push(file.size / MB / ((performance.now() - t0) / 1000));
      expectStatus(put, 201, "PUT /_bench/r2 (interleaved)");
      await request(`${base}/_bench/r2/ab-${i}`, { method: "DELETE", agent });
      t0 = performance.now();
      await pushMonolithic(base, "bench/layer-ab", file, file.digest, agent);
      push.push(file.size / MB / ((performance.now() - t0) / 1000));
    }
  } finally {
    agent.destroy();
  }
  return { push: median(push), raw: median(raw), ratios: push.map((p, i) => p / raw[i]) };
}

export default {
  id: "push",
  title: "Large layer push / pull",
  needs: ["registries"],
  async run(ctx) {
    const { layerMib, chunkMib } = ctx.opts;
    const mono = await ctx.file("layerA", layerMib);
    const chunked = await ctx.file("layerB", layerMib);
    const metrics = {};
    const notes = [];
    const rows = {
      monoPush: { label: `monolithic push ${layerMib} MiB`, unit: "MB/s", values: {} },
      monoPull: { label: `monolithic pull ${layerMib} MiB (verified)`, unit: "MB/s", values: {} },
      chPush: { label: `chunked push ${layerMib} MiB, ${chunkMib} MiB PATCHes`, unit: "MB/s", values: {} },
      chPull: { label: `chunked pull ${layerMib} MiB (verified)`, unit: "MB/s", values: {} },
    };
    for (const t of ctx.registries()) {
      const agent = ctx.bulkAgent();
      const name = "bench/layer";
      try {
        let t0 = performance.now();
        await pushMonolithic(t.base, name, mono, mono.digest, agent);
        const monoPush = mono.size / MB / ((performance.now() - t0) / 1000);
        const monoPull = mono.size / MB / ((await pullAndVerify(t.base, name, mono.digest, mono.size, agent)).ms / 1000);
        t0 = performance.now();
        const { chunks } = await pushChunked(t.base, name, chunked, chunked.digest, agent, () => chunkMib * MiB);
        const chPush = chunked.size / MB / ((performance.now() - t0) / 1000);
        const chPull = chunked.size / MB / ((await pullAndVerify(t.base, name, chunked.digest, chunked.size, agent)).ms / 1000);
        Object.assign(metrics, {
          [`push.monolithic.${t.name}.push_MBps`]: monoPush,
          [`push.monolithic.${t.name}.pull_MBps`]: monoPull,
          [`push.chunked.${t.name}.push_MBps`]: chPush,
          [`push.chunked.${t.name}.pull_MBps`]: chPull,
        });
        rows.monoPush.values[t.name] = monoPush;
        rows.monoPull.values[t.name] = monoPull;
        rows.chPush.values[t.name] = chPush;
        rows.chPull.values[t.name] = chPull;
        rows.chPush.note = `${chunks} PATCH requests`;
      } catch (err) {
        notes.push(`${t.name}: ${err.message}`);
        for (const r of Object.values(rows)) if (r.values[t.name] === undefined) r.values[t.name] = "failed";
      } finally {
        agent.destroy();
      }
    }
    if (ctx.cloister && ctx.registries().some((t) => t.name === "cloister")) {
      try {
        const ab = await interleaved(ctx, mono);
        metrics["push.monolithic_ab.cloister_MBps"] = ab.push;
        metrics["push.monolithic_ab.r2_MBps"] = ab.raw;
        metrics["push.monolithic_ab.ratio"] = ab.push / ab.raw;
        rows.monoAb = { label: `monolithic push vs raw R2 put, alternated ×${AB_ROUNDS} (medians)`, unit: "MB/s", values: { cloister: ab.push, r2: ab.raw },
          note: `cloister / raw R2 put ${(ab.push / ab.raw).toFixed(2)}× (per round ${ab.ratios.map((r) => r.toFixed(2)).join(", ")})` };
      } catch (err) {
        notes.push(`interleaved monolithic push / raw R2 put: ${err.message}`);
      }
    }
    const r2put = ctx.metrics["r2.put_MBps"];
    const r2get = ctx.metrics["r2.get_MBps"];
    if (r2put !== undefined) rows.monoPush.values.r2 = r2put;
    if (r2get !== undefined) rows.monoPull.values.r2 = r2get;
    // Chunked uploads become multipart objects: their raw ceiling is the multipart row of section r2.
    if (ctx.metrics["r2.mp_put_MBps"] !== undefined) rows.chPush.values.r2 = `${ctx.metrics["r2.mp_put_MBps"].toFixed(0)} (mp)`;
    if (ctx.metrics["r2.mp_get_MBps"] !== undefined) rows.chPull.values.r2 = `${ctx.metrics["r2.mp_get_MBps"].toFixed(0)} (mp)`;
    return { metrics, rows: Object.values(rows), notes };
  },
};
