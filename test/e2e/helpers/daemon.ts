// Runs a root daemon (dockerd, containerd) for one e2e file: detached in its own process group,
// every path (state, sockets, pid file) in a private temp dir, listening only on a unix socket
// there. stop() signals only the PIDs this module started and their descendants (dockerd's
// managed containerd leaves the group), unmounts whatever the daemon left under the temp dir,
// and removes it.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import { run } from "./exec";
import { alive, descendants } from "./registry";

export interface Daemon {
  pid: number;
  dir: string;
  logs(): string;
  stop(): Promise<void>;
}

// Daemons still running when the test process exits (a crash, or stop() never reached) are
// killed with their descendants, e.g. dockerd's containerd, which leaves dockerd's group.
const live = new Set<number>();
process.once("exit", () => {
  for (const pid of [...live].flatMap((p) => [p, ...descendants(p).map((d) => d.pid)])) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
});

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + "/")));
  return mounts.sort((a, b) => b.length - a.length);
}

/** Lazily unmounts whatever a client left mounted under `dir`, then removes it. */
export async function unmountAndRemove(dir: string): Promise<void> {
  for (const m of mountsUnder(dir)) await run("umount", ["-l", m], { allowFail: true });
  rmSync(dir, { recursive: true, force: true });
}

/** GET http://unix:<socket><path>; resolves with the status or rejects. */
export function unixGet(socketPath: string, path: string, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path, method: "GET", timeout: timeoutMs }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

/**
 * Starts `cmd args` and waits until `ready()` resolves true. `dir` is the daemon's private temp
 * dir; it is removed by stop().
 */
export async function startDaemon(o: {
  name: string;
  cmd: string;
  args: string[];
  dir: string;
  env?: NodeJS.ProcessEnv;
  ready: () => Promise<boolean>;
  timeoutMs?: number;
}): Promise<Daemon> {
  let log = "";
  const child: ChildProcess = spawn(o.cmd, o.args, { cwd: o.dir, env: o.env ?? process.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const append = (d: Buffer) => {
    log += d.toString("utf8");
    if (log.length > 2_000_000) log = log.slice(-1_000_000);
  };
  child.stdout!.on("data", append);
  child.stderr!.on("data", append);
  let exited = false;
  child.on("exit", () => (exited = true));
  child.on("error", (e) => {
    log += `\n[spawn error] ${e.message}\n`;
    exited = true;
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${o.name}: spawn failed: ${log}`);
  live.add(pid);
  const seen = new Set<number>();

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const d of descendants(pid)) seen.add(d.pid);
    for (const p of seen) live.add(p);
    // SIGTERM to the daemon only: it shuts down its own children (dockerd stops its containerd).
    try {
      process.kill(pid, "SIGTERM");
    } catch {}
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && (alive(pid) || [...seen].some(alive))) await new Promise((r) => setTimeout(r, 100));
    for (const p of [pid, ...seen]) {
      try {
        if (alive(p)) process.kill(p, "SIGKILL");
      } catch {}
      live.delete(p);
    }
    await unmountAndRemove(o.dir);
  };

  const started = Date.now();
  const timeoutMs = o.timeoutMs ?? 60_000;
  while (true) {
    if (exited) {
      await stop();
      throw new Error(`${o.name} exited early; log:\n${log.slice(-8000)}`);
    }
    if (await o.ready().catch(() => false)) break;
    if (Date.now() - started > timeoutMs) {
      await stop();
      throw new Error(`${o.name} not ready within ${timeoutMs} ms; log:\n${log.slice(-8000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const d of descendants(pid)) seen.add(d.pid);
  return { pid, dir: o.dir, logs: () => log, stop };
}
