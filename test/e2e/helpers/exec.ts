// Runs real client binaries with captured output and useful errors; sandboxes for
// containers/image clients; which clients a file needs (skip locally, fail in CI).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync, openSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningRegistry } from "./registry";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** A file whose contents become stdin. */
  stdinFile?: string;
  timeoutMs?: number;
  /** Resolve instead of rejecting on a non-zero exit. */
  allowFail?: boolean;
}

export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let stdin: "ignore" | number = "ignore";
    let fd: number | undefined;
    if (o.stdinFile) stdin = fd = openSync(o.stdinFile, "r");
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: [stdin, "pipe", "pipe"] });
    if (fd !== undefined) closeSync(fd);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${o.timeoutMs} ms]`;
      child.kill("SIGKILL");
    }, o.timeoutMs ?? 10 * 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const r = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (r.code !== 0 && !o.allowFail) {
        reject(new Error(`\`${[cmd, ...args].join(" ")}\` exited ${r.code}${signal ? ` (${signal})` : ""}\n--- stderr ---\n${stderr.slice(-8000)}\n--- stdout ---\n${stdout.slice(-4000)}`));
      } else resolve(r);
    });
  });
}

/** Can we give skopeo a private mount namespace (to hide root's shared blob-info cache)? */
let unshareWorks: boolean | undefined;
function canUnshare(): boolean {
  if (unshareWorks === undefined) {
    const r = spawnSync("unshare", ["--mount", "--", "sh", "-c", "mount -t tmpfs none /mnt"], { stdio: "ignore" });
    unshareWorks = r.status === 0;
  }
  return unshareWorks;
}

const SYSTEM_BLOB_INFO_CACHE_DIR = "/var/lib/containers/cache";

/**
 * skopeo in a sandbox: private policy (accept anything), empty registries.conf, empty auth
 * file, HOME/TMPDIR/XDG_RUNTIME_DIR in a temp dir. As root, containers/image keeps a shared
 * blob-info cache in /var/lib/containers/cache that makes later pushes skip or mount blobs it
 * saw before; we hide it behind a tmpfs in a private mount namespace when possible, and
 * otherwise delete the cache file before each invocation.
 */
/**
 * Runs a containers/image client (skopeo, podman, buildah) without root's shared blob-info
 * cache: in a private mount namespace with a tmpfs over the cache dir, or else after deleting
 * the cache file.
 */
export function runWithoutSharedCache(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  if (canUnshare()) {
    const script = `mkdir -p ${SYSTEM_BLOB_INFO_CACHE_DIR} && mount -t tmpfs none ${SYSTEM_BLOB_INFO_CACHE_DIR} && exec "$0" "$@"`;
    return run("unshare", ["--mount", "--", "sh", "-c", script, cmd, ...args], o);
  }
  rmSync(join(SYSTEM_BLOB_INFO_CACHE_DIR, "blob-info-cache-v1.boltdb"), { force: true });
  return run(cmd, args, o);
}

export interface ContainersSandbox {
  dir: string;
  env: NodeJS.ProcessEnv;
  /** a signature policy that accepts anything */
  policy: string;
}

/**
 * A temp dir with what every containers/image client (skopeo, podman, buildah) reads from the
 * system otherwise: policy, registries.conf, auth file, HOME/TMPDIR/XDG dirs.
 */
export function containersSandbox(prefix: string): ContainersSandbox {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  for (const d of ["home", "tmp", "run"]) mkdirSync(join(dir, d));
  const policy = join(dir, "policy.json");
  writeFileSync(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  writeFileSync(join(dir, "registries.conf"), 'unqualified-search-registries = []\n');
  writeFileSync(join(dir, "auth.json"), "{}\n");
  const env = {
    PATH: process.env.PATH,
    HOME: join(dir, "home"),
    TMPDIR: join(dir, "tmp"),
    XDG_RUNTIME_DIR: join(dir, "run"),
    XDG_DATA_HOME: join(dir, "home"),
    XDG_CONFIG_HOME: join(dir, "home"),
    CONTAINERS_REGISTRIES_CONF: join(dir, "registries.conf"),
    REGISTRY_AUTH_FILE: join(dir, "auth.json"),
  };
  return { dir, env, policy };
}

export class Skopeo {
  readonly dir: string;
  private env: NodeJS.ProcessEnv;
  private policy: string;

  constructor(private reg: RunningRegistry) {
    ({ dir: this.dir, env: this.env, policy: this.policy } = containersSandbox("cloister-e2e-skopeo-"));
  }

  /** docker://HOST/<ref> */
  ref(nameAndRef: string): string {
    return `docker://${this.reg.host}/${nameAndRef}`;
  }

  /** Runs `skopeo <global opts> <sub> <args>`; tls verification is off for the registry. */
  async run(sub: string, args: string[], o: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    const tls: Record<string, string[]> = {
      copy: ["--src-tls-verify=false", "--dest-tls-verify=false"],
      inspect: ["--tls-verify=false"],
      "list-tags": ["--tls-verify=false"],
      delete: ["--tls-verify=false"],
    };
    const full = ["--policy", this.policy, "--tmpdir", join(this.dir, "tmp"), sub, ...(tls[sub] ?? []), ...args];
    return runWithoutSharedCache("skopeo", full, { env: this.env, ...o });
  }

  cleanup() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** CI is set to something other than "", "0" or "false" (GitHub, GitLab and .ci/run set CI=true). */
export const inCI = !!process.env.CI && !/^(0|false)$/i.test(process.env.CI);

/** Debian package that provides each client binary (for the error message). */
const PACKAGE: Record<string, string> = {
  skopeo: "skopeo",
  umoci: "umoci",
  curl: "curl",
  unshare: "util-linux",
  "docker-registry": "docker-registry",
  "/usr/bin/docker": "docker.io",
  dockerd: "docker.io",
  podman: "podman",
  buildah: "buildah",
  containerd: "containerd",
  ctr: "containerd",
  "/usr/bin/chromium": "chromium",
};

export interface ClientCheck {
  missing: string[];
  /** true only outside CI with a client missing: the file's tests are skipped (loudly). */
  skip: boolean;
  /** Throws (in CI) when a client is missing; call it first in beforeAll. */
  assert(): void;
}

/**
 * The clients an e2e file needs. Outside CI a missing client skips the file with a loud
 * warning; under CI=true it never skips: assert() throws, so every test of the file fails
 * (and scripts/test.mjs also fails a CI run that skipped anything).
 */
export function needClients(file: string, cmds: string[]): ClientCheck {
  const missing = cmds.filter((c) => (c.startsWith("/") ? !existsSync(c) : !have(c)));
  const pkgs = [...new Set(missing.map((c) => PACKAGE[c] ?? c))];
  const msg = `${file}: missing ${missing.join(", ")} (apt-get install ${pkgs.join(" ")})`;
  if (missing.length && !inCI) console.warn(`\n!!! SKIPPING ${msg}; under CI=true this fails !!!\n`);
  return {
    missing,
    skip: missing.length > 0 && !inCI,
    assert() {
      if (missing.length) throw new Error(`${msg}; CI=true, so this is a failure, not a skip`);
    },
  };
}

export { existsSync };
