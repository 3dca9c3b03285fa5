// Worker memory while a large blob is pushed in ragged chunks: RSS of the workerd that runs the Worker.
import { pushChunked, pullAndVerify } from "../lib/oci.mjs";
import { startRssSampler, sleep } from "../lib/proc.mjs";
import { MB, MiB, BenchError } from "../lib/http.mjs";

/** Ragged chunk pattern: 37 MiB, 11 MiB + 7 bytes, repeated (never aligned with R2 part sizes). */
const RAGGED = [37 * MiB, 11 * MiB + 7];
const WARMUP_MIB = 96;

export default {
  id: "memory",
  title: "Worker memory during a large chunked push",
  needs: ["cloisterRegistry", "workerPid"],
  async run(ctx) {
    const { memoryMib, sampleMs } = ctx.opts;
    const file = await ctx.file("memory", memoryMib);
    const { worker, proxy } = ctx.cloister.workerd();
    if (!worker) throw new BenchError("could not tell which workerd runs the Worker (see `workerPid` check)");
    const pids = [worker.pid, ...(proxy ? [proxy.pid] : [])];
    // Warm-up: a small push in the same pattern, so one-time allocations (isolate heap, WASM
    // hashers, R2/DO simulator buffers) land in the baseline, not in the growth.
    const warm = await ctx.file("memoryWarm", WARMUP_MIB);
    const warmAgent = ctx.bulkAgent();
    await pushChunked(ctx.cloister.base, "bench/memory-warmup", warm, warm.digest, warmAgent, (i) => RAGGED[i % RAGGED.length]);
    warmAgent.destroy();
    // Baseline: one second idle.
    const idle = startRssSampler(pids, sampleMs);
    await sleep(1000);
    const base = idle.stop();
    const baseline = base[worker.pid].last;
    const agent = ctx.bulkAgent();
    const name = "bench/memory";
    const pushS = startRssSampler(pids, sampleMs);
    const t0 = performance.now();
    let chunks;
    let pushStats;
    try {
      ({ chunks } = await pushChunked(ctx.cloister.base, name, file, file.digest, agent, (i) => RAGGED[i % RAGGED.length]));
    } finally {
      pushStats = pushS.stop();
    }
    const pushMBps = file.size / MB / ((performance.now() - t0) / 1000);
    const pullS = startRssSampler(pids, sampleMs);
    let pull;
    let pullStats;
    try {
      pull = await pullAndVerify(ctx.cloister.base, name, file.digest, file.size, agent);
    } finally {
      pullStats = pullS.stop();
      agent.destroy();
    }
    const pullMBps = file.size / MB / (pull.ms / 1000);
    const w = pushStats[worker.pid];
    const growth = (w.max - baseline) / MB;
    const pullGrowth = (pullStats[worker.pid].max - baseline) / MB;
    const metrics = {
      "memory.baseline_MB": baseline / MB,
      "memory.peak_MB": w.max / MB,
      "memory.growth_MB": growth,
      "memory.pull_peak_MB": pullStats[worker.pid].max / MB,
      "memory.pull_growth_MB": pullGrowth,
      "memory.push_MBps": pushMBps,
      "memory.pull_MBps": pullMBps,
      "memory.samples": w.samples,
      "memory.start_MB": ctx.initialWorkerRss != null ? ctx.initialWorkerRss / MB : null,
    };
    const mib = `${memoryMib} MiB`;
    const rows = [
      { label: `Worker RSS baseline (workerd pid ${worker.pid})`, unit: "MB", values: { cloister: baseline / MB },
        note: ctx.initialWorkerRss != null ? `right after startup: ${(ctx.initialWorkerRss / MB).toFixed(0)} MB` : "" },
      { label: `Worker RSS peak, chunked push of ${mib}`, unit: "MB", values: { cloister: w.max / MB }, note: `${w.samples} samples every ${sampleMs} ms` },
      { label: "Worker RSS growth during push", unit: "MB", values: { cloister: growth }, note: `baseline taken after a ${WARMUP_MIB} MiB warm-up push` },
      ...(ctx.initialWorkerRss != null
        ? [{ label: "Worker RSS peak − RSS right after startup", unit: "MB", values: { cloister: (w.max - ctx.initialWorkerRss) / MB }, note: "informational: includes warm-up and earlier sections" }]
        : []),
      { label: "Worker RSS growth during pull", unit: "MB", values: { cloister: pullGrowth } },
      { label: `ragged chunked push ${mib} (37 MiB / 11 MiB+7)`, unit: "MB/s", values: { cloister: pushMBps }, note: `${chunks} PATCH requests` },
      { label: `pull ${mib} (verified)`, unit: "MB/s", values: { cloister: pullMBps } },
    ];
    if (proxy) {
      const p = pushStats[proxy.pid];
      rows.push({ label: `wrangler proxy workerd RSS growth (pid ${proxy.pid})`, unit: "MB", values: { cloister: (p.max - base[proxy.pid].last) / MB }, note: "informational: not the Worker" });
    }
    const notes = [];
    const mp = ctx.metrics["r2.mp_get_rss_growth_MB"];
    if (typeof mp === "number") {
      const big = mp * MB > 0.25 * ctx.opts.layerMib * MiB;
      notes.push(`for comparison, a raw R2 GET of a ${ctx.opts.layerMib} MiB multipart object grew the Worker's RSS by ${mp.toFixed(0)} MB (section r2)${big ? ": local R2 itself holds multipart objects in memory while serving them" : ""}`);
    }
    return { metrics, rows, notes };
  },
};
