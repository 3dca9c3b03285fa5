// Raw R2 ceiling: the same file PUT through /_bench/r2 (env.BUCKET.put(key, request.body)) and GET
// back; plus the same file as a 16 MiB-part multipart object (/_bench/r2mp), the ceiling for chunked
// uploads and for pulling what they produce. Worker RSS is sampled during each GET.
import { createReadStream } from "node:fs";
import { request, expectStatus, BenchError, MB, MiB } from "../lib/http.mjs";
import { getWithStallRetry } from "../lib/oci.mjs";
import { startRssSampler } from "../lib/proc.mjs";

async function putGet(ctx, { file, key, putPath, agent }) {
  const { base } = ctx.cloister;
  const t0 = performance.now();
  const put = await request(`${base}${putPath}`, {
    method: "PUT",
    agent,
    body: createReadStream(file.path, { highWaterMark: MiB }),
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(file.size) },
  });
  const putMs = performance.now() - t0;
  expectStatus(put, 201, `PUT ${putPath}`);
  const worker = ctx.cloister.workerd().worker;
  const sampler = worker ? startRssSampler([worker.pid], ctx.opts.sampleMs) : null;
  let t1 = performance.now();
  let get;
  try {
    ({ res: get } = await getWithStallRetry(`GET /_bench/r2/${key}`, (a) => {
      t1 = performance.now();
      return request(`${base}/_bench/r2/${key}`, { agent: a, sink: "sha256", headers: { "Accept-Encoding": "gzip" } });
    }, agent));
  } finally {
    var rss = sampler?.stop()[worker.pid];
  }
  const getMs = performance.now() - t1;
  expectStatus(get, 200, `GET /_bench/r2/${key}`);
  if (get.bytes !== file.size || `sha256:${get.sha256}` !== file.digest)
    throw new BenchError(`raw R2 GET returned ${get.bytes} bytes sha256:${get.sha256}, expected ${file.size} ${file.digest}`);
  await request(`${base}/_bench/r2/${key}`, { method: "DELETE", agent });
  return {
    putMBps: file.size / MB / (putMs / 1000),
    getMBps: file.size / MB / (getMs / 1000),
    putMs,
    getMs,
    getRssGrowthMB: rss ? (rss.max - rss.first) / MB : null,
    info: JSON.parse(put.text),
  };
}

export default {
  id: "r2",
  title: "Raw R2 through the Worker (/_bench/r2, the ceiling)",
  needs: ["benchRoutes"],
  async run(ctx) {
    const { layerMib, chunkMib } = ctx.opts;
    const file = await ctx.file("layerA", layerMib);
    const agent = ctx.bulkAgent();
    const metrics = {};
    const rows = [];
    const notes = [];
    try {
      const single = await putGet(ctx, { file, key: `layer-${layerMib}mib`, putPath: `/_bench/r2/layer-${layerMib}mib`, agent });
      Object.assign(metrics, { "r2.put_MBps": single.putMBps, "r2.get_MBps": single.getMBps, "r2.get_rss_growth_MB": single.getRssGrowthMB });
      rows.push(
        { label: `raw R2 put ${layerMib} MiB (single put)`, unit: "MB/s", values: { r2: single.putMBps }, note: `${(single.putMs / 1000).toFixed(2)} s` },
        { label: `raw R2 get ${layerMib} MiB (verified)`, unit: "MB/s", values: { r2: single.getMBps },
          note: `${(single.getMs / 1000).toFixed(2)} s; Worker RSS +${(single.getRssGrowthMB ?? NaN).toFixed(0)} MB during GET` },
      );
      const partBytes = Math.max(5, chunkMib) * MiB;
      const mp = await putGet(ctx, { file, key: `layer-${layerMib}mib-mp`, putPath: `/_bench/r2mp/layer-${layerMib}mib-mp?part=${partBytes}`, agent });
      Object.assign(metrics, { "r2.mp_put_MBps": mp.putMBps, "r2.mp_get_MBps": mp.getMBps, "r2.mp_get_rss_growth_MB": mp.getRssGrowthMB });
      rows.push(
        { label: `raw R2 multipart put ${layerMib} MiB (${partBytes / MiB} MiB parts)`, unit: "MB/s", values: { r2: mp.putMBps }, note: `${mp.info.parts} parts, ${(mp.putMs / 1000).toFixed(2)} s` },
        { label: `raw R2 get of that multipart object (verified)`, unit: "MB/s", values: { r2: mp.getMBps },
          note: `${(mp.getMs / 1000).toFixed(2)} s; Worker RSS +${(mp.getRssGrowthMB ?? NaN).toFixed(0)} MB during GET` },
      );
    } finally {
      agent.destroy();
    }
    notes.push("multipart put buffers one part at a time in the Worker (part size = --chunk-mib, ≥ 5 MiB); Worker RSS growth is max − first sample during the GET");
    return { metrics, rows, notes };
  },
};
