// Starts registries for end-to-end tests: cloister under `wrangler dev --local` (HTTPS by
// default, because containers/image clients probe TLS first and would otherwise wait a 10 s
// handshake timeout per invocation), and the CNCF distribution registry (Debian
// `docker-registry`) as a reference implementation on plain HTTP.
//
// Every server binds 127.0.0.1 on a free port, runs detached in its own process group and
// keeps its state in a fresh temp dir; stop() kills only that group and removes the dir.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import * as http from "node:http";
import * as https from "node:https";

export interface RunningRegistry {
  /** Base URL, e.g. https://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  /** pid of the launched process (wrangler's node process, or docker-registry) */
  pid: number;
  /** pids of the workerd processes in the process tree (empty for docker-registry) */
  workerPids(): number[];
  stop(): Promise<void>;
  /** stdout+stderr captured so far */
  logs(): string;
  /** true if the URL is https (self-signed certificate) */
  https: boolean;
}

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "../../..");

/** Environment that keeps wrangler (and anything it starts) off the network. */
export const offlineEnv: Record<string, string> = {
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  // Turns off wrangler's devtools proxy, which floods its node process with one request per 4 KiB
  // of every outbound fetch body (a 100 MB proxy fill ran out of sockets; docs/proxy.md).
  VSCODE_INSPECTOR_OPTIONS: process.env.VSCODE_INSPECTOR_OPTIONS || "{}",
};

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (!addr || typeof addr === "string") return reject(new Error("no port"));
      const port = addr.port;
      srv.close(() => resolve(port));
    });
  });
}

let wasmExtracted = false;
function extractWasm() {
  if (wasmExtracted) return;
  execFileSync(process.execPath, [join(repoRoot, "scripts/extract-wasm.mjs")], { cwd: repoRoot, stdio: "pipe" });
  wasmExtracted = true;
}

// Kill every group we started if the test process exits without calling stop().
const liveGroups = new Set<number>();
process.once("exit", () => {
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {}
  }
});

/** Direct and indirect children of `root` (by /proc ppid), with their command names. */
export function descendants(root: number): { pid: number; comm: string }[] {
  const parent = new Map<number, number>();
  const comm = new Map<number, string>();
  for (const ent of readdirSync("/proc")) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const stat = readFileSync(`/proc/${ent}/stat`, "utf8");
      // pid (comm) state ppid ...; comm may contain spaces/parens, so split at the last ')'.
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      parent.set(Number(ent), ppid);
      comm.set(Number(ent), name);
    } catch {}
  }
  const out: { pid: number; comm: string }[] = [];
  const want = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!want.has(pid) && want.has(ppid)) {
        want.add(pid);
        out.push({ pid, comm: comm.get(pid) ?? "" });
        grew = true;
      }
    }
  }
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One request that accepts self-signed certificates; resolves with the status (or rejects). */
function probe(url: string, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.request(url, { method: "GET", rejectUnauthorized: false, timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

interface LaunchOptions {
  cmd: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  url: string;
  host: string;
  httpsOn: boolean;
  tempDirs: string[];
  name: string;
  timeoutMs: number;
  workerComm?: RegExp;
}

async function launch(o: LaunchOptions): Promise<RunningRegistry> {
  let logBuf = "";
  const child: ChildProcess = spawn(o.cmd, o.args, { cwd: o.cwd, env: o.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const append = (d: Buffer) => {
    logBuf += d.toString("utf8");
    if (logBuf.length > 4_000_000) logBuf = logBuf.slice(-2_000_000);
  };
  child.stdout!.on("data", append);
  child.stderr!.on("data", append);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exitPromise = new Promise<void>((resolve) =>
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    }),
  );
  child.on("error", (e) => {
    logBuf += `\n[spawn error] ${e.message}\n`;
    exited = exited ?? { code: -1, signal: null };
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${o.name}: spawn failed: ${logBuf}`);
  liveGroups.add(pid);
  // Remember worker pids as we see them: stop() must also reach children that left the group.
  const seen = new Map<number, string>();
  const snapshot = () => {
    for (const d of descendants(pid)) seen.set(d.pid, d.comm);
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    snapshot();
    const kill = (sig: NodeJS.Signals) => {
      try {
        process.kill(-pid, sig);
      } catch {}
      for (const p of seen.keys()) {
        try {
          process.kill(p, sig);
        } catch {}
      }
    };
    kill("SIGTERM");
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (alive(pid) || [...seen.keys()].some(alive))) await new Promise((r) => setTimeout(r, 100));
    if (alive(pid) || [...seen.keys()].some(alive)) kill("SIGKILL");
    await Promise.race([exitPromise, new Promise((r) => setTimeout(r, 2000))]);
    liveGroups.delete(pid);
    for (const d of o.tempDirs) rmSync(d, { recursive: true, force: true });
  };

  const reg: RunningRegistry = {
    url: o.url,
    host: o.host,
    pid,
    https: o.httpsOn,
    workerPids: () => {
      snapshot();
      const re = o.workerComm;
      if (!re) return [];
      return descendants(pid)
        .filter((d) => re.test(d.comm))
        .map((d) => d.pid);
    },
    stop,
    logs: () => logBuf,
  };

  const started = Date.now();
  let lastErr = "";
  let errorSeenAt = 0;
  while (true) {
    // A build error makes wrangler wait for file changes instead of exiting; give a concurrent
    // edit a moment to settle, then fail with the logs rather than waiting for the timeout.
    if (!errorSeenAt && /\[ERROR\]|Build failed/.test(logBuf)) errorSeenAt = Date.now();
    if (errorSeenAt && Date.now() - errorSeenAt > 15_000) {
      await stop();
      throw new Error(`${o.name} reported an error and did not answer GET ${o.url}/v2/; logs:\n${logBuf}`);
    }
    if (exited) {
      await stop();
      throw new Error(`${o.name} exited early (${JSON.stringify(exited)}); logs:\n${logBuf}`);
    }
    try {
      const status = await probe(`${o.url}/v2/`);
      if (status > 0) break;
    } catch (e) {
      lastErr = (e as Error).message;
    }
    if (Date.now() - started > o.timeoutMs) {
      await stop();
      throw new Error(`${o.name} did not answer GET ${o.url}/v2/ within ${o.timeoutMs} ms (last error: ${lastErr}); logs:\n${logBuf}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  snapshot();
  return reg;
}

/**
 * cloister under `wrangler dev --local` with fresh local R2/DO state.
 * `vars` become `--var K:V` overrides of wrangler.toml [vars].
 */
export async function startRegistry(
  opts: { vars?: Record<string, string>; https?: boolean; persistDir?: string; timeoutMs?: number; wranglerConfig?: string } = {},
): Promise<RunningRegistry> {
  extractWasm();
  const useHttps = opts.https ?? true;
  const port = await freePort();
  let inspector = await freePort();
  while (inspector === port) inspector = await freePort();
  const tempDirs: string[] = [];
  let persist = opts.persistDir;
  if (!persist) {
    persist = mkdtempSync(join(tmpdir(), "cloister-e2e-state-"));
    tempDirs.push(persist);
  }
  const args = [
    join(repoRoot, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "--local",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--inspector-port",
    String(inspector),
    "--persist-to",
    persist,
    "--show-interactive-dev-session=false",
  ];
  if (opts.wranglerConfig) args.push("--config", opts.wranglerConfig);
  if (useHttps) args.push("--local-protocol", "https");
  for (const [k, v] of Object.entries(opts.vars ?? {})) args.push("--var", `${k}:${v}`);
  const host = `127.0.0.1:${port}`;
  return launch({
    cmd: process.execPath,
    args,
    cwd: repoRoot,
    env: { ...process.env, ...offlineEnv, CI: process.env.CI ?? "true", NO_COLOR: "1", FORCE_COLOR: "0" },
    url: `${useHttps ? "https" : "http"}://${host}`,
    host,
    httpsOn: useHttps,
    tempDirs,
    name: "wrangler dev",
    timeoutMs: opts.timeoutMs ?? 60_000,
    workerComm: /workerd/,
  });
}

/**
 * The CNCF distribution registry 2.8.x (Debian `docker-registry`) on plain HTTP with
 * filesystem storage in a temp dir and deletes enabled.
 */
export async function startDistribution(opts: { binary?: string; timeoutMs?: number; htpasswd?: string } = {}): Promise<RunningRegistry> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "cloister-e2e-distribution-"));
  const config = join(dir, "config.yml");
  writeFileSync(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(dir, "data")}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      // htpasswd: bcrypt lines (user:$2…); every request then needs Basic credentials.
      ...(opts.htpasswd ? ["auth:", "  htpasswd:", "    realm: e2e", `    path: ${join(dir, "htpasswd")}`] : []),
      "",
    ].join("\n"),
  );
  if (opts.htpasswd) writeFileSync(join(dir, "htpasswd"), opts.htpasswd);
  const host = `127.0.0.1:${port}`;
  return launch({
    cmd: opts.binary ?? "/usr/bin/docker-registry",
    args: ["serve", config],
    cwd: dir,
    env: { ...process.env, OTEL_TRACES_EXPORTER: "none" },
    url: `http://${host}`,
    host,
    httpsOn: false,
    tempDirs: [dir],
    name: "docker-registry",
    timeoutMs: opts.timeoutMs ?? 30_000,
  });
}

/** Which registry the e2e suite targets: E2E_TARGET=distribution runs it against docker-registry. */
export function startTarget(opts?: { vars?: Record<string, string> }): Promise<RunningRegistry> {
  return process.env.E2E_TARGET === "distribution" ? startDistribution() : startRegistry(opts);
}
