// Large layer push/pull, monolithic (POST + PUT ?digest= with the body) and chunked (PATCH + Content-Range).
import { pushMonolithic, pushChunked, pullAndVerify } from "../lib/oci.mjs";
import { MB, MiB } from "../lib/http.mjs";

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
