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

      // ---- heavy manifest PUTs in A vs tags/list in B ---------------------------------------------
      // A's index is seeded without bytes (/_bench/heavy-seed: BlobStore rows, holders, memberships):
      // the PUT path only checks membership, and pushing 100,000 blobs would take minutes.
      const A = `bench/conc-${run}/heavy`;
      const B = repos[1];
      const prefix = createHash("sha256").update(run).digest("hex").slice(0, 32);
      for (let from = 0; from < heavyLayers; from += 20_000) {
        const r = await request(`${base}/_bench/heavy-seed?repo=${encodeURIComponent(A)}&prefix=${prefix}&from=${from}&n=${Math.min(20_000, heavyLayers - from)}`, { method: "POST", agent: setup, idleMs: 600_000 });
        expectStatus(r, 200, "/_bench/heavy-seed");
      }
      const layerDigest = (i) => `sha256:${prefix}${i.toString(16).padStart(32, "0")}`;
      const heavyManifest = (n) => Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: MANIFEST,
        // build-cache/v1 manifests may reference up to 100,000 blobs whatever MAX_MANIFEST_REFERENCES says.
        artifactType: "application/vnd.cloister.build-cache.v1",
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: layerDigest(0), size: 1 },
        layers: Array.from({ length: n }, (_, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest(i), size: 1 })),
      }));
      /** tags/list in B, one request at a time, until `done()`; latencies in ms. */
      const probeB = async (done) => {
        const agent = ctx.agent(1);
        const lat = [];
        try {
          do {
            const s = performance.now();
            const r = await request(`${base}/v2/${B}/tags/list`, { agent });
            if (r.status !== 200) throw new BenchError(`tags/list ${B}: ${r.status}`);
            lat.push(performance.now() - s);
          } while (!done() && lat.length < 100_000);
        } finally {
          agent.destroy();
        }
        return lat;
      };
      /** `rounds` sequential calls of `step(round, agent)` with B probed throughout. */
      const heavyRunWith = async (step, rounds) => {
        let done = false;
        const probe = probeB(() => done);
        const agent = ctx.agent(1);
        try {
          for (let round = 0; round < rounds; round++) await step(round, agent);
        } finally {
          done = true;
          agent.destroy();
        }
        return { lat: await probe };
      };
      /** `rounds` rounds of `parallel` PUTs of `body` to new tags in A, with B probed throughout. */
      const heavyRun = async (label, body, parallel, rounds) => {
        let done = false;
        const t0 = performance.now();
        const probe = probeB(() => done);
        try {
          for (let round = 0; round < rounds; round++) {
            await Promise.all(Array.from({ length: parallel }, async (_, i) => {
              const agent = ctx.agent(1);
              try {
                const r = await request(`${base}/v2/${A}/manifests/${label}-${round}-${i}`, { method: "PUT", agent, body, headers: { "Content-Type": MANIFEST, "Content-Length": String(body.length) }, idleMs: 600_000 });
                expectStatus(r, 201, `PUT heavy manifest ${A}:${label}-${round}-${i}`);
              } finally {
                agent.destroy();
              }
            }));
          }
        } finally {
          done = true;
        }
        const lat = await probe;
        return { lat, secs: (performance.now() - t0) / 1000, puts: parallel * rounds };
      };
      let quietDone = false;
      setTimeout(() => (quietDone = true), 2000);
      const quiet = await probeB(() => quietDone);
      metrics["concurrency.tags_quiet.p50_ms"] = q(quiet, 0.5);
      metrics["concurrency.tags_quiet.p99_ms"] = q(quiet, 0.99);
      rows.push({ label: `tags/list in B, quiet`, unit: "ms p99", values: { cloister: q(quiet, 0.99) }, note: `p50 ${q(quiet, 0.5).toFixed(1)} ms, ${quiet.length} requests` });
      // The target: one ${heavyLayers}-layer PUT at a time in A.
      const big = heavyManifest(heavyLayers);
      const one1 = await heavyRun("h1", big, 1, ctx.opts.heavyRounds ?? 4);
      metrics["concurrency.tags_during_heavy_put.p50_ms"] = q(one1.lat, 0.5);
      metrics["concurrency.tags_during_heavy_put.p99_ms"] = q(one1.lat, 0.99);
      metrics["concurrency.heavy_put.s"] = one1.secs / one1.puts;
      rows.push({ label: `tags/list in B during ${heavyLayers}-layer manifest PUTs in A, one at a time`, unit: "ms p99", values: { cloister: q(one1.lat, 0.99) },
        note: `p50 ${q(one1.lat, 0.5).toFixed(1)} ms, max ${Math.max(...one1.lat).toFixed(0)} ms, ${one1.lat.length} requests; ${one1.puts} PUTs of ${(big.length / 1e6).toFixed(1)} MB, ${(one1.secs / one1.puts).toFixed(2)} s each` });
      // Last session's harder form: 6 parallel PUTs of a 5,000-layer manifest.
      const six = await heavyRun("h6", heavyManifest(Math.min(5000, heavyLayers)), 6, 3);
      metrics["concurrency.tags_during_6_parallel_puts.p50_ms"] = q(six.lat, 0.5);
      metrics["concurrency.tags_during_6_parallel_puts.p99_ms"] = q(six.lat, 0.99);
      rows.push({ label: `tags/list in B during 6 parallel ${Math.min(5000, heavyLayers)}-layer manifest PUTs in A (3 rounds)`, unit: "ms p99", values: { cloister: q(six.lat, 0.99) },
        note: `p50 ${q(six.lat, 0.5).toFixed(1)} ms, max ${Math.max(...six.lat).toFixed(0)} ms, ${six.lat.length} requests; ${six.puts} PUTs took ${six.secs.toFixed(1)} s` });

      // The floor under the row above: the same probe while 14.7 MB bodies are put into the local R2
      // emulator directly (no cloister code); a manifest must be in R2 before it is indexed.
      {
        const raw = await heavyRunWith(async (round, agent) => {
          const r = await request(`${base}/_bench/r2/heavy-${run}-${round}`, { method: "PUT", agent, body: big, headers: { "Content-Length": String(big.length) }, idleMs: 600_000 });
          expectStatus(r, 201, "PUT /_bench/r2");
        }, ctx.opts.heavyRounds ?? 4);
        metrics["concurrency.tags_during_r2_put.p99_ms"] = q(raw.lat, 0.99);
        rows.push({ label: `tags/list in B during ${(big.length / 1e6).toFixed(1)} MB R2 puts (/_bench/r2, no cloister code), one at a time`, unit: "ms p99", values: { cloister: q(raw.lat, 0.99) },
          note: `p50 ${q(raw.lat, 0.5).toFixed(1)} ms, max ${Math.max(...raw.lat).toFixed(0)} ms, ${raw.lat.length} requests: the local R2 emulator's own stall` });
      }

      // Where one heavy PUT spends its time, step by step (/_bench/manifest-phases, docs/capacity.md).
      {
        const r = await request(`${base}/_bench/manifest-phases?repo=${encodeURIComponent(A)}`, { method: "POST", agent: setup, body: big, headers: { "Content-Type": MANIFEST, "Content-Length": String(big.length) }, idleMs: 600_000 });
        expectStatus(r, 200, "/_bench/manifest-phases");
        const j = JSON.parse(r.text);
        for (const [k, v] of Object.entries(j.ms)) rows.push({ label: `  heavy PUT step: ${k}`, unit: "ms", values: { cloister: v } });
        if (j.object) {
          metrics["concurrency.heavy_put.object_longest_slice_ms"] = j.object.maxMs;
          rows.push({ label: `  heavy PUT inside A's TrustStore: longest synchronous slice`, unit: "ms", values: { cloister: j.object.maxMs }, note: `${j.object.n} slices, ${j.object.totalMs} ms in all` });
        }
      }

      // ---- object-level index write rate ----------------------------------------------------------
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

      // ---- the scaling argument's two numbers (docs/capacity.md "32 repositories vs 1") -----------
      // (a) What one object takes: membership lookups/s (the index read of every blob GET/HEAD)
      //     against 1 object and spread over `clients` objects, issued from inside the Worker.
      const lookup = async (objects) => {
        let n = 0;
        let ms = 0;
        for (let i = 0; i < 4; i++) {
          const r = await request(`${base}/_bench/lookup?objects=${objects}&n=2000&concurrency=16`, { method: "POST", agent: setup });
          if (r.status === 404) return null; // a tree without the route
          expectStatus(r, 200, "/_bench/lookup");
          const j = JSON.parse(r.text);
          if (i === 0) continue;
          n += j.lookups;
          ms += j.ms;
        }
        return (n * 1000) / ms;
      };
      const l1 = await lookup(1);
      const lN = await lookup(clients);
      if (l1 !== null && lN !== null) {
        metrics["concurrency.lookup_1object.per_s"] = l1;
        metrics["concurrency.lookup_nobjects.per_s"] = lN;
        rows.push({ label: `TrustStore membership lookups, 1 object (16 concurrent, from the Worker)`, unit: "lookups/s", values: { cloister: l1 } });
        rows.push({ label: `TrustStore membership lookups over ${clients} objects (16 concurrent)`, unit: "lookups/s", values: { cloister: lN }, note: `${(lN / l1).toFixed(2)}× of 1 object: one thread here` });
      }
      // (b) What the Worker costs per request with no object call at all: GET /v2/ from `clients` clients.
      const bare = await parallel(ctx, clients, ops, async (c, i, agent) => {
        const r = await request(`${base}/v2/`, { agent, sink: "discard" });
        if (r.status !== 200) throw new BenchError(`GET /v2/: ${r.status}`);
      });
      metrics["concurrency.worker_only.per_s"] = bare.rate;
      rows.push({ label: `GET /v2/ (Worker only, no object call), ${clients} clients`, unit: "requests/s", values: { cloister: bare.rate }, note: `p50 ${bare.p50.toFixed(1)} ms p99 ${bare.p99.toFixed(1)} ms` });
    } finally {
      setup.destroy();
    }
    notes.push("local workerd runs all Durable Objects on one thread: per-repository objects cannot run in parallel here, so 1-vs-N-repository ratios understate production (see docs/capacity.md)");
    return { rows, metrics, notes };
  },
};
