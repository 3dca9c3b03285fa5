// Concurrency over the per-repository index (docs/capacity.md): N parallel clients pulling
// (manifest GET + 4 KiB blob GET) and pushing (POST ?digest= of 4 KiB) over ONE repository vs
// over N repositories; a heavy manifest PUT in repository A vs tags/list latency in repository B;
// and the index write rate of one BlobStore object and of TrustStore objects (/_bench/index).
// Local workerd runs every Durable Object on one thread, so "N repositories" cannot beat "1" by
// much here; the object-level rates say what one object takes, which is what production scales.
import { createHash } from "node:crypto";
import { pushPostDigest } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { request, expectStatus, BenchError } from "../lib/http.mjs";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const q = (arr, p) => (arr.length ? [...arr].sort((a, b) => a - b)[Math.min(arr.length - 1, Math.floor(arr.length * p))] : null);
const sha = (buf) => "sha256:" + createHash("sha256").update(buf).digest("hex");

/** Push a one-layer image to `repo` as tag `v1`; answers the digests to pull. */
async function pushImage(base, repo, agent) {
  const [layer] = randomBlobs(1, 4096);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", repo }));
  await pushPostDigest(base, repo, layer, layer.digest, agent);
  await pushPostDigest(base, repo, { buffer: config }, sha(config), agent);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layer.size }],
  }));
  const res = await request(`${base}/v2/${repo}/manifests/v1`, { method: "PUT", agent, body: manifest, headers: { "Content-Type": MANIFEST, "Content-Length": String(manifest.length) } });
  expectStatus(res, 201, `PUT manifest ${repo}:v1`);
  return { layer: layer.digest };
}

/** `clients` loops, each doing `ops` operations `op(client, i)`; answers ops/s and latency quantiles. */
async function parallel(ctx, clients, ops, op) {
  const agents = Array.from({ length: clients }, () => ctx.agent(1));
  const lat = [];
  try {
    const t0 = performance.now();
    await Promise.all(agents.map(async (agent, c) => {
      for (let i = 0; i < ops; i++) {
        const s = performance.now();
        await op(c, i, agent);
        lat.push(performance.now() - s);
      }
    }));
    const secs = (performance.now() - t0) / 1000;
    return { rate: (clients * ops) / secs, p50: q(lat, 0.5), p99: q(lat, 0.99) };
  } finally {
    for (const a of agents) a.destroy();
  }
}

export default {
  id: "concurrency",
  title: "Concurrency: 1 repository vs N repositories; heavy PUT vs tags/list elsewhere; index write rate",
  needs: ["cloisterRegistry", "benchRoutes"],
  async run(ctx) {
    const base = ctx.cloister.base;
    const clients = ctx.opts.clients ?? 32;
    const ops = ctx.opts.concurrencyOps ?? 40;
    const heavyLayers = ctx.opts.heavyLayers ?? 5000;
    const run = Date.now().toString(36);
    const metrics = {};
    const rows = [];
    const notes = [];
    const setup = ctx.agent(1);
    try {
      // ---- pulls: manifest GET + blob GET ---------------------------------------------------
      const repos = Array.from({ length: clients }, (_, i) => `bench/conc-${run}/r${i}`);
      const images = [];
      for (const r of repos) images.push(await pushImage(base, r, setup));
      const pull = async (repo, layer, agent) => {
        const m = await request(`${base}/v2/${repo}/manifests/v1`, { agent, headers: { Accept: MANIFEST }, sink: "discard" });
        if (m.status !== 200) throw new BenchError(`GET manifest ${repo}: ${m.status}`);
        const b = await request(`${base}/v2/${repo}/blobs/${layer}`, { agent, sink: "discard" });
        if (b.status !== 200) throw new BenchError(`GET blob ${repo}: ${b.status}`);
      };
      const one = await parallel(ctx, clients, ops, (c, i, agent) => pull(repos[0], images[0].layer, agent));
      const many = await parallel(ctx, clients, ops, (c, i, agent) => pull(repos[c], images[c].layer, agent));
      for (const [k, r] of [["pull_1repo", one], ["pull_nrepos", many]]) {
        metrics[`concurrency.${k}.per_s`] = r.rate;
        metrics[`concurrency.${k}.p50_ms`] = r.p50;
        metrics[`concurrency.${k}.p99_ms`] = r.p99;
      }
      rows.push({ label: `pulls (manifest + 4 KiB blob), ${clients} clients, 1 repository`, unit: "pulls/s", values: { cloister: one.rate }, note: `p50 ${one.p50.toFixed(1)} ms p99 ${one.p99.toFixed(1)} ms` });
      rows.push({ label: `pulls, ${clients} clients, ${clients} repositories`, unit: "pulls/s", values: { cloister: many.rate }, note: `p50 ${many.p50.toFixed(1)} ms p99 ${many.p99.toFixed(1)} ms; ${(many.rate / one.rate).toFixed(2)}× of 1 repository` });

      // ---- pushes: POST ?digest= of 4 KiB -------------------------------------------------------
      const blobsFor = Array.from({ length: clients }, () => randomBlobs(ops, 4096));
      const blobsFor2 = Array.from({ length: clients }, () => randomBlobs(ops, 4096));
      const push1 = await parallel(ctx, clients, ops, (c, i, agent) => pushPostDigest(base, repos[0], blobsFor[c][i], blobsFor[c][i].digest, agent));
      const pushN = await parallel(ctx, clients, ops, (c, i, agent) => pushPostDigest(base, repos[c], blobsFor2[c][i], blobsFor2[c][i].digest, agent));
      metrics["concurrency.push_1repo.per_s"] = push1.rate;
      metrics["concurrency.push_nrepos.per_s"] = pushN.rate;
      rows.push({ label: `pushes (POST ?digest=, 4 KiB), ${clients} clients, 1 repository`, unit: "blobs/s", values: { cloister: push1.rate }, note: `p50 ${push1.p50.toFixed(1)} ms p99 ${push1.p99.toFixed(1)} ms` });
      rows.push({ label: `pushes, ${clients} clients, ${clients} repositories`, unit: "blobs/s", values: { cloister: pushN.rate }, note: `p50 ${pushN.p50.toFixed(1)} ms p99 ${pushN.p99.toFixed(1)} ms` });

      // ---- heavy manifest PUT in A vs tags/list in B ---------------------------------------------
      const A = `bench/conc-${run}/heavy`;
      const B = repos[1];
      const layers = Array.from({ length: heavyLayers }, (_, i) => Buffer.from(`${run}-${i}`));
      let next = 0;
      await Promise.all(Array.from({ length: 8 }, async () => {
        const agent = ctx.agent(1);
        try {
          while (next < layers.length) {
            const b = layers[next++];
            await pushPostDigest(base, A, { buffer: b }, sha(b), agent);
          }
        } finally {
          agent.destroy();
        }
      }));
      const heavy = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(layers[0]), size: layers[0].length },
        layers: layers.map((b) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha(b), size: b.length })),
      }));
      const tagsLat = async (untilDone) => {
        const agent = ctx.agent(1);
        const lat = [];
        try {
          do {
            const s = performance.now();
            const r = await request(`${base}/v2/${B}/tags/list`, { agent });
            if (r.status !== 200) throw new BenchError(`tags/list ${B}: ${r.status}`);
            lat.push(performance.now() - s);
          } while (!untilDone() && lat.length < 100_000);
        } finally {
          agent.destroy();
        }
        return lat;
      };
      let quietDone = false;
      setTimeout(() => (quietDone = true), 2000);
      const quiet = await tagsLat(() => quietDone);
      // Rounds of 6 parallel PUTs (new tags each round) until tags/list in B has 50 samples under load.
      let putsDone = false;
      let rounds = 0;
      const t0 = performance.now();
      const puts = (async () => {
        try {
          do {
            const round = rounds++;
            await Promise.all(Array.from({ length: 6 }, async (_, i) => {
              const agent = ctx.agent(1);
              try {
                const r = await request(`${base}/v2/${A}/manifests/h${round}-${i}`, { method: "PUT", agent, body: heavy, headers: { "Content-Type": MANIFEST, "Content-Length": String(heavy.length) }, idleMs: 600_000 });
                expectStatus(r, 201, `PUT heavy manifest ${A}:h${round}-${i}`);
              } finally {
                agent.destroy();
              }
            }));
          } while (busyCount() < 50 && rounds < 10);
        } finally {
          putsDone = true;
        }
      })();
      let busySamples = [];
      const busyCount = () => busySamples.length;
      const busyP = (async () => {
        const agent = ctx.agent(1);
        try {
          while (!putsDone) {
            const s = performance.now();
            const r = await request(`${base}/v2/${B}/tags/list`, { agent });
            if (r.status !== 200) throw new BenchError(`tags/list ${B}: ${r.status}`);
            busySamples.push(performance.now() - s);
          }
        } finally {
          agent.destroy();
        }
      })();
      await puts;
      await busyP;
      const busy = busySamples;
      const putSecs = (performance.now() - t0) / 1000;
      metrics["concurrency.tags_quiet.p99_ms"] = q(quiet, 0.99);
      metrics["concurrency.tags_during_heavy_put.p50_ms"] = q(busy, 0.5);
      metrics["concurrency.tags_during_heavy_put.p99_ms"] = q(busy, 0.99);
      rows.push({ label: `tags/list in B, quiet`, unit: "ms p99", values: { cloister: q(quiet, 0.99) }, note: `p50 ${q(quiet, 0.5).toFixed(1)} ms, ${quiet.length} requests` });
      rows.push({ label: `tags/list in B during 6 parallel ${heavyLayers}-layer manifest PUTs in A (${rounds} rounds)`, unit: "ms p99", values: { cloister: q(busy, 0.99) }, note: `p50 ${q(busy, 0.5).toFixed(1)} ms, max ${Math.max(...busy).toFixed(0)} ms, ${busy.length} requests; ${rounds * 6} PUTs took ${putSecs.toFixed(1)} s (${(heavy.length / 1e6).toFixed(1)} MB each)` });

      // ---- object-level index write rate ----------------------------------------------------------
      // Object-level: how long one heavy manifest PUT keeps A's TrustStore busy. Before ADR 0008 every
      // repository's reads waited behind this transaction; now only repository A's do.
      {
        const r = await request(`${base}/_bench/heavyput?refs=${Math.min(heavyLayers, 10_000)}`, { method: "POST", agent: setup, idleMs: 600_000 });
        expectStatus(r, 200, "/_bench/heavyput");
        const j = JSON.parse(r.text);
        metrics["concurrency.heavy_put_txn_ms"] = j.putMs;
        rows.push({ label: `one putManifest with ${j.refs} references, inside A's TrustStore`, unit: "ms", values: { cloister: j.putMs }, note: "the time A's object is busy per heavy PUT; B's object is not involved" });
      }

      // Several short requests (long ones get "Your worker restarted mid-request" from wrangler dev).
      for (const [label, qs, key] of [
        ["BlobStore commits (one object, 16 concurrent)", "store=blob&n=500&concurrency=16", "blobstore"],
        ["TrustStore links, 1 repository object (16 concurrent)", "store=trust&n=500&concurrency=16&objects=1", "trust_1"],
        ["TrustStore links over 16 repository objects (16 concurrent)", "store=trust&n=500&concurrency=16&objects=16", "trust_16"],
      ]) {
        let commits = 0;
        let ms = 0;
        for (let i = 0; i < 4; i++) {
          const r = await request(`${base}/_bench/index?${qs}`, { method: "POST", agent: setup });
          expectStatus(r, 200, `/_bench/index?${qs}`);
          const j = JSON.parse(r.text);
          if (i === 0) continue; // warm-up: first use of the objects
          commits += j.commits;
          ms += j.ms;
        }
        const perSecond = (commits * 1000) / ms;
        metrics[`concurrency.${key}.commits_per_s`] = perSecond;
        rows.push({ label, unit: "commits/s", values: { cloister: perSecond }, note: `${commits} commits in ${ms} ms (3 requests after a warm-up), issued from the Worker` });
      }
    } finally {
      setup.destroy();
    }
    notes.push("local workerd runs all Durable Objects on one thread: per-repository objects cannot run in parallel here, so 1-vs-N-repository ratios understate production (see docs/capacity.md)");
    return { rows, metrics, notes };
  },
};
