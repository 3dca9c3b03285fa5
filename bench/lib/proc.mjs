// Process helpers: free ports, detached process groups that are always cleaned up, /proc sampling.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { readFileSync, readdirSync, createWriteStream } from "node:fs";

/** A free TCP port on 127.0.0.1 (the OS picks it; tiny race until the server binds it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const groups = new Set(); // process-group leaders we started

/**
 * Spawns `cmd args` as the leader of a new process group with stdout+stderr appended to `logFile`.
 * Returns {pid, child, exited (promise of {code, signal}), kill()} — kill() ends the whole group.
 */
export function spawnGroup(cmd, args, { cwd, env, logFile }) {
  const log = createWriteStream(logFile, { flags: "a" });
  const child = spawn(cmd, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exitInfo = null;
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve((exitInfo = { code, signal }))));
  child.on("error", (err) => log.write(`spawn error: ${err.message}\n`));
  groups.add(child.pid);
  const proc = {
    pid: child.pid,
    child,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    async kill() {
      if (!groups.has(child.pid)) return;
      signalGroup(child.pid, "SIGTERM");
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      // Children (workerd) may outlive the leader for a moment: always sweep the group.
      await sleep(200);
      signalGroup(child.pid, "SIGKILL");
      if (!done) await Promise.race([exited, sleep(2000)]);
      groups.delete(child.pid);
      log.end();
    },
  };
  return proc;
}

function signalGroup(pgid, sig) {
  try {
    process.kill(-pgid, sig);
  } catch (err) {
    if (err.code !== "ESRCH") throw err;
  }
}

/** Synchronous last-resort cleanup for process exit: SIGKILL every group we started. */
export function killAllGroupsSync() {
  for (const pgid of groups) signalGroup(pgid, "SIGKILL");
  groups.clear();
}

/** Process table as [{pid, ppid, comm}] from /proc. */
export function processTable() {
  const out = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const fields = stat.slice(close + 2).split(" ");
      out.push({ pid: Number(d), ppid: Number(fields[1]), state: fields[0], comm });
    } catch {
      /* process went away */
    }
  }
  return out;
}

/** All live descendants of `root` (not including it). */
export function descendants(root) {
  const table = processTable();
  const kids = new Map();
  for (const p of table) {
    if (!kids.has(p.ppid)) kids.set(p.ppid, []);
    kids.get(p.ppid).push(p);
  }
  const out = [];
  const stack = [root];
  while (stack.length) {
    for (const c of kids.get(stack.pop()) ?? []) {
      if (c.state !== "Z") out.push(c);
      stack.push(c.pid);
    }
  }
  return out;
}

export function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
}

/** VmRSS of a process in bytes, or null if it is gone. */
export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * Samples RSS of `pids` every `intervalMs` until stop(); returns per-pid {min, max, first, last, samples}.
 */
export function startRssSampler(pids, intervalMs) {
  const stats = new Map(pids.map((pid) => [pid, { pid, first: null, last: null, min: Infinity, max: 0, samples: 0 }]));
  const tick = () => {
    for (const s of stats.values()) {
      const v = rssBytes(s.pid);
      if (v == null) continue;
      if (s.first == null) s.first = v;
      s.last = v;
      s.min = Math.min(s.min, v);
      s.max = Math.max(s.max, v);
      s.samples++;
    }
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return Object.fromEntries([...stats.values()].map((s) => [s.pid, s]));
    },
  };
}
