// A private dockerd for one e2e file (runs as root): --data-root, --exec-root, --pidfile and the
// API socket in a temp dir, no iptables, no bridge, its own daemon.json, and a private CLI config
// dir (DOCKER_CONFIG) so `docker login` never touches ~/.docker.
//
// The CLI is /usr/bin/docker, Debian's docker.io 20.10 — the same package and release as
// dockerd, and what .ci/run installs. Some machines also have a newer CLI first on PATH
// (/usr/local/bin/docker 28); it would negotiate down to the 20.10 API, but the test should run
// the pairing a CI machine actually has.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, type RunOptions, type RunResult } from "./exec";
import { startDaemon, unixGet, type Daemon } from "./daemon";

export const DOCKER_CLI = "/usr/bin/docker";

export class Docker {
  private constructor(
    private daemon: Daemon,
    readonly socket: string,
    private env: NodeJS.ProcessEnv,
  ) {}

  static async start(): Promise<Docker> {
    // Short path: unix socket paths are limited to 108 bytes.
    const dir = mkdtempSync(join(tmpdir(), "cl-dockerd-"));
    const socket = join(dir, "docker.sock");
    for (const d of ["cli", "tmp"]) mkdirSync(join(dir, d));
    // Loopback registries are insecure by default; say so explicitly (docker then accepts the
    // harness's self-signed HTTPS, falling back to plain HTTP only if TLS fails).
    writeFileSync(join(dir, "daemon.json"), JSON.stringify({ "insecure-registries": ["127.0.0.0/8"], "log-level": "warn", features: { buildkit: false } }));
    const daemon = await startDaemon({
      name: "dockerd",
      cmd: "dockerd",
      args: [
        "--config-file", join(dir, "daemon.json"),
        "--data-root", join(dir, "data"),
        "--exec-root", join(dir, "exec"),
        "--pidfile", join(dir, "dockerd.pid"),
        "-H", `unix://${socket}`,
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
      ],
      dir,
      env: { PATH: process.env.PATH, TMPDIR: join(dir, "tmp") },
      ready: async () => (await unixGet(socket, "/_ping")) === 200,
    });
    const env = { PATH: process.env.PATH, HOME: dir, DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: join(dir, "cli"), DOCKER_BUILDKIT: "0" };
    return new Docker(daemon, socket, env);
  }

  get dir(): string {
    return this.daemon.dir;
  }

  /** Runs the docker CLI against this daemon. */
  run(args: string[], o: Omit<RunOptions, "env"> = {}): Promise<RunResult> {
    return run(DOCKER_CLI, args, { ...o, env: this.env });
  }

  /** `docker login` with the password on stdin (never on the command line). */
  async login(host: string, user: string, password: string, o: { allowFail?: boolean } = {}): Promise<RunResult> {
    const pw = join(this.dir, "tmp", "password");
    writeFileSync(pw, password, { mode: 0o600 });
    return this.run(["login", "--username", user, "--password-stdin", host], { stdinFile: pw, ...o });
  }

  /** `docker image inspect` of one image. */
  async inspect(ref: string): Promise<{ Id: string; RepoDigests: string[]; RootFS: { Layers: string[] } }> {
    return JSON.parse((await this.run(["image", "inspect", ref])).stdout)[0];
  }

  logs(): string {
    return this.daemon.logs();
  }

  stop(): Promise<void> {
    return this.daemon.stop();
  }
}
