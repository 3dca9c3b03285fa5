// Garbage collection frees real bytes (docs/adr/0011): skopeo pushes images, some are deleted,
// GC runs with GC_GRACE_SECONDS=0 through the admin API, and the local R2 bytes drop to what the
// remaining images need; the remaining images pull digest-identical with skopeo. Reconcile finds
// the object a commit left without a row when the registry was SIGKILLed mid-commit, and reports
// a row whose object was deleted by hand.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { createBLAKE3 } from "hash-wasm";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { offlineEnv, repoRoot, startRegistry, type RunningRegistry } from "./helpers/registry";
import { crashRegistry } from "./helpers/crash";
import { Skopeo, needClients, run } from "./helpers/exec";
import { request, describe as show, sha256 } from "./helpers/http";
import { buildLayout, readBlob, type Layout } from "./helpers/images";
import { writeDeterministicFile } from "./helpers/data";

const clients = needClients("gc.e2e", ["skopeo", "umoci", "sqlite3"]);
let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let state: string;
let layout: Layout;
let big: string; // an OCI layout with two images of one large random layer each
const BIG = 24 * 1024 * 1024;

/** Bytes of every object file local R2 keeps (wrangler dev --persist-to <state>). */
function r2Bytes(): number {
  const walk = (d: string): number => readdirSync(d, { withFileTypes: true })
    .reduce((a, e) => a + (e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith(".sqlite") || e.name.includes("sqlite-") ? 0 : statSync(join(d, e.name)).size), 0);
  return walk(join(state, "v3", "r2"));
}

/** An OCI layout holding images "one" and "two", each a config plus one random layer of BIG bytes. */
async function buildBig(dir: string) {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const manifests = [];
  for (const tag of ["one", "two"]) {
    const tmp = join(dir, `layer-${tag}`);
    const f = await writeDeterministicFile(tmp, BIG, `gc-${tag}`);
    const layerPath = join(dir, "blobs", "sha256", f.sha256);
    writeFileSync(layerPath, readFileSync(tmp));
    rmSync(tmp);
    const cfg = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [f.digest] }, config: {} }));
    writeFileSync(join(dir, "blobs", "sha256", sha256(cfg)), cfg);
    const m = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${sha256(cfg)}`, size: cfg.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: f.digest, size: BIG }],
    }));
    writeFileSync(join(dir, "blobs", "sha256", sha256(m)), m);
    manifests.push({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${sha256(m)}`, size: m.length, annotations: { "org.opencontainers.image.ref.name": tag } });
  }
  writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests }));
}

async function gcRun(body: Record<string, boolean>) {
  const post = await request(reg, "POST", "/admin/gc", { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  expect(post.status, show(post)).toBe(202);
  const id = JSON.parse(post.body.toString()).id as number;
  for (let i = 0; i < 600; i++) {
    const s = JSON.parse((await request(reg, "GET", "/admin/gc")).body.toString());
    const run = s.history.find((h: { id: number }) => h.id === id);
    if (run) return run as { state: string; stats: Record<string, number> & { missing: { digest: string; r2Key: string }[]; errors: string[] }; durationMs: number };
    await new Promise((ok) => setTimeout(ok, 200));
  }
  throw new Error(`GC did not finish in 120 s; registry log tail:\n${reg.logs().slice(-3000)}`);
}

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-gc-"));
  state = join(work, "state");
  big = join(work, "big");
  const [r, l] = await Promise.all([
    startRegistry({ persistDir: state, vars: { GC_GRACE_SECONDS: "0" } }),
    buildLayout(join(work, "layout"), work),
    buildBig(big),
  ]);
  reg = r;
  layout = l;
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(clients.skip)("garbage collection with skopeo", () => {
  const keep = () => layout.images.amd64;
  const need = () => [keep().manifestBytes.length, keep().configBytes.length, ...keep().manifest.layers.map((l: { size: number }) => l.size)].reduce((a, b) => a + b, 0);

  test("deleted images' bytes are freed, the remaining image pulls digest-identical", async () => {
    await skopeo.run("copy", ["--preserve-digests", `oci:${layout.dir}:amd64`, skopeo.ref("gc/keep:amd64")]);
    await skopeo.run("copy", ["--preserve-digests", `oci:${layout.dir}:amd64`, skopeo.ref("gc/copy:amd64")]); // same bytes, another repository
    await skopeo.run("copy", ["--preserve-digests", `oci:${big}:one`, skopeo.ref("gc/big:one")]);
    await skopeo.run("copy", ["--preserve-digests", `oci:${big}:two`, skopeo.ref("gc/big:two")]);
    const before = r2Bytes();
    expect(before).toBeGreaterThanOrEqual(2 * BIG + need());

    await skopeo.run("delete", [skopeo.ref("gc/big:one")]);
    await skopeo.run("delete", [skopeo.ref("gc/big:two")]);
    await skopeo.run("delete", [skopeo.ref("gc/copy:amd64")]);
    expect(r2Bytes()).toBe(before); // deleting frees nothing by itself

    const t0 = Date.now();
    const run = await gcRun({ dryRun: false, reconcile: true });
    const after = r2Bytes();
    console.log(`gc e2e: R2 ${before} → ${after} bytes (remaining image needs ${need()}); run ${Date.now() - t0} ms`, JSON.stringify({ ...run.stats, missing: run.stats.missing.length }));
    expect(run.state).toBe("done");
    expect(run.stats.errors).toEqual([]);
    expect(run.stats.bytesFreed).toBeGreaterThanOrEqual(2 * BIG);
    expect(run.stats.missingCount).toBe(0);
    // R2 holds exactly what the remaining image needs
    expect(after).toBe(need());

    const out = join(work, "pulled");
    const df = join(work, "digest");
    await skopeo.run("copy", ["--preserve-digests", "--digestfile", df, skopeo.ref("gc/keep:amd64"), `oci:${out}:amd64`]);
    expect(readFileSync(df, "utf8").trim()).toBe(keep().manifestDigest);
    for (const d of [keep().manifest.config, ...keep().manifest.layers]) {
      expect(readBlob(out, d.digest).equals(readBlob(layout.dir, d.digest))).toBe(true);
    }
    // the deleted ones are gone for clients too
    expect((await request(reg, "GET", "/v2/gc/big/tags/list")).status).toBe(404);
    expect((await request(reg, "HEAD", `/v2/gc/copy/manifests/${keep().manifestDigest}`)).status).toBe(404);
  });
});

/** Keys and sizes local R2 holds (miniflare's object index), read with sqlite3 while the registry is down. */
async function r2Keys(): Promise<Map<string, number>> {
  const dir = join(state, "v3", "r2", "miniflare-R2BucketObject");
  const out = new Map<string, number>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".sqlite") && n !== "metadata.sqlite")) {
    const r = await run("sqlite3", ["-separator", "\t", join(dir, f), "SELECT key, size FROM _mf_objects"]);
    for (const line of r.stdout.split("\n").filter(Boolean)) {
      const [k, n] = line.split("\t");
      out.set(k, Number(n));
    }
  }
  return out;
}

const wranglerR2 = (args: string[]) => run(process.execPath, [join(repoRoot, "node_modules/wrangler/bin/wrangler.js"), "r2", "object", ...args, "--local", "--persist-to", state],
  { cwd: repoRoot, env: { ...process.env, ...offlineEnv } });

/**
 * Polls local R2's object index (miniflare's SQLite, read while the registry runs) through one
 * long-lived sqlite3 process, so a poll costs a query rather than a process start.
 */
function r2Watcher() {
  const dir = join(state, "v3", "r2", "miniflare-R2BucketObject");
  const file = readdirSync(dir).find((n) => n.endsWith(".sqlite") && n !== "metadata.sqlite");
  if (!file) throw new Error(`no R2 object index in ${dir}`);
  const proc = spawn("sqlite3", ["-readonly", "-separator", "\t", join(dir, file)], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let waiting: ((rows: string) => void) | null = null;
  proc.stdout.on("data", (d) => {
    out += d;
    const end = out.indexOf("--end--\n");
    if (end >= 0 && waiting) {
      const rows = out.slice(0, end);
      out = out.slice(end + 8);
      const w = waiting;
      waiting = null;
      w(rows);
    }
  });
  return {
    /** Keys of objects of exactly `size` bytes under data/. */
    keysOfSize: (size: number) => new Promise<string[]>((ok) => {
      waiting = (rows) => ok(rows.split("\n").filter(Boolean));
      proc.stdin.write(`SELECT key FROM _mf_objects WHERE size = ${size} AND key LIKE 'data/%';\nSELECT '--end--';\n`);
    }),
    close: () => { proc.stdin.end(); proc.kill(); },
  };
}

/** BLAKE3 of a file (build-cache/v1 claims are `sha256:<BLAKE3 hex>`). */
async function blake3File(path: string): Promise<string> {
  const h = await createBLAKE3();
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

describe.skipIf(clients.skip)("reconcile after a crash", () => {
  test("an object a commit left without a row when the registry was killed is deleted; a row whose object was deleted by hand is reported, not dropped", async () => {
    const keep = layout.images.amd64;
    // A monolithic POST of a build-cache/v1 blob: once its bytes are in R2 the registry reads them
    // back to check the BLAKE3 claim, and only then records the BlobStore row. Kill it in between.
    const SIZE = 128 * 1024 * 1024;
    const f = await writeDeterministicFile(join(work, "crash-blob"), SIZE, "gc-crash");
    const claim = `sha256:${await blake3File(f.path)}`;
    const watch = r2Watcher();
    expect(await watch.keysOfSize(SIZE)).toEqual([]);
    const t0 = Date.now();
    const post = request(reg, "POST", `/v2/gc/crash/blobs/uploads/?digest=${claim}`, { headers: { "Content-Type": "application/octet-stream" }, body: { file: f.path } })
      .then((r) => ({ status: r.status, body: r.body.toString().slice(0, 300) }), (e: Error) => ({ status: 0, body: e.message }));
    let orphan: string | undefined;
    while (!orphan && Date.now() - t0 < 120_000) [orphan] = await watch.keysOfSize(SIZE);
    const landed = Date.now();
    await crashRegistry(reg); // SIGKILL mid-commit: the bytes are in R2, the row was never written
    watch.close();
    const outcome = await post;
    console.log(`gc e2e crash: object in R2 ${landed - t0} ms after the POST began; registry killed ${Date.now() - landed} ms later; POST: ${outcome.status} ${outcome.body}`);
    expect(orphan, "the POST's object never appeared in R2").toBeTruthy();
    expect(outcome.status, `the POST must not have completed its commit (the kill came too late): ${outcome.body}`).toBe(0);
    const keys = await r2Keys();
    expect(keys.get(orphan!)).toBe(SIZE);

    // A row whose object is deleted by hand while the registry is down.
    const layer = keep.manifest.layers[0];
    const layerKey = [...keys].find(([k, n]) => n === layer.size && k.startsWith("data/"))?.[0];
    expect(layerKey, JSON.stringify([...keys])).toBeTruthy();
    await wranglerR2(["delete", `cloister/${layerKey}`]);

    reg = await startRegistry({ persistDir: state, vars: { GC_GRACE_SECONDS: "0" } });
    // the killed commit linked nothing
    expect((await request(reg, "HEAD", `/v2/gc/crash/blobs/${claim}`)).status).toBe(404);
    const run = await gcRun({ dryRun: false, reconcile: true });
    console.log(`gc e2e reconcile:`, JSON.stringify(run.stats));
    expect(run.state).toBe("done");
    expect(run.stats.orphansDeleted).toBe(1);
    expect(run.stats.orphanBytes).toBe(SIZE);
    expect(run.stats.missingCount).toBe(1);
    expect(run.stats.missing).toEqual([{ digest: layer.digest, r2Key: layerKey }]);
    // the row stays for the operator: the registry says the bytes are missing instead of pretending the blob never existed
    const get = await request(reg, "GET", `/v2/gc/keep/blobs/${layer.digest}`);
    expect(get.status).toBe(500);
    expect(get.body.toString()).toContain("bytes are missing");
    await reg.stop();
    const left = await r2Keys();
    expect(left.has(orphan!)).toBe(false);
    expect(left.has(layerKey!)).toBe(false);
  });
});
