// In-Worker hashing throughput: the body is consumed inside the Worker with BYOB readAtLeast(256 KiB).
import { createReadStream } from "node:fs";
import { request, expectStatus, BenchError, MB } from "../lib/http.mjs";

const ALGOS = ["none", "native", "sha256", "sha512", "blake3"];

export default {
  id: "hash",
  title: "In-Worker hashing (/_bench/hash)",
  needs: ["benchRoutes"],
  async run(ctx) {
    const file = await ctx.file("hashBody", ctx.opts.hashMib, ["sha512", "blake3"]);
    const expected = { none: "", native: file.digest.slice(7), sha256: file.digest.slice(7), sha512: file.sha512, blake3: file.blake3 };
    const agent = ctx.bulkAgent();
    const rows = [];
    const metrics = {};
    const notes = [];
    for (const algo of ALGOS) {
      try {
        const t0 = performance.now();
        const res = await request(`${ctx.cloister.base}/_bench/hash?algo=${algo}`, {
          method: "POST",
          agent,
          body: createReadStream(file.path, { highWaterMark: 1024 * 1024 }),
          headers: { "Content-Type": "application/octet-stream", "Content-Length": String(file.size) },
        });
        const e2e = file.size / MB / ((performance.now() - t0) / 1000);
        expectStatus(res, 200, `POST /_bench/hash?algo=${algo}`);
        const j = JSON.parse(res.text);
        if (j.bytes !== file.size) throw new BenchError(`Worker counted ${j.bytes} bytes, sent ${file.size}`);
        if (j.hex !== expected[algo]) throw new BenchError(`Worker ${algo} = ${j.hex}, expected ${expected[algo]}`);
        const inWorker = j.ms > 0 ? file.size / MB / (j.ms / 1000) : null;
        metrics[`hash.${algo}.worker_MBps`] = inWorker;
        metrics[`hash.${algo}.e2e_MBps`] = e2e;
        rows.push({ label: `${algo}: ${ctx.opts.hashMib} MiB consumed in the Worker${algo === "none" ? "" : " + hashed (verified)"}`, unit: "MB/s",
          values: { cloister: inWorker ?? "n/a" }, note: `end to end ${e2e.toFixed(0)} MB/s, ${j.reads} reads` });
      } catch (err) {
        rows.push({ label: `${algo}`, unit: "MB/s", values: { cloister: "failed" } });
        notes.push(`${algo}: ${err.message}`);
      }
    }
    agent.destroy();
    notes.push("in-Worker MB/s uses the Worker's clock (Date.now() advances only on I/O); end to end is the client's view");
    return { rows, metrics, notes };
  },
};
