#!/usr/bin/env node
// `npm run bench [-- --only push,small] [-- --layer-mib 64] …` — cloister vs the CNCF distribution
// registry vs raw R2, side by side, in one run. See bench/README.md. MB = 10^6 bytes.
import { copyFileSync, existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, loadavg, cpus } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { randomFile } from "./lib/data.mjs";
import { keepAliveAgent, bulkAgent, BenchError, MB, incidents } from "./lib/http.mjs";
import { pushMonolithic, pullAndVerify } from "./lib/oci.mjs";
import { killAllGroupsSync, rssBytes } from "./lib/proc.mjs";
import { startCloister, startDistribution, benchRoutesProblem } from "./lib/servers.mjs";
import { randomBlobs } from "./lib/data.mjs";
import r2 from "./sections/r2.mjs";
import push from "./sections/push.mjs";
import small from "./sections/small.mjs";
import hash from "./sections/hash.mjs";
import memory from "./sections/memory.mjs";
import boundary from "./sections/boundary.mjs";
import buildcache from "./sections/buildcache.mjs";
import concurrency from "./sections/concurrency.mjs";
import gc from "./sections/gc.mjs";
import audit from "./sections/audit.mjs";
import proxy from "./sections/proxy.mjs";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");

// ---- Sections, in run order. A section is {id, title, needs[], run(ctx) → {rows, metrics, notes}}.
// needs: "benchRoutes" (cloister's /_bench routes), "registries" (runs against every registry that
// works; reasons printed for the others), "cloisterRegistry" (cloister's /v2 must work), "workerPid".
const SECTIONS = [r2, push, small, hash, boundary, buildcache, concurrency, gc, audit, proxy, memory];

// ---- Targets: ratios checked at the end. {num, den, min} → num/den ≥ min; {value, max} → value < max.
const CHECKS = [
  { label: "monolithic push: cloister / raw R2 put", num: "push.monolithic.cloister.push_MBps", den: "r2.put_MBps", min: 0.9 },
  { label: "chunked push: cloister / raw R2 put", num: "push.chunked.cloister.push_MBps", den: "r2.put_MBps", min: 0.9 },
  { label: "monolithic pull: cloister / distribution", num: "push.monolithic.cloister.pull_MBps", den: "push.monolithic.distribution.pull_MBps", min: 1 },
  { label: "chunked pull: cloister / distribution", num: "push.chunked.cloister.pull_MBps", den: "push.chunked.distribution.pull_MBps", min: 1 },
  { label: "small blobs/s: cloister / distribution", num: "small.monolithic.cloister.blobs_per_s", den: "small.monolithic.distribution.blobs_per_s", min: 1 },
  { label: "Worker RSS growth during chunked push", value: "memory.growth_MB", max: 64, unit: "MB" },
  { label: "tags/list p99 in B during heavy manifest PUTs in A", value: "concurrency.tags_during_heavy_put.p99_ms", max: 50, unit: "ms" },
  { label: "pulls/s: N repositories / 1 repository", num: "concurrency.pull_nrepos.per_s", den: "concurrency.pull_1repo.per_s", min: 1.5 },
];
// Informational ratios (no target).
const INFO = [
  { label: "monolithic push: cloister / distribution", num: "push.monolithic.cloister.push_MBps", den: "push.monolithic.distribution.push_MBps" },
  { label: "chunked push: cloister / distribution", num: "push.chunked.cloister.push_MBps", den: "push.chunked.distribution.push_MBps" },
  { label: "monolithic pull: cloister / raw R2 get", num: "push.monolithic.cloister.pull_MBps", den: "r2.get_MBps" },
  { label: "chunked push: cloister / raw R2 multipart put", num: "push.chunked.cloister.push_MBps", den: "r2.mp_put_MBps" },
  { label: "chunked pull: cloister / raw R2 multipart get", num: "push.chunked.cloister.pull_MBps", den: "r2.mp_get_MBps" },
  { label: "raw R2: multipart get / single-put get", num: "r2.mp_get_MBps", den: "r2.get_MBps" },
  { label: "small: cloister POST ?digest= / POST + PUT", num: "small.postDigest.cloister.blobs_per_s", den: "small.monolithic.cloister.blobs_per_s" },
  { label: "in-Worker sha256 (WASM) / native DigestStream", num: "hash.sha256.worker_MBps", den: "hash.native.worker_MBps" },
  { label: "boundary HEAD p50: non-member elsewhere / member", num: "boundary.elsewhere.p50_ms", den: "boundary.member.p50_ms" },
  { label: "boundary HEAD p50: nowhere / elsewhere", num: "boundary.nowhere.p50_ms", den: "boundary.elsewhere.p50_ms" },
  { label: "build-cache: BLAKE3-claim push / SHA-256 push (4 MiB chunks)", num: "buildcache.blake3_MBps", den: "buildcache.sha256_MBps" },
  { label: "proxy: cold pull through cloister / direct from distribution", num: "proxy.cold_MBps", den: "proxy.direct_MBps" },
  { label: "proxy: warm pull from cloister's cache / direct from distribution", num: "proxy.warm_MBps", den: "proxy.direct_MBps" },
];

// ---- Options
const DEFAULTS = {
  only: SECTIONS.map((s) => s.id).join(","),
  skip: "",
  targets: "cloister,distribution",
  layerMib: 512,
  chunkMib: 16,
  smallCount: 1000,
  smallKib: 4,
  memoryMib: 2048,
  clients: 32,
  concurrencyOps: 40,
  heavyLayers: 100_000,
  heavyRounds: 4,
  gcBlobs: 100000,
  gcKib: 4,
  hashMib: 200,
  sampleMs: 200,
  source: "working",
  json: ".bench/results.json",
  keep: false,
  help: false,
};
const NUMERIC = ["layerMib", "chunkMib", "smallCount", "smallKib", "memoryMib", "hashMib", "sampleMs", "clients", "concurrencyOps", "heavyLayers", "heavyRounds", "gcBlobs", "gcKib"];

function usage() {
  return `usage: npm run bench [-- options]
  --only LIST        sections to run, comma-separated (default: ${DEFAULTS.only})
  --skip LIST        sections to leave out
  --targets LIST     registries to compare (default: ${DEFAULTS.targets})
  --layer-mib N      large layer size for push and r2 (default ${DEFAULTS.layerMib})
  --chunk-mib N      PATCH size for the chunked push (default ${DEFAULTS.chunkMib})
  --small-count N    number of small blobs (default ${DEFAULTS.smallCount})
  --small-kib N      size of each small blob (default ${DEFAULTS.smallKib})
  --memory-mib N     blob size for the memory section (default ${DEFAULTS.memoryMib})
  --clients N        parallel clients (and repositories) for the concurrency section (default ${DEFAULTS.clients})
  --concurrency-ops N  operations per client in the concurrency section (default ${DEFAULTS.concurrencyOps})
  --heavy-layers N   layers of the heavy manifest in the concurrency section (default ${DEFAULTS.heavyLayers})
  --heavy-rounds N   heavy manifest PUTs, one at a time, while tags/list in B is probed (default ${DEFAULTS.heavyRounds})
  --gc-blobs N       unheld blobs the gc section seeds and collects (default ${DEFAULTS.gcBlobs})
  --gc-kib N         size of each of them (default ${DEFAULTS.gcKib})
  --hash-mib N       body size for the hash section (default ${DEFAULTS.hashMib})
  --sample-ms N      RSS sampling interval (default ${DEFAULTS.sampleMs})
  --source S         working (copy of the working tree, default) | head (last commit) |
                     live (the repo itself; wrangler hot-reloads on others' saves)
  --json PATH        results file (default ${DEFAULTS.json})
  --keep             keep the temp dir (data files, wrangler/distribution state and logs)
sections: ${SECTIONS.map((s) => `${s.id} (${s.title})`).join("; ")}`;
}

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith("--")) throw new BenchError(`unexpected argument ${a}\n${usage()}`);
    let v;
    const eq = a.indexOf("=");
    if (eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in DEFAULTS)) throw new BenchError(`unknown option ${a}\n${usage()}`);
    if (typeof DEFAULTS[key] === "boolean") {
      o[key] = v === undefined ? true : v !== "false";
      continue;
    }
    if (v === undefined) v = argv[++i];
    if (v === undefined) throw new BenchError(`${a} needs a value`);
    if (NUMERIC.includes(key)) {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new BenchError(`${a} needs a positive number, got ${v}`);
      o[key] = n;
    } else o[key] = v;
  }
  const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
  const known = new Set(SECTIONS.map((s) => s.id));
  for (const id of [...list(o.only), ...list(o.skip)]) if (!known.has(id)) throw new BenchError(`unknown section "${id}" (known: ${[...known].join(", ")})`);
  o.sections = SECTIONS.filter((s) => list(o.only).includes(s.id) && !list(o.skip).includes(s.id)).map((s) => s.id);
  o.targetList = list(o.targets);
  for (const t of o.targetList) if (!["cloister", "distribution"].includes(t)) throw new BenchError(`unknown target ${t}`);
  if (!["working", "head", "live"].includes(o.source)) throw new BenchError(`--source must be working, head or live`);
  if (o.chunkMib < 5 && o.chunkMib * 1024 * 1024 < o.layerMib * 1024 * 1024) console.warn("note: chunks under 5 MiB are below R2's multipart minimum");
  return o;
}

// ---- Formatting
const fmt = (v) => {
  if (v === undefined || v === null) return "–";
  if (typeof v === "string") return v;
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
};

function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? "").length)));
  const line = (cells) => "| " + cells.map((c, i) => String(c ?? "").padEnd(widths[i])).join(" | ") + " |";
  return [line(header), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}

function evaluate(metrics) {
  const ratio = (c) => {
    const n = metrics[c.num];
    const d = metrics[c.den];
    if (typeof n !== "number" || typeof d !== "number" || !(d > 0)) return { value: null, missing: [c.num, c.den].filter((k) => typeof metrics[k] !== "number") };
    return { value: n / d };
  };
  const checks = CHECKS.map((c) => {
    if (c.value) {
      const v = metrics[c.value];
      if (typeof v !== "number") return { ...c, result: null, met: null, missing: [c.value] };
      return { ...c, result: v, met: v < c.max, target: `< ${c.max} ${c.unit}` };
    }
    const r = ratio(c);
    return { ...c, result: r.value, met: r.value == null ? null : r.value >= c.min, target: `≥ ${c.min}×`, missing: r.missing };
  });
  const info = INFO.map((c) => ({ ...c, result: ratio(c).value }));
  return { checks, info };
}

// ---- Main
const results = { startedAt: new Date().toISOString(), host: { cpus: cpus().length, node: process.version, loadavgStart: loadavg() }, options: null, servers: {}, sections: {}, metrics: {} };
let workdir;
let servers = [];
let opts;

async function cleanup() {
  for (const s of servers.splice(0)) await s.proc.kill().catch(() => {});
  if (workdir && !opts?.keep) rmSync(workdir, { recursive: true, force: true });
}
process.on("exit", () => killAllGroupsSync());
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    console.error(`\n${sig}: stopping servers`);
    killAllGroupsSync();
    if (workdir && !opts?.keep) rmSync(workdir, { recursive: true, force: true });
    process.exit(130);
  });
}

async function main() {
  opts = parseArgs(process.argv.slice(2));
  if (opts.help) {
    console.log(usage());
    return 0;
  }
  results.options = opts;
  const log = (m) => console.log(`[bench] ${m}`);
  const selected = SECTIONS.filter((s) => opts.sections.includes(s.id));
  log(`sections: ${selected.map((s) => s.id).join(", ") || "(none)"}; MB = 10^6 bytes; ${cpus().length} CPUs, load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  workdir = mkdtempSync(join(tmpdir(), "cloister-bench-"));
  mkdirSync(join(workdir, "data"));
  log(`temp dir ${workdir}${opts.keep ? " (kept)" : " (removed at the end; --keep to keep)"}`);

  const needs = new Set(selected.flatMap((s) => s.needs));
  const wantCloister = opts.targetList.includes("cloister") || needs.has("benchRoutes");
  const problems = {}; // need → reason it is unmet
  const ctx = {
    opts,
    metrics: results.metrics,
    log,
    cloister: null,
    distribution: null,
    cloisterRegistryOk: false,
    initialWorkerRss: null,
    /** Keep-alive agent (small requests; maxSockets 1 = one connection). */
    agent: (maxSockets = 1) => keepAliveAgent(maxSockets),
    /** New connection per request (large transfers). */
    bulkAgent: () => bulkAgent(),
    registries() {
      const out = [];
      if (opts.targetList.includes("cloister") && this.cloisterRegistryOk) out.push(this.cloister);
      if (opts.targetList.includes("distribution") && this.distribution) out.push(this.distribution);
      return out;
    },
    files: new Map(),
    async file(id, mib, extra = []) {
      const key = `${id}:${mib}:${extra.join(",")}`;
      if (!this.files.has(key)) {
        const t0 = performance.now();
        const f = await randomFile(join(workdir, "data", `${id}-${mib}mib.bin`), Math.round(mib * 1024 * 1024), extra);
        log(`generated ${id} (${mib} MiB random, ${f.digest.slice(0, 19)}…) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        this.files.set(key, f);
      }
      return this.files.get(key);
    },
  };

  // Start what the selected sections need.
  if (wantCloister && (needs.has("benchRoutes") || needs.has("registries") || needs.has("cloisterRegistry") || needs.has("workerPid"))) {
    try {
      ctx.cloister = await startCloister({ repo, workdir, source: opts.source, log });
      servers.push(ctx.cloister);
      results.servers.cloister = { base: ctx.cloister.base, source: opts.source };
      const br = await benchRoutesProblem(ctx.cloister.base);
      if (br) problems.benchRoutes = br;
      const reg = await probeRegistry(ctx.cloister.base);
      if (reg) problems.cloisterRegistry = `cloister's /v2 does not work yet: ${reg}`;
      else ctx.cloisterRegistryOk = true;
      const wd = ctx.cloister.workerd();
      if (wd.worker) {
        ctx.initialWorkerRss = rssBytes(wd.worker.pid);
        results.servers.cloister.workerdPid = wd.worker.pid;
        log(`cloister: Worker runs in workerd pid ${wd.worker.pid} (RSS ${(ctx.initialWorkerRss / MB).toFixed(0)} MB); wrangler's proxy workerd pid ${wd.proxy?.pid ?? "?"}`);
      } else problems.workerPid = `cannot identify the Worker's workerd among ${wd.all.map((p) => p.pid).join(", ") || "no workerd processes"}`;
    } catch (err) {
      const reason = `cloister did not start: ${err.message}`;
      problems.benchRoutes = problems.cloisterRegistry = problems.workerPid = reason;
    }
  } else if (!opts.targetList.includes("cloister")) problems.cloisterRegistry = problems.workerPid = "cloister not in --targets";
  if (opts.targetList.includes("distribution") && needs.has("registries")) {
    try {
      ctx.distribution = await startDistribution({ workdir, log });
      servers.push(ctx.distribution);
      results.servers.distribution = { base: ctx.distribution.base };
    } catch (err) {
      problems.distribution = `distribution did not start: ${err.message}`;
    }
  } else if (needs.has("registries")) problems.distribution = "distribution not in --targets";
  if (problems.cloisterRegistry && opts.targetList.includes("cloister")) console.log(`[bench] NOTE ${problems.cloisterRegistry}`);

  let failed = 0;
  for (const s of selected) {
    const rec = { title: s.title, rows: [], notes: [], loadavgBefore: loadavg()[0] };
    results.sections[s.id] = rec;
    const unmet = s.needs.flatMap((n) => (n === "registries" ? [] : problems[n] ? [problems[n]] : []));
    if (s.needs.includes("registries")) {
      if (opts.targetList.includes("cloister") && problems.cloisterRegistry) rec.notes.push(`cloister skipped: ${problems.cloisterRegistry}`);
      if (problems.distribution) rec.notes.push(`distribution skipped: ${problems.distribution}`);
      for (const t of ["cloister", "distribution"]) if (!opts.targetList.includes(t) && t !== "distribution") rec.notes.push(`${t} skipped: not in --targets`);
      if (ctx.registries().length === 0) unmet.push("no registry available");
    }
    if (unmet.length) {
      rec.skipped = [...new Set(unmet)].join("; ");
      console.log(`\n[bench] SKIPPED ${s.id}: ${rec.skipped}`);
      continue;
    }
    log(`running ${s.id}: ${s.title}`);
    const t0 = performance.now();
    try {
      const out = await s.run(ctx);
      rec.rows = out.rows ?? [];
      rec.notes.push(...(out.notes ?? []));
      Object.assign(results.metrics, out.metrics ?? {});
    } catch (err) {
      failed++;
      rec.error = err instanceof BenchError ? err.message : err.stack;
      console.log(`[bench] ERROR in ${s.id}: ${rec.error}`);
    }
    rec.seconds = (performance.now() - t0) / 1000;
    rec.loadavgAfter = loadavg()[0];
    const reloads = ctx.cloister?.reloads() ?? [];
    if (reloads.length) rec.notes.push(`wrangler rebuilt/reloaded the Worker during the run, numbers suspect: ${reloads.slice(-3).join(" | ")}`);
    log(`${s.id} done in ${rec.seconds.toFixed(1)} s (load ${rec.loadavgBefore.toFixed(2)} → ${rec.loadavgAfter.toFixed(2)})`);
  }

  // ---- Report
  results.finishedAt = new Date().toISOString();
  results.host.loadavgEnd = loadavg();
  const { checks, info } = evaluate(results.metrics);
  results.checks = checks.map(({ label, target, result, met, missing }) => ({ label, target, result, met, missing }));
  results.info = info.map(({ label, result }) => ({ label, result }));

  console.log(`\n## Results (MB = 10^6 bytes; ${cpus().length} CPUs shared with other work, load avg ${results.host.loadavgStart[0].toFixed(2)} → ${results.host.loadavgEnd[0].toFixed(2)}: numbers are noisy)\n`);
  const rows = [];
  const notes = [];
  for (const s of selected) {
    const rec = results.sections[s.id];
    rows.push([`**${s.title}**`, "", "", "", "", rec.skipped ? `SKIPPED: ${rec.skipped.slice(0, 120)}` : rec.error ? "ERROR (see below)" : `${rec.seconds.toFixed(0)} s`]);
    for (const r of rec.rows) rows.push([r.label, fmt(r.values.cloister), fmt(r.values.distribution), fmt(r.values.r2), r.unit, r.note ?? ""]);
    if (rec.skipped) notes.push(`${s.id}: SKIPPED — ${rec.skipped}`);
    if (rec.error) notes.push(`${s.id}: ERROR — ${rec.error}`);
    for (const n of rec.notes) notes.push(`${s.id}: ${n}`);
  }
  console.log(table(["metric", "cloister", "distribution", "raw R2", "unit", "note"], rows));
  console.log("\n### Targets\n");
  console.log(table(["target", "result", "goal", "status"], checks.map((c) => [c.label, c.result == null ? "–" : c.unit ? `${fmt(c.result)} ${c.unit}` : `${fmt(c.result)}×`, c.target ?? (c.min ? `≥ ${c.min}×` : `< ${c.max} ${c.unit}`), c.met == null ? `not measured: ${whyMissing(c.missing, selected)}` : c.met ? "met" : "NOT MET"])));
  console.log("\n### Other ratios\n");
  console.log(table(["ratio", "value"], info.map((c) => [c.label, c.result == null ? "–" : `${fmt(c.result)}×`])));
  for (const i of incidents) notes.push(`incident: ${i}`);
  results.incidents = incidents;
  if (notes.length) console.log("\n### Notes\n\n" + notes.map((n) => `- ${n}`).join("\n"));

  const jsonPath = join(repo, opts.json);
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(results, null, 2) + "\n");
  // Keep the server logs of the last run next to the results (the temp dir goes away).
  const logDir = join(dirname(jsonPath), "logs");
  mkdirSync(logDir, { recursive: true });
  for (const f of ["wrangler.log", "distribution.log"]) if (existsSync(join(workdir, f))) copyFileSync(join(workdir, f), join(logDir, f));
  console.log(`\n[bench] results written to ${relative(process.cwd(), jsonPath) || jsonPath} (server logs in ${relative(process.cwd(), logDir) || logDir})`);
  return failed ? 1 : 0;
}

/** Why metrics are absent: their section (the key's first segment) was not selected, skipped or failed. */
function whyMissing(keys, selected) {
  const out = new Set();
  for (const k of keys) {
    const id = k.split(".")[0];
    const rec = results.sections[id];
    if (!selected.some((s) => s.id === id)) out.add(`${id} not selected`);
    else if (rec?.skipped) out.add(`${id} skipped`);
    else if (rec?.error) out.add(`${id} failed`);
    else out.add(`no ${k.split(".").slice(1, -1).join(" ")} result`);
  }
  return [...out].join(", ");
}

/** A tiny monolithic push + pull; null when cloister's /v2 works, else the reason. */
async function probeRegistry(base) {
  const agent = keepAliveAgent(1);
  try {
    const [b] = randomBlobs(1, 64);
    await pushMonolithic(base, "bench/probe", b, b.digest, agent);
    await pullAndVerify(base, "bench/probe", b.digest, b.size, agent);
    return null;
  } catch (err) {
    return err.message;
  } finally {
    agent.destroy();
  }
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`[bench] ${err instanceof BenchError ? err.message : err.stack}`);
  if (servers.find((s) => s.name === "cloister")) console.error(`[bench] wrangler log tail:\n${servers.find((s) => s.name === "cloister").logTail(20)}`);
} finally {
  await cleanup();
}
process.exit(code);
