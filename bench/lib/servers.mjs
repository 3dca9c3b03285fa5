// Starts the systems under test: cloister under `wrangler dev` and the CNCF distribution registry.
import { spawnSync, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, spawnGroup, sleep, descendants, cmdline } from "./proc.mjs";
import { request, BenchError, describe } from "./http.mjs";

const SNAPSHOT_PATHS = ["src", "scripts", "wrangler.toml", ".dev.vars", "package.json", "tsconfig.json", "assets", "public", "static"];
const COMMITTED_PATHS = ["src", "scripts", "wrangler.toml", ".dev.vars", "package.json", "tsconfig.json"];

/**
 * Where wrangler runs from. "working" (default): a copy of the working tree taken now, so other
 * people's saves cannot hot-reload the Worker mid-measurement. "head": the last commit.
 * "live": the repository itself (wrangler reloads on every save; reloads are reported).
 */
function prepareTree(repo, source, workdir) {
  if (source === "live") return repo;
  const tree = join(workdir, "tree");
  mkdirSync(tree, { recursive: true });
  if (source === "head") {
    const paths = COMMITTED_PATHS.filter((p) => spawnSync("git", ["cat-file", "-e", `HEAD:${p}`], { cwd: repo }).status === 0);
    const tar = execFileSync("git", ["archive", "--format=tar", "HEAD", ...paths], { cwd: repo, maxBuffer: 256 * 1024 * 1024 });
    execFileSync("tar", ["-x", "-C", tree], { input: tar });
  } else {
    for (const p of SNAPSHOT_PATHS) if (existsSync(join(repo, p))) cpSync(join(repo, p), join(tree, p), { recursive: true });
  }
  symlinkSync(join(repo, "node_modules"), join(tree, "node_modules"), "dir");
  return tree;
}

export async function startCloister({ repo, workdir, source, log }) {
  const tree = prepareTree(repo, source, workdir);
  const extract = spawnSync(process.execPath, [join(tree, "scripts/extract-wasm.mjs")], { cwd: tree, encoding: "utf8" });
  if (extract.status !== 0) throw new BenchError(`scripts/extract-wasm.mjs failed (exit ${extract.status}): ${(extract.stderr || extract.stdout).trim().slice(-800)}`);

  const logFile = join(workdir, "wrangler.log");
  const persist = join(workdir, "wrangler-state");
  const env = {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    WRANGLER_HIDE_BANNER: "true",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    // No devtools proxy: it costs one node request per 4 KiB of outbound fetch body (docs/proxy.md).
    VSCODE_INSPECTOR_OPTIONS: process.env.VSCODE_INSPECTOR_OPTIONS || "{}",
    NO_COLOR: "1",
    FORCE_COLOR: "0",
  };
  const wrangler = join(repo, "node_modules/wrangler/bin/wrangler.js");
  let lastErr;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const inspectorPort = await freePort();
    const args = [wrangler, "dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspectorPort),
      "--persist-to", persist, "--var", "BENCH_ROUTES:true", "--show-interactive-dev-session=false"];
    writeFileSync(logFile, `\n--- attempt ${attempt}: node ${args.join(" ")} (cwd ${tree})\n`, { flag: "a" });
    const proc = spawnGroup(process.execPath, args, { cwd: tree, env, logFile });
    const base = `http://127.0.0.1:${port}`;
    try {
      await waitReady(base, proc, logFile, 120_000);
    } catch (err) {
      await proc.kill();
      lastErr = err;
      if (/address already in use|EADDRINUSE/i.test(readLog(logFile))) continue; // port race: retry
      if (source !== "head" && /could not build/.test(err.message)) err.message += `\n(the ${source} tree may hold someone's unfinished edit: --source head benches the last commit)`;
      throw err;
    }
    log(`cloister: wrangler dev ready at ${base} (source: ${source}, tree ${tree}, log ${logFile})`);
    const readyAt = readLog(logFile).length;
    return {
      name: "cloister",
      base,
      port,
      proc,
      logFile,
      tree,
      /** workerd processes of this wrangler: {worker, proxy, all} (worker = runs the user Worker). */
      workerd() {
        const all = descendants(proc.pid).filter((p) => p.comm === "workerd");
        const isProxy = (p) => cmdline(p.pid).some((a) => a === `--socket-addr=entry=127.0.0.1:${port}`);
        const proxy = all.find(isProxy) ?? null;
        const rest = all.filter((p) => p !== proxy);
        return { worker: rest.length === 1 ? rest[0] : null, proxy, all, candidates: rest };
      },
      /** Lines in the wrangler log since it became ready that show a rebuild/reload. */
      reloads() {
        const text = readLog(logFile).slice(readyAt);
        return text.split("\n").filter((l) => /reload|local server updated|detected changes|build failed/i.test(l));
      },
      logTail: (n = 30) => readLog(logFile).trim().split("\n").slice(-n).join("\n"),
    };
  }
  throw lastErr;
}

function readLog(file) {
  try {
    // Strip ANSI colour codes (wrangler colours errors even with NO_COLOR).
    return readFileSync(file, "utf8").replace(/\x1b\[[0-9;]*m/g, "");
  } catch {
    return "";
  }
}

async function waitReady(base, proc, logFile, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const started = readLog(logFile).length;
  while (Date.now() < deadline) {
    if (proc.exitInfo) throw new BenchError(`wrangler dev exited (${JSON.stringify(proc.exitInfo)}):\n${tail(readLog(logFile).slice(started), 25)}`);
    const text = readLog(logFile).slice(started);
    if (/Build failed|\[ERROR\]/.test(text) && !/Ready on/.test(text)) {
      await sleep(1500); // let esbuild finish printing every error
      throw new BenchError(`wrangler dev could not build the Worker:\n${tail(readLog(logFile).slice(started), 40)}`);
    }
    try {
      const res = await request(`${base}/`, { idleMs: 3000 });
      if (res.status > 0) return;
    } catch {
      /* not listening yet */
    }
    await sleep(250);
  }
  throw new BenchError(`wrangler dev not ready after ${timeoutMs / 1000} s:\n${tail(readLog(logFile).slice(started), 25)}`);
}

const tail = (s, n) => s.trim().split("\n").slice(-n).map((l) => "    " + l).join("\n");

/** Are the /_bench routes mounted (BENCH_ROUTES=true and src/bench.ts built)? Returns null or a reason. */
export async function benchRoutesProblem(base) {
  const res = await request(`${base}/_bench/r2/bench-probe-missing`);
  if (res.status === 404 && /no such object/.test(res.text)) return null;
  return `GET /_bench/r2/<missing> answered ${describe(res)} (expected the bench routes' 404 "no such object")`;
}

export async function startDistribution({ workdir, log, bin = "/usr/bin/docker-registry" }) {
  if (!existsSync(bin)) throw new BenchError(`${bin} not found (Debian package docker-registry: apt-get install docker-registry)`);
  const dir = join(workdir, "distribution");
  mkdirSync(join(dir, "data"), { recursive: true });
  const logFile = join(workdir, "distribution.log");
  let lastErr;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const config = join(dir, "config.yml");
    writeFileSync(
      config,
      [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${join(dir, "data")}`,
        "  delete:",
        "    enabled: true",
        "  cache:",
        "    blobdescriptor: inmemory",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        `  addr: 127.0.0.1:${port}`,
        "  secret: cloister-bench-not-a-secret",
        "",
      ].join("\n"),
    );
    const proc = spawnGroup(bin, ["serve", config], { cwd: dir, env: { ...process.env, OTEL_TRACES_EXPORTER: "none" }, logFile });
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    let ready = false;
    while (Date.now() < deadline && !proc.exitInfo) {
      try {
        const res = await request(`${base}/v2/`, { idleMs: 2000 });
        if (res.status === 200) {
          ready = true;
          break;
        }
      } catch {
        /* not yet */
      }
      await sleep(100);
    }
    if (ready) {
      log(`distribution: ${bin} ready at ${base} (storage ${join(dir, "data")})`);
      return { name: "distribution", base, port, proc, logFile };
    }
    await proc.kill();
    lastErr = new BenchError(`docker-registry did not become ready (${JSON.stringify(proc.exitInfo)}):\n${tail(readLog(logFile), 15)}`);
  }
  throw lastErr;
}
