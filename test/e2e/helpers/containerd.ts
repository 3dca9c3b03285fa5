// A private containerd 1.6 for one e2e file (runs as root): root, state, opt and both sockets
// in a temp dir, the CRI plugin (and snapshotters that need kernel features) disabled, no debug
// or metrics listener. `ctr` talks to it over that socket only; images use the `native`
// snapshotter (plain copies, no mounts).
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, type RunOptions, type RunResult } from "./exec";
import { startDaemon, type Daemon } from "./daemon";

export class Containerd {
  private constructor(
    private daemon: Daemon,
    readonly socket: string,
  ) {}

  static async start(): Promise<Containerd> {
    const dir = mkdtempSync(join(tmpdir(), "cl-containerd-"));
    const socket = join(dir, "containerd.sock");
    mkdirSync(join(dir, "tmp"));
    const disabled = ["io.containerd.grpc.v1.cri", ...["btrfs", "zfs", "devmapper", "aufs"].map((s) => `io.containerd.snapshotter.v1.${s}`)];
    writeFileSync(
      join(dir, "config.toml"),
      [
        "version = 2",
        `root = "${join(dir, "root")}"`,
        `state = "${join(dir, "state")}"`,
        `disabled_plugins = ${JSON.stringify(disabled)}`,
        "[grpc]",
        `  address = "${socket}"`,
        "[ttrpc]",
        `  address = "${socket}.ttrpc"`,
        "[debug]",
        '  address = ""',
        '  level = "warn"',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${join(dir, "opt")}"`,
        "",
      ].join("\n"),
    );
    const daemon = await startDaemon({
      name: "containerd",
      cmd: "containerd",
      args: ["--config", join(dir, "config.toml")],
      dir,
      env: { PATH: process.env.PATH, TMPDIR: join(dir, "tmp") },
      ready: async () => existsSync(socket) && (await run("ctr", ["--address", socket, "version"], { allowFail: true, timeoutMs: 5000 })).code === 0,
    });
    return new Containerd(daemon, socket);
  }

  get dir(): string {
    return this.daemon.dir;
  }

  /** `ctr --address SOCK <args>` */
  ctr(args: string[], o: Omit<RunOptions, "env"> = {}): Promise<RunResult> {
    return run("ctr", ["--address", this.socket, ...args], { ...o, env: { PATH: process.env.PATH, HOME: this.dir, TMPDIR: join(this.dir, "tmp") } });
  }

  /** `ctr images ls` as {ref → digest}. */
  async images(): Promise<Record<string, string>> {
    const out = (await this.ctr(["images", "ls"])).stdout.trim().split("\n").slice(1);
    return Object.fromEntries(out.map((l) => l.split(/\s+/)).map(([ref, , digest]) => [ref, digest]));
  }

  /**
   * A hosts directory (`--hosts-dir`) for `host` that speaks HTTPS without verifying the
   * certificate: the ctr recipe for a registry with a self-signed certificate.
   */
  hostsDir(host: string): string {
    const d = join(this.dir, "certs.d");
    mkdirSync(join(d, host), { recursive: true });
    writeFileSync(
      join(d, host, "hosts.toml"),
      // containerd 1.6 rejects a hosts.toml without a [host] table ("invalid `host` tree").
      `server = "https://${host}"\nskip_verify = true\n\n[host."https://${host}"]\n  capabilities = ["pull", "resolve", "push"]\n  skip_verify = true\n`,
    );
    return d;
  }

  logs(): string {
    return this.daemon.logs();
  }

  stop(): Promise<void> {
    return this.daemon.stop();
  }
}
