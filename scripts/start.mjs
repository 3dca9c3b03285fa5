#!/usr/bin/env node
// `npm start [-- --port N] [-- --ip ADDR] [-- <wrangler dev args>]`: the registry on
// http://127.0.0.1:8787 with local R2 and Durable Objects persisted under .wrangler/state.
//
// - `wrangler dev` runs on an internal loopback port behind a TCP front on the public port
//   (scripts/front.mjs, ADR 0006) that refuses TLS probes at once, so docker, podman, skopeo
//   and buildah fall back to plain HTTP without a 10 s wait.
// - Variables and secrets come from the environment or .dev.vars and reach wrangler through a
//   private env file, never argv (scripts/dev-env.mjs).
// - SIGINT, SIGTERM and SIGHUP, and the death of a parent npm (which does not forward signals
//   to its child), take the whole tree down: wrangler runs in its own process group, which is
//   sent SIGTERM and, after a grace period, SIGKILL.
//
// Other arguments go to wrangler unchanged; `--no-front` runs wrangler on the public port
// directly (clients then wait out the TLS probe, but the Worker sees their real addresses).
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { connect, createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startFront } from "./front.mjs";
import { SECRET_NAMES, devVars, writeEnvFile } from "./dev-env.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const STOP_GRACE_MS = 3000; // SIGTERM → SIGKILL for the wrangler group; the whole stop stays < 5 s
const READY_TIMEOUT_MS = 120_000;
const log = (msg) => console.error(`[cloister] ${msg}`);

await import("./extract-wasm.mjs");

// --- arguments --------------------------------------------------------------------------------
let args = process.argv.slice(2);
/** Removes `--flag value` / `--flag=value` from args and returns the value (or undefined). */
function take(flag) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) {
      const v = args[i + 1];
      args.splice(i, 2);
      return v;
    }
    if (args[i].startsWith(flag + "=")) {
      const v = args[i].slice(flag.length + 1);
      args.splice(i, 1);
      return v;
    }
  }
  return undefined;
}
const has = (flag) => args.some((a) => a === flag || a.startsWith(flag + "="));
const noFront = args.includes("--no-front");
args = args.filter((a) => a !== "--no-front");
const publicPort = Number(take("--port") ?? 8787);
const publicIp = take("--ip") ?? "127.0.0.1";
if (!Number.isInteger(publicPort) || publicPort < 0 || publicPort > 65535) {
  log(`--port must be a TCP port number`);
  process.exit(2);
}
const wranglerHttps = args.some((a, i) => a === "--local-protocol=https" || (a === "--local-protocol" && args[i + 1] === "https"));

// --var NAME:value from the command line (wrangler applies these last).
const cliVars = new Map();
args.forEach((a, i) => {
  const v = a === "--var" ? args[i + 1] : a.startsWith("--var=") ? a.slice(6) : null;
  const colon = v?.indexOf(":") ?? -1;
  if (v && colon > 0) cliVars.set(v.slice(0, colon), v.slice(colon + 1));
});
for (const name of SECRET_NAMES) {
  if (cliVars.has(name)) {
    log(`WARNING: --var ${name}:… puts the secret in the process list (ps) and npm's log.`);
    log(`         Use \`${name}=… npm start\` or a line in .dev.vars instead.`);
  }
}

// --- variables, off the command line ----------------------------------------------------------
const userEnvFile = has("--env-file");
const { vars, fromEnv } = devVars(root, process.env, { readDevVars: !userEnvFile });
let envFile;
try {
  envFile = writeEnvFile(vars);
} catch (e) {
  log(e.message);
  process.exit(2);
}
if (fromEnv.length) log(`from the environment: ${fromEnv.join(", ")}`);
// From here on every exit path goes through stop(), which also removes the env file.
let child = null;
let front = null;
let stopping = false;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => stop(0));

const authMode = String(cliVars.get("AUTH_MODE") ?? vars.AUTH_MODE ?? "token").trim().toLowerCase();
if (authMode === "open") {
  log("!!! AUTH_MODE=open: NO AUTHENTICATION. Anyone who can reach this port may push, pull and delete.");
  log("!!! For auth: ADMIN_PASSWORD=<secret> AUTH_MODE=token npm start   (see docs/auth.md)");
}

// --- ports ------------------------------------------------------------------------------------
const freePort = () =>
  new Promise((resolve, reject) => {
    const srv = createServer().once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
const canConnect = (port) =>
  new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });

const internalPort = noFront ? publicPort : await freePort();
let markReady;
const ready = new Promise((r) => (markReady = r));
if (!noFront) {
  try {
    // Claim the public port before wrangler starts: a busy port fails at once. Connections that
    // arrive before wrangler is ready wait for it (the front pipes only once ready resolves).
    front = await startFront({
      host: publicIp,
      port: publicPort,
      upstreamPort: internalPort,
      tls: wranglerHttps ? "pass" : "refuse",
      waitFor: ready,
    });
  } catch (e) {
    log(`cannot listen on ${publicIp}:${publicPort}: ${e.code ?? e.message}`);
    stop(1);
  }
}

// --- wrangler ---------------------------------------------------------------------------------
const wranglerArgs = ["dev", "--local", "--port", String(internalPort), "--ip", noFront ? publicIp : "127.0.0.1", "--env-file", envFile.path];
if (!has("--persist-to")) wranglerArgs.push("--persist-to", join(root, ".wrangler/state"));
if (!has("--inspector-port")) wranglerArgs.push("--inspector-port", "0");
if (!has("--show-interactive-dev-session")) wranglerArgs.push("--show-interactive-dev-session=false");
wranglerArgs.push(...args);

const childEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CLOUDFLARE_CF_FETCH_ENABLED: "false" };
// No devtools proxy: wrangler 4.86's turns every 4 KiB of an outbound fetch body into a request
// to its node process that holds a socket for 5 s, so a 100 MB proxy fill ran out of file
// descriptors (docs/proxy.md "Large fills under wrangler dev"). This variable is how wrangler
// itself turns that proxy off; logs still reach the terminal.
childEnv.VSCODE_INSPECTOR_OPTIONS ||= "{}";
for (const name of Object.keys(vars)) delete childEnv[name]; // already in the env file
const require = createRequire(import.meta.url);
const wrangler = join(dirname(require.resolve("wrangler/package.json")), "bin/wrangler.js");
// detached: its own process group, so one kill reaches wrangler, workerd and esbuild.
child = spawn(process.execPath, [wrangler, ...wranglerArgs], { cwd: root, env: childEnv, stdio: ["ignore", "pipe", "pipe"], detached: true });

// wrangler's "Ready on http://127.0.0.1:<internal port>" would send users to the wrong port, and
// "Using secrets defined in /tmp/…" names our temporary file.
const scheme = wranglerHttps ? "https" : "http";
const publicUrl = `${scheme}://${publicIp.includes(":") ? `[${publicIp}]` : publicIp}:${publicPort}`;
function relay(stream, out) {
  let buf = "";
  stream.setEncoding("utf8");
  stream.on("data", (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl + 1);
      buf = buf.slice(nl + 1);
      if (/Ready on /.test(line)) out.write(line.replace(/Ready on \S+/, `Ready on ${publicUrl}`));
      else if (line.startsWith(`Using secrets defined in `)) out.write(`Using variables from ${userEnvFile ? "--env-file" : ".dev.vars"} and the environment\n`);
      else out.write(line);
    }
  });
  stream.on("end", () => buf && out.write(buf));
}
relay(child.stdout, process.stdout);
relay(child.stderr, process.stderr);

(async () => {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!stopping && Date.now() < deadline) {
    if (await canConnect(internalPort)) {
      markReady();
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!stopping) {
    log(`wrangler did not listen within ${READY_TIMEOUT_MS / 1000} s`);
    stop(1);
  }
})();

// --- stopping ---------------------------------------------------------------------------------
// Function declarations (hoisted): a signal or a busy port may call stop() before wrangler runs.
function groupAlive() {
  if (!child?.pid) return false;
  try {
    process.kill(-child.pid, 0);
    return true;
  } catch {
    return false;
  }
}
function killGroup(sig) {
  if (!child?.pid) return;
  try {
    process.kill(-child.pid, sig);
  } catch {}
}
async function stop(code) {
  if (stopping) return;
  stopping = true;
  front?.close();
  killGroup("SIGTERM");
  const deadline = Date.now() + STOP_GRACE_MS;
  while (groupAlive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  killGroup("SIGKILL");
  envFile.remove();
  process.exit(code);
}
// Under npm (or yarn/pnpm: they set npm_lifecycle_event), the death of the package manager
// leaves us re-parented without a signal: stop then too. Not when run directly, so that
// `nohup node scripts/start.mjs &` outlives the shell that started it.
if (process.env.npm_lifecycle_event) {
  const parent = process.ppid;
  setInterval(() => process.ppid !== parent && stop(0), 250).unref();
}
child.on("exit", (code, signal) => {
  if (stopping) return;
  log(`wrangler exited (${signal ?? `code ${code}`})`);
  stop(code || 1);
});
child.on("error", (e) => {
  log(`cannot run wrangler: ${e.message}`);
  stop(1);
});
