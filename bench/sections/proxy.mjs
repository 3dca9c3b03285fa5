// Pull-through cache (docs/proxy.md): a 100 MB one-layer image pulled from the distribution
// registry directly, then through a cloister proxy namespace in front of it cold (fetched from
// the upstream while streamed to the client and into R2) and warm (from the cache). Same run,
// same data, same machine: compare the three, not the absolute numbers.
import { createHash } from "node:crypto";
import { pushMonolithic, pullAndVerify } from "../lib/oci.mjs";
import { request, expectStatus, BenchError, MB } from "../lib/http.mjs";

const IMAGE_BYTES = 100_000_000;
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const PREFIX = "bench-proxy";

/** Pull manifest, config and layer (each verified); returns seconds. */
async function pullImage(base, name, img, agent) {
  const t0 = performance.now();
  const m = await request(`${base}/v2/${name}/manifests/v1`, { agent, headers: { Accept: OCI_MANIFEST } });
  expectStatus(m, 200, `GET ${name} manifest`);
  if (m.headers["docker-content-digest"] !== img.manifestDigest) throw new BenchError(`${name}: manifest digest ${m.headers["docker-content-digest"]}, expected ${img.manifestDigest}`);
  await pullAndVerify(base, name, img.configDigest, img.config.length, agent);
  await pullAndVerify(base, name, img.layer.digest, img.layer.size, agent);
  return (performance.now() - t0) / 1000;
}

export default {
  id: "proxy",
  title: `Pull-through cache: ${IMAGE_BYTES / MB} MB image cold / warm / direct`,
  needs: ["registries"],
  async run(ctx) {
    if (!ctx.cloister || !ctx.cloisterRegistryOk || !ctx.distribution) throw new BenchError("needs both cloister and distribution (--targets cloister,distribution)");
    const upstream = ctx.distribution.base;
    const agent = ctx.bulkAgent();
    try {
      // The image, pushed to distribution: one random layer and a small config.
      const layer = await ctx.file("proxyLayer", IMAGE_BYTES / 1024 / 1024);
      const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [layer.digest] } }));
      const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
      await pushMonolithic(upstream, "bench/image", layer, layer.digest, agent);
      await pushMonolithic(upstream, "bench/image", { buffer: config }, configDigest, agent);
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layer.size }],
      }));
      const put = await request(`${upstream}/v2/bench/image/manifests/v1`, { method: "PUT", agent, body: manifest, headers: { "Content-Type": OCI_MANIFEST, "Content-Length": String(manifest.length) } });
      expectStatus(put, 201, "PUT manifest to distribution");
      const img = { layer, config, configDigest, manifestDigest: `sha256:${createHash("sha256").update(manifest).digest("hex")}` };

      const ns = JSON.stringify({ prefix: PREFIX, upstream, tagTtlSeconds: 300, timeoutSeconds: 30 });
      const set = await request(`${ctx.cloister.base}/admin/proxies`, { method: "PUT", agent, body: ns, headers: { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(ns)) } });
      expectStatus(set, 200, "PUT /admin/proxies (the bench's cloister runs in open mode)");

      const size = IMAGE_BYTES + config.length + manifest.length;
      const direct = await pullImage(upstream, "bench/image", img, agent);
      const load = (await import("node:os")).loadavg()[0];
      const cold = await pullImage(ctx.cloister.base, `${PREFIX}/bench/image`, img, agent);
      const warm = await pullImage(ctx.cloister.base, `${PREFIX}/bench/image`, img, agent);
      const mbps = (s) => size / MB / s;
      const metrics = {
        "proxy.cold_s": cold, "proxy.warm_s": warm, "proxy.direct_s": direct,
        "proxy.cold_MBps": mbps(cold), "proxy.warm_MBps": mbps(warm), "proxy.direct_MBps": mbps(direct),
      };
      const rows = [
        { label: "image pull, cold through the proxy", unit: "MB/s", values: { cloister: mbps(cold) }, note: `${cold.toFixed(2)} s` },
        { label: "image pull, warm from the cache", unit: "MB/s", values: { cloister: mbps(warm) }, note: `${warm.toFixed(2)} s` },
        { label: "image pull, direct from the upstream", unit: "MB/s", values: { distribution: mbps(direct) }, note: `${direct.toFixed(2)} s` },
      ];
      const notes = [`load average ${load.toFixed(2)} when the cold pull started; cold = ${(cold / direct).toFixed(2)}× the direct time, warm = ${(warm / direct).toFixed(2)}×`];
      return { metrics, rows, notes };
    } finally {
      agent.destroy();
    }
  },
};
