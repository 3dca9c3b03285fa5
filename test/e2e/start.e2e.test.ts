// `npm start` / scripts/start.mjs as a user runs it (ADR 0006): the TCP front answers TLS
// probes at once so containers/image clients fall back to plain HTTP without a 10 s wait;
// secrets come from the environment, never argv; SIGINT/SIGTERM on start.mjs and SIGTERM on
// npm (which forwards nothing) take the whole process tree down and free the port within 5 s.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "./helpers/exec";
import { freePort, offlineEnv, repoRoot } from "./helpers/registry";

const STOP_LIMIT_MS = 5000;
const temps: string[] = [];
const started: ChildProcess[] = [];
afterAll(async () => {
  // A failed test must not leave a registry behind. start.mjs runs wrangler in a group of its
  // own, so killing start.mjs's group is not enough: SIGKILL every process of each tree.
  // SIGTERM first, so start.mjs also removes its env file; SIGKILL whatever is left after 5 s.
  for (const c of started) {
    const pids = living([c.pid!, ...tree(c.pid!).map((p) => p.pid)]);
    if (pids.length === 0) continue;
    try {
      process.kill(c.pid!, "SIGTERM");
    } catch {}
    for (const t0 = Date.now(); living(pids).length && Date.now() - t0 < STOP_LIMIT_MS; ) await new Promise((r) => setTimeout(r, 100));
    for (const pid of living(pids)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  port: number;
  base: string;
  output(): string;
}

/** Spawns `cmd args` detached (its own group, as a shell job would be) and waits for HTTP on port. */
async function launch(cmd: string, args: string[], port: number, env: Record<string, string> = {}): Promise<Started> {
  const state = mkdtempSync(join(tmpdir(), "cloister-start-e2e-"));
  temps.push(state);
  const child = spawn(cmd, [...args, "--port", String(port), "--persist-to", state], {
    cwd: repoRoot,
    env: { ...process.env, ...offlineEnv, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited ${child.exitCode} before serving:\n${out}`);
    try {
      const r = await fetch(`${base}/v2/`);
      await r.arrayBuffer();
      break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`${cmd} did not serve ${base} within 120 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return { child, port, base, output: () => out };
}

/** Every process whose ancestry reaches `root` (by /proc ppid), with its command name; zombies excluded. */
function tree(root: number): { pid: number; comm: string }[] {
  const procs = new Map<number, { ppid: number; comm: string }>();
  for (const ent of readdirSync("/proc")) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const stat = readFileSync(`/proc/${ent}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const [state, ppid] = stat.slice(close + 2).split(" ");
      if (state !== "Z") procs.set(Number(ent), { ppid: Number(ppid), comm: stat.slice(stat.indexOf("(") + 1, close) });
    } catch {}
  }
  const out: { pid: number; comm: string }[] = [];
  const want = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, p] of procs) {
      if (!want.has(pid) && want.has(p.ppid)) {
        want.add(pid);
        out.push({ pid, comm: p.comm });
        grew = true;
      }
    }
  }
  return out;
}

function living(pids: number[]): number[] {
  return pids.filter((pid) => {
    try {
      return !/^\d+ \(.*\) Z /s.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return false;
    }
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** Sends `signal` to `pid` and waits (up to STOP_LIMIT_MS) for the port to be free and `pids` gone. */
async function killAndWait(pid: number, signal: NodeJS.Signals, port: number, pids: number[]) {
  const t0 = Date.now();
  process.kill(pid, signal);
  let free = false;
  let left = pids;
  while (Date.now() - t0 < STOP_LIMIT_MS) {
    free = await portFree(port);
    left = living(pids);
    if (free && left.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { free, left, ms: Date.now() - t0 };
}

/** Sends a TLS ClientHello-like first record and returns what comes back before the close. */
function tlsProbe(port: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port });
    const got: Buffer[] = [];
    s.setTimeout(15_000, () => s.destroy(new Error("no answer to the TLS probe within 15 s")));
    s.on("data", (d) => got.push(d));
    s.on("end", () => resolve(Buffer.concat(got)));
    s.on("error", reject);
    // record type 0x16 (handshake), TLS 1.0 framing; the front decides on the first byte
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]));
  });
}

async function pushTinyImage(base: string, repo: string, tag: string, auth?: string) {
  const h = (extra: Record<string, string> = {}) => ({ ...(auth ? { Authorization: auth } : {}), ...extra });
  const blob = async (data: Buffer) => {
    const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
    const r = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data, headers: h({ "Content-Type": "application/octet-stream" }) });
    expect(r.status, await r.text()).toBe(201);
    return { digest, size: data.length };
  };
  const layer = await blob(randomBytes(512));
  const config = await blob(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [layer.digest] } })));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layer }],
  });
  const r = await fetch(`${base}/v2/${repo}/manifests/${tag}`, { method: "PUT", body: manifest, headers: h({ "Content-Type": "application/vnd.oci.image.manifest.v1+json" }) });
  expect(r.status, await r.text()).toBe(201);
}

const startScript = join(repoRoot, "scripts/start.mjs");

describe("npm start", () => {
  it("open mode (.dev.vars): TLS probes are refused at once, skopeo pings plain HTTP, one open-mode warning; SIGINT stops the tree", async () => {
    const port = await freePort();
    const reg = await launch(process.execPath, [startScript], port);

    // The front answers a ClientHello with a fatal TLS alert (protocol_version) and closes.
    expect([...(await tlsProbe(port))]).toEqual([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]);

    await pushTinyImage(reg.base, "team/app", "1.0");
    // skopeo's HTTPS ping gets that alert (not a timeout) and its HTTP ping succeeds.
    const inspect = await run("skopeo", ["--debug", "inspect", "--tls-verify=false", `docker://127.0.0.1:${port}/team/app:1.0`], { timeoutMs: 120_000 });
    expect(JSON.parse(inspect.stdout).Name).toBe(`127.0.0.1:${port}/team/app`);
    expect(inspect.stderr).toMatch(/Ping https:\/\/127\.0\.0\.1:\d+\/v2\/ err .*remote error: tls: protocol version not supported/);
    expect(inspect.stderr).toMatch(/Ping http:\/\/127\.0\.0\.1:\d+\/v2\/ status 200/);

    // curl over plain HTTP, and the Worker's own requests: still exactly one warning.
    for (let i = 0; i < 3; i++) expect((await fetch(`${reg.base}/v2/_catalog`)).status).toBe(200);
    const out = reg.output();
    expect(out).toContain(`Ready on http://127.0.0.1:${port}`);
    expect(out.match(/NO AUTHENTICATION/gi) ?? []).toHaveLength(1);
    expect(out).not.toMatch(/getCaughtExceptionAsKj|Broken pipe/);

    const pids = [reg.child.pid!, ...tree(reg.child.pid!).map((p) => p.pid)];
    expect(tree(reg.child.pid!).map((p) => p.comm)).toContain("workerd");
    const stop = await killAndWait(reg.child.pid!, "SIGINT", port, pids);
    expect(stop.free, `port still bound ${stop.ms} ms after SIGINT`).toBe(true);
    expect(stop.left, "processes left after SIGINT").toEqual([]);
  });

  it("token mode from the environment: secrets never in argv, TOKEN_SIGNING_KEYS used; SIGTERM stops the tree", async () => {
    const port = await freePort();
    // Characters an env file could mangle: $NAME and ${…} (dotenv-expand), \$, quotes, #, spaces.
    const passwordId = "pw-" + randomBytes(12).toString("hex");
    const password = passwordId + ' $HOME${PATH}\\$x "#` ';
    const keySecret = randomBytes(24).toString("hex");
    const reg = await launch(process.execPath, [startScript], port, {
      AUTH_MODE: "token",
      ADMIN_PASSWORD: password,
      TOKEN_SIGNING_KEYS: JSON.stringify([{ kid: "e2e-start", secret: keySecret }]),
    });
    const basic = "Basic " + Buffer.from(`admin:${password}`).toString("base64");

    expect((await fetch(`${reg.base}/v2/`)).status).toBe(401);
    expect((await fetch(`${reg.base}/v2/`, { headers: { Authorization: "Basic " + Buffer.from("admin:wrong").toString("base64") } })).status).toBe(401);
    expect((await fetch(`${reg.base}/v2/`, { headers: { Authorization: basic } })).status).toBe(200);
    const tok = await fetch(`${reg.base}/token?service=127.0.0.1:${port}&scope=repository:admin/app:pull,push`, { headers: { Authorization: basic } });
    expect(tok.status).toBe(200);
    const { token } = (await tok.json()) as { token: string };
    expect(JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString()).kid).toBe("e2e-start");
    await pushTinyImage(reg.base, "admin/app", "1", `Bearer ${token}`);

    // No process on the machine carries either secret in its command line, and the log doesn't echo it.
    const pids = [reg.child.pid!, ...tree(reg.child.pid!).map((p) => p.pid)];
    expect(pids.length).toBeGreaterThan(3);
    const leaks: string[] = [];
    for (const ent of readdirSync("/proc")) {
      if (!/^\d+$/.test(ent)) continue;
      let cmdline = "";
      try {
        cmdline = readFileSync(`/proc/${ent}/cmdline`, "utf8");
      } catch {}
      if (cmdline.includes(passwordId) || cmdline.includes(keySecret)) leaks.push(`${ent}: ${cmdline.replace(/\0/g, " ")}`);
    }
    expect(leaks).toEqual([]);
    // The secrets travel in a private env file named on wrangler's command line: mode 0600 in a
    // 0700 directory while running, removed at stop.
    const envFiles = pids
      .map((pid) => {
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
          const at = argv.indexOf("--env-file");
          return at >= 0 ? (argv[at + 1] ?? "") : "";
        } catch {
          return "";
        }
      })
      .filter((f) => f !== "");
    const envFile = envFiles[0];
    expect(envFile, "wrangler gets --env-file").toBeTruthy();
    expect(statSync(envFile).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(envFile)).mode & 0o777).toBe(0o700);
    expect(readFileSync(envFile, "utf8")).toContain(passwordId);
    expect(reg.output()).not.toContain(passwordId);
    expect(reg.output()).not.toContain(keySecret);
    expect(reg.output()).not.toMatch(/NO AUTHENTICATION/i);

    const stop = await killAndWait(reg.child.pid!, "SIGTERM", port, pids);
    expect(stop.free, `port still bound ${stop.ms} ms after SIGTERM`).toBe(true);
    expect(stop.left, "processes left after SIGTERM").toEqual([]);
    expect(existsSync(dirname(envFile)), "env file removed at stop").toBe(false);
  });

  it("via npm: `kill <npm pid>` frees the port and leaves no process; --var ADMIN_PASSWORD: is warned about", async () => {
    const port = await freePort();
    const reg = await launch("npm", ["start", "--", "--var", "ADMIN_PASSWORD:visible-in-ps"], port);
    const warned = /WARNING: --var ADMIN_PASSWORD:… puts the secret in the process list/.test(reg.output());

    const below = tree(reg.child.pid!);
    expect(below.map((p) => p.comm)).toEqual(expect.arrayContaining(["node", "workerd"]));
    const stop = await killAndWait(reg.child.pid!, "SIGTERM", port, [reg.child.pid!, ...below.map((p) => p.pid)]);
    expect(stop.free, `port still bound ${stop.ms} ms after killing npm`).toBe(true);
    expect(stop.left, "processes left after killing npm").toEqual([]);
    expect(warned, reg.output()).toBe(true);
  });
});
