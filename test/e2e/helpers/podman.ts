// podman and buildah with private storage: vfs driver (no overlay mounts, works in any
// container), --root/--runroot in a temp dir, cgroupfs and file events for podman, private
// storage.conf/containers.conf/registries.conf/policy/auth file (containersSandbox) and root's
// shared blob-info cache hidden (runWithoutSharedCache), so nothing under /var/lib/containers,
// /run/containers or ~/.config is read or written.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { containersSandbox, runWithoutSharedCache, type ContainersSandbox, type RunOptions, type RunResult } from "./exec";
import { unmountAndRemove } from "./daemon";

/** Subcommands that resolve a signature policy (pointed at the sandbox's accept-anything one). */
const POLICY_SUBCOMMANDS = new Set(["pull", "push", "from"]);

export class StorageClient {
  private sb: ContainersSandbox;
  private global: string[];

  constructor(readonly cmd: "podman" | "buildah") {
    this.sb = containersSandbox(`cloister-e2e-${cmd}-`);
    const d = this.sb.dir;
    const root = join(d, "storage");
    const runroot = join(d, "runroot");
    writeFileSync(join(d, "storage.conf"), `[storage]\ndriver = "vfs"\ngraphroot = "${root}"\nrunroot = "${runroot}"\n`);
    writeFileSync(join(d, "containers.conf"), `[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n`);
    this.sb.env.CONTAINERS_STORAGE_CONF = join(d, "storage.conf");
    this.sb.env.CONTAINERS_CONF = join(d, "containers.conf");
    this.global = ["--root", root, "--runroot", runroot, "--storage-driver", "vfs"];
    if (cmd === "podman") this.global.push("--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", join(d, "libpod"));
  }

  get dir(): string {
    return this.sb.dir;
  }

  /** `<cmd> <private storage flags> <sub> [--signature-policy P] <args>` */
  run(sub: string, args: string[], o: Omit<RunOptions, "env"> = {}): Promise<RunResult> {
    const policy = POLICY_SUBCOMMANDS.has(sub) ? ["--signature-policy", this.sb.policy] : [];
    return runWithoutSharedCache(this.cmd, [...this.global, sub, ...policy, ...args], { ...o, env: this.sb.env });
  }

  /** `login --tls-verify=false` with the password on stdin. */
  login(host: string, user: string, password: string, o: { allowFail?: boolean } = {}): Promise<RunResult> {
    const pw = join(this.sb.dir, "tmp", "password");
    writeFileSync(pw, password, { mode: 0o600 });
    return this.run("login", ["--tls-verify=false", "--username", user, "--password-stdin", host], { stdinFile: pw, ...o });
  }

  cleanup(): Promise<void> {
    return unmountAndRemove(this.sb.dir);
  }
}
