// The `cloister` operator commands against a real token-mode registry (wrangler dev): login with a
// refresh token stored 0600, every command group, exit codes, --json, --token/CLOISTER_TOKEN,
// shell completion, and snapshot → restore into a fresh registry on a copy of the R2 state, then
// skopeo pulls digest-identical images and tags, policies and users match.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { repoRoot, startRegistry, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients } from "./helpers/exec";
import { buildLayout, type Layout } from "./helpers/images";
import { request } from "./helpers/http";
import { ADMIN_PASSWORD } from "./helpers/token";

const ALICE_PW = "alice-cli-password";
const CLI = join(repoRoot, "bin/cloister.mjs");
const clients = needClients("cli-ops.e2e", ["skopeo", "umoci"]);

let work: string;
let stateA: string;
let stateB: string;
let regA: RunningRegistry | undefined;
let regB: RunningRegistry | undefined;
let layout: Layout;
let skopeo: Skopeo;

interface CliResult { code: number; stdout: string; stderr: string }

/** Runs the CLI with its config dir under `work` (or `xdg`) and the given server. */
function cli(args: string[], o: { stdin?: string; env?: Record<string, string>; server?: string | null; xdg?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: o.xdg ?? join(work, "config"), CLOISTER_INSECURE: "1", ...o.env };
    delete env.CLOISTER_TOKEN;
    if (o.env?.CLOISTER_TOKEN) env.CLOISTER_TOKEN = o.env.CLOISTER_TOKEN;
    const server = o.server === undefined ? regA?.url : o.server;
    if (server) env.CLOISTER_SERVER = server;
    else delete env.CLOISTER_SERVER;
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(o.stdin ?? "");
  });
}

async function ok(args: string[], o: Parameters<typeof cli>[1] = {}): Promise<CliResult> {
  const r = await cli(args, o);
  if (r.code !== 0) throw new Error(`cloister ${args.join(" ")} exited ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r;
}
const okJson = async (args: string[], o: Parameters<typeof cli>[1] = {}) => JSON.parse((await ok(["--json", ...args], o)).stdout);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-cli-ops-"));
  stateA = join(work, "state-a");
  stateB = join(work, "state-b");
  const [r, l] = await Promise.all([
    startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD }, persistDir: stateA }),
    buildLayout(join(work, "layout"), work),
  ]);
  regA = r;
  layout = l;
  skopeo = new Skopeo(regA);
});

afterAll(async () => {
  await regA?.stop();
  await regB?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(clients.skip)("cloister operator commands (token mode)", () => {
  test("without credentials the admin commands exit 3; usage errors exit 2", async () => {
    const r = await cli(["status"]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/cloister login/);
    expect((await cli(["user", "create"])).code).toBe(2);
    expect((await cli(["no-such-command"])).code).toBe(2);
    expect((await cli(["status"], { server: null })).code).toBe(2);
    // Nothing listening: a network error, exit 5.
    const down = await cli(["status"], { server: "http://127.0.0.1:9" });
    expect(down.code, down.stderr).toBe(5);
    expect(down.stderr).toMatch(/connection refused/);
  });

  test("login stores a refresh token with mode 0600; a wrong password exits 3", async () => {
    const bad = await cli(["login", "-u", "admin", "--password-stdin"], { stdin: "wrong-password\n" });
    expect(bad.code, bad.stderr).toBe(3);
    expect(existsSync(join(work, "config/cloister/config.json"))).toBe(false);
    const r = await okJson(["login", "-u", "admin", "--password-stdin"], { stdin: ADMIN_PASSWORD + "\n" });
    expect(r).toMatchObject({ server: regA!.url, user: "admin", admin: true, saved: true });
    const file = join(work, "config/cloister/config.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const cfg = JSON.parse(readFileSync(file, "utf8"));
    expect(cfg.current).toBe(regA!.url);
    expect(cfg.servers[regA!.url].refreshToken).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(readFileSync(file, "utf8")).not.toContain(ADMIN_PASSWORD);
    // With the stored token, no --server is needed either (the last login is the default).
    const st = await okJson(["status"], { server: null });
    expect(st.principal).toMatchObject({ kind: "user", name: "admin" });
    expect(st.gc.state).toBe("idle");
    expect((await ok(["status"])).stdout).toMatch(/signed in as/);
  });

  test("--token and CLOISTER_TOKEN work instead of the stored login", async () => {
    const token = JSON.parse(readFileSync(join(work, "config/cloister/config.json"), "utf8")).servers[regA!.url].refreshToken;
    const empty = join(work, "empty-config");
    expect((await cli(["user", "list"], { xdg: empty })).code).toBe(3);
    expect((await okJson(["user", "list"], { xdg: empty, env: { CLOISTER_TOKEN: token } })).users).toEqual([]);
    expect((await okJson(["--token", token, "user", "list"], { xdg: empty })).users).toEqual([]);
    expect((await cli(["--token", "not-a-token", "user", "list"], { xdg: empty })).code).toBe(3);
  });

  test("users: create, list, show, passwd, delete; errors exit 4 and 6", async () => {
    await ok(["user", "create", "alice", "--password-stdin"], { stdin: ALICE_PW + "\n" });
    await ok(["user", "create", "bob", "--password-stdin"], { stdin: "bob-cli-password\n" });
    expect((await okJson(["user", "list"])).users.map((u: { name: string }) => u.name)).toEqual(["alice", "bob"]);
    expect((await ok(["user", "list"])).stdout).toMatch(/^NAME\s+CREATED\s+UPDATED\nalice\s/);
    expect((await okJson(["user", "show", "alice"])).name).toBe("alice");
    const dup = await cli(["user", "create", "alice", "--password-stdin"], { stdin: ALICE_PW + "\n" });
    expect(dup.code, dup.stderr).toBe(6);
    const missing = await cli(["--json", "user", "show", "nobody"]);
    expect(missing.code).toBe(4);
    expect(JSON.parse(missing.stderr.split("\n")[0])).toMatchObject({ error: { status: 404, code: "NOT_FOUND", exitCode: 4 } });
    // A user who is not an admin signs in, but the admin commands are refused with exit 3.
    const aliceConfig = join(work, "alice-config");
    const al = await okJson(["login", "-u", "alice", "--password-stdin"], { xdg: aliceConfig, stdin: ALICE_PW + "\n" });
    expect(al).toMatchObject({ user: "alice", admin: false });
    const refused = await cli(["user", "list"], { xdg: aliceConfig });
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toMatch(/403/);
    // logout forgets the token: the config keeps no entry for the server, and no default server.
    expect(await okJson(["logout"], { xdg: aliceConfig })).toEqual({ server: regA!.url, removed: true });
    const after = JSON.parse(readFileSync(join(aliceConfig, "cloister/config.json"), "utf8"));
    expect(after).toEqual({ servers: {}, current: null });
    expect((await cli(["status"], { xdg: aliceConfig, server: null })).code).toBe(2);
    await ok(["user", "passwd", "bob", "--password-stdin"], { stdin: "bob-new-password\n" });
    const signin = await request(regA!, "GET", "/token?scope=repository:bob/x:pull", { headers: { Authorization: `Basic ${Buffer.from("bob:bob-new-password").toString("base64")}` } });
    expect(signin.status).toBe(200);
    await ok(["user", "delete", "bob"]);
    expect((await cli(["user", "show", "bob"])).code).toBe(4);
  });

  test("robots: the secret is printed once, alone on stdout, and it works", async () => {
    const r = await ok(["robot", "create", "alice", "ci", "--access", "alice/**:pull,push", "--expires-in", "30d", "--description", "CI"]);
    const secret = r.stdout.trim();
    expect(r.stdout).toBe(secret + "\n");
    expect(secret).toMatch(/^cloister_[\w-]{20,}$/);
    expect(r.stderr).toMatch(/shown only this once/);
    const signin = await request(regA!, "GET", "/token?scope=repository:alice/app:pull", { headers: { Authorization: `Basic ${Buffer.from(`robot$alice+ci:${secret}`).toString("base64")}` } });
    expect(signin.status).toBe(200);
    const list = await okJson(["robot", "list", "--owner", "alice"]);
    expect(list.robots.map((x: { account: string }) => x.account)).toEqual(["robot$alice+ci"]);
    expect(JSON.stringify(list)).not.toContain(secret);
    await ok(["robot", "create", "alice", "tmp"]);
    await ok(["robot", "delete", "robot$alice+tmp"]);
    expect((await cli(["robot", "delete", "robot$alice+tmp"])).code).toBe(4);
  });

  test("webhooks: create (secret from stdin, never shown), a delivery to a local receiver, the log, redeliver, disable, delete", async () => {
    const received: { action: string; id: string; signature: string }[] = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        const { event } = JSON.parse(body) as { event: { id: string; action: string } };
        received.push({ action: event.action, id: event.id, signature: String(req.headers["cloister-signature"] ?? "") });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const secret = "cli-webhook-secret-0123456789";
      const created = await okJson(["webhook", "create", url, "--event", "policy.create", "--secret-stdin", "--description", "cli e2e"], { stdin: secret + "\n" });
      expect(created).toMatchObject({ url, events: ["policy.create"], enabled: true, description: "cli e2e" });
      expect(JSON.stringify(await okJson(["webhook", "list"]))).not.toContain(secret);
      expect((await ok(["webhook", "list"])).stdout).toMatch(/^ID\s+URL/);
      await ok(["policy", "create", "-"], { stdin: JSON.stringify({ id: "hooked", effect: "deny", subjects: ["user:nobody"], actions: ["push"], repositories: ["hooked/**"] }) });
      const deadline = Date.now() + 30_000;
      while (!received.some((r) => r.action === "policy.create") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(received.map((r) => r.action)).toEqual(["policy.create"]);
      expect(received[0].signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
      const log = await okJson(["webhook", "deliveries", created.id]);
      expect(log.deliveries).toHaveLength(1);
      expect(log.deliveries[0]).toMatchObject({ action: "policy.create", state: "delivered", attempts: 1, lastStatus: 204 });
      const again = await okJson(["webhook", "redeliver", created.id, log.deliveries[0].id]);
      expect(again.redeliveries).toBe(1);
      while (received.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(received.map((r) => r.id)).toEqual([received[0].id, received[0].id]); // the same event, at least once
      expect((await okJson(["webhook", "disable", created.id])).enabled).toBe(false);
      await ok(["webhook", "delete", created.id]);
      expect((await cli(["webhook", "show", created.id])).code).toBe(4);
      await ok(["policy", "delete", "hooked"]);
    } finally {
      server.close();
    }
  });

  test("policy: create from a file, edit in $EDITOR, explain, delete", async () => {
    const file = join(work, "rule.json");
    writeFileSync(file, JSON.stringify({ id: "public-alice", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["alice/old"] }));
    await ok(["policy", "create", file]);
    const editor = join(work, "editor.sh");
    writeFileSync(editor, `#!/bin/sh\nsed -i 's#alice/old#alice/app#' "$1"\n`);
    chmodSync(editor, 0o755);
    await ok(["policy", "edit", "public-alice"], { env: { EDITOR: editor, VISUAL: "" } });
    expect((await okJson(["policy", "show", "public-alice"])).repositories).toEqual(["alice/app"]);
    // An editor that changes nothing changes nothing.
    expect(await okJson(["policy", "edit", "public-alice"], { env: { EDITOR: "true", VISUAL: "" } })).toEqual({ id: "public-alice", changed: false });
    const yes = await okJson(["policy", "explain", "--subject", "anonymous", "--action", "pull", "--repository", "alice/app"]);
    expect(yes.allowed).toBe(true);
    const no = await okJson(["policy", "explain", "--subject", "anonymous", "--action", "push", "--repository", "alice/app"]);
    expect(no.allowed).toBe(false);
    writeFileSync(join(work, "tmp-rule.json"), JSON.stringify({ id: "tmp", effect: "deny", subjects: ["user:alice"], actions: ["delete"], repositories: ["alice/**"] }));
    await ok(["policy", "create", "-"], { stdin: readFileSync(join(work, "tmp-rule.json"), "utf8") });
    expect((await okJson(["policy", "list"])).rules.map((r: { id: string }) => r.id)).toEqual(["public-alice", "robot:alice+ci:0", "tmp"]);
    await ok(["policy", "delete", "tmp"]);
    expect((await cli(["policy", "show", "tmp"])).code).toBe(4);
    expect((await cli(["policy", "create", "-"], { stdin: "{not json" })).code).toBe(2);
    const bad = await cli(["policy", "create", "-"], { stdin: '{"id":"x","effect":"maybe"}' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/400 BAD_REQUEST/);
  });

  test("repositories and tags after a skopeo push; tag delete; usage", async () => {
    const creds = ["--dest-creds", `alice:${ALICE_PW}`];
    await skopeo.run("copy", [...creds, "--preserve-digests", `oci:${layout.dir}:amd64`, skopeo.ref("alice/app:1")]);
    await skopeo.run("copy", [...creds, "--preserve-digests", `oci:${layout.dir}:amd64`, skopeo.ref("alice/app:2")]);
    await skopeo.run("copy", [...creds, "--preserve-digests", `oci:${layout.dir}:arm64`, skopeo.ref("alice/other:x")]);
    expect((await okJson(["repo", "list"])).repositories).toEqual(["alice/app", "alice/other"]);
    expect((await ok(["repo", "list"])).stdout).toBe("REPOSITORY\nalice/app\nalice/other\n");
    expect((await okJson(["tag", "list", "alice/app"])).tags).toEqual(["1", "2"]);
    await ok(["tag", "delete", "alice/app", "2"]);
    expect((await okJson(["tag", "list", "alice/app"])).tags).toEqual(["1"]);
    expect((await cli(["tag", "delete", "alice/app", "2"])).code).toBe(4);
    const show = await okJson(["repo", "show", "alice/app"]);
    expect(show).toMatchObject({ repository: "alice/app", manifests: 1, tags: 1, tagNames: ["1"] });
    expect(show.blobs).toBe(1 + layout.images.amd64.manifest.layers.length);
    const usage = await okJson(["usage"]);
    expect(usage.repositories.map((r: { repository: string }) => r.repository)).toEqual(["alice/app", "alice/other"]);
    expect(usage.physicalBytes).toBeGreaterThan(0);
    expect((await okJson(["usage", "alice/other"])).tags).toBe(1);
    // repo delete wants --yes, then removes every manifest and tag.
    expect((await cli(["repo", "delete", "alice/other"])).code).toBe(2);
    expect(await okJson(["repo", "delete", "alice/other", "--yes"])).toMatchObject({ manifestsDeleted: 1 });
    expect((await okJson(["tag", "list", "alice/other"])).tags).toEqual([]);
  });

  test("gc run --dry-run --wait, gc reconcile, gc status", async () => {
    const run = await okJson(["gc", "run", "--dry-run", "--wait"]);
    expect(run).toMatchObject({ state: "done", dryRun: true, reconcile: false });
    const rec = await okJson(["gc", "reconcile", "--dry-run", "--wait"]);
    expect(rec).toMatchObject({ state: "done", reconcile: true });
    const st = await okJson(["gc", "status"]);
    expect(st.state).toBe("idle");
    expect(st.history.map((r: { id: number }) => r.id)).toEqual([rec.id, run.id]);
    expect((await ok(["gc", "status"])).stdout).toMatch(/^ID\s+STATE/);
  });

  test("audit: tail, query, verify, and tail -f prints new events", async () => {
    const tail = (await ok(["--json", "audit", "tail", "-n", "5"])).stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(tail.length).toBe(5);
    expect(Date.parse(tail[0].time)).toBeLessThanOrEqual(Date.parse(tail[4].time));
    const q = await okJson(["audit", "query", "--action", "user.create"]);
    expect(q.events.map((e: { details: { user: string } }) => e.details.user).sort()).toEqual(["alice", "bob"]);
    const v = await okJson(["audit", "verify"]);
    expect(v.ok).toBe(true);
    // Follow: new user.create events appear while the command runs.
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: join(work, "config"), CLOISTER_INSECURE: "1", CLOISTER_SERVER: regA!.url };
    const child = spawn(process.execPath, [CLI, "--json", "audit", "tail", "-n", "1", "-f", "--action", "user.create"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    try {
      let seen = false;
      for (let i = 0; i < 8 && !seen; i++) {
        await new Promise((r) => setTimeout(r, 1500));
        await ok(["user", "create", `follow${i}`, "--password-stdin"], { stdin: "follow-password\n" });
        const deadline = Date.now() + 3000;
        while (Date.now() < deadline && !(seen = out.includes(`"follow${i}"`))) await new Promise((r) => setTimeout(r, 100));
      }
      expect(seen, out).toBe(true);
    } finally {
      child.kill("SIGTERM");
    }
  });

  test("completion: bash completes commands and options from the command tree", async () => {
    const script = join(work, "completion.bash");
    writeFileSync(script, (await ok(["completion", "bash"], { server: null })).stdout);
    const complete = (words: string[]) => {
      const r = spawnSync("bash", ["-c", `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _cloister; echo "\${COMPREPLY[*]}"`], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim().split(/\s+/);
    };
    expect(complete(["cloister", "us"])).toEqual(["user", "usage"]);
    expect(complete(["cloister", "--json", "gc", ""])).toEqual(["run", "reconcile", "status"]);
    expect(complete(["cloister", "gc", "run", "--d"])).toEqual(["--dry-run"]);
    expect(complete(["cloister", "robot", "create", "--acc"])).toEqual(["--access"]);
    const zsh = (await ok(["completion", "zsh"], { server: null })).stdout;
    expect(zsh).toMatch(/^#compdef cloister/);
    expect(zsh).toContain("bashcompinit");
    expect((await cli(["completion", "fish"], { server: null })).code).toBe(2);
  });

  test("snapshot, then restore into a fresh registry on a copy of the bucket: digest-identical pulls", async () => {
    const file = join(work, "snap.ndjson");
    const s = await okJson(["snapshot", file]);
    expect(s.counts).toMatchObject({ rules: 2, robots: 1, repositories: 2 });
    expect(s.counts.users).toBeGreaterThanOrEqual(2); // alice and the audit test's users
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8")).not.toMatch(/pbkdf2|cloister_/);
    expect((await cli(["snapshot", file])).code).toBe(2); // exists: --force needed
    const before = {
      repos: (await okJson(["repo", "list"])).repositories,
      tags: (await okJson(["tag", "list", "alice/app"])).tags,
      rules: (await okJson(["policy", "list"])).rules.filter((r: { robot: string | null }) => !r.robot),
      users: (await okJson(["user", "list"])).users,
    };
    // A truncated file is refused before anything is written.
    const cut = join(work, "cut.ndjson");
    writeFileSync(cut, readFileSync(file, "utf8").split("\n").slice(0, -2).join("\n") + "\n");

    // The old registry goes; its Durable Objects with it. The new one starts on an empty bucket first.
    await regA!.stop();
    regA = undefined;
    regB = await startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD }, persistDir: stateB });
    const on = { server: regB.url };
    await ok(["login", "-u", "admin", "--password-stdin"], { ...on, stdin: ADMIN_PASSWORD + "\n" });
    const truncated = await cli(["restore", cut], on);
    expect(truncated.code).toBe(1);
    expect(truncated.stderr).toMatch(/truncated/);
    expect((await okJson(["status"], on)).restore).toBeNull();
    // Without the bytes, nothing that needs them is restored, and the restore stays open.
    const partial = await cli(["--json", "restore", file], on);
    expect(partial.code, partial.stderr).toBe(1);
    expect(partial.stderr).toMatch(/restore stays open.*--resume/);
    const partialOut = JSON.parse(partial.stdout);
    expect(partialOut.blobs).toBe(0);
    expect(partialOut.missingBytes.length).toBe(s.counts.blobs);
    expect((await okJson(["status"], on)).restore.state).toBe("running");
    expect((await okJson(["tag", "list", "alice/app"], on)).tags).toEqual([]);
    // The operator copies the bucket (here: the old R2 state), then resumes.
    await regB.stop();
    rmSync(join(stateB, "v3", "r2"), { recursive: true, force: true });
    cpSync(join(stateA, "v3", "r2"), join(stateB, "v3", "r2"), { recursive: true });
    regB = await startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD }, persistDir: stateB });
    on.server = regB.url; // a new port: sign in there (the stored keys and accounts survived the restart)
    await ok(["login", "-u", "admin", "--password-stdin"], { ...on, stdin: ADMIN_PASSWORD + "\n" });
    expect((await cli(["restore", file], on)).code).toBe(6); // running: only --resume continues it

    const r = await okJson(["restore", "--resume", file], on);
    expect(r.missingBytes).toEqual([]);
    expect(r.restore.state).toBe("done");
    expect(r.robotsNotRestored).toEqual(["robot$alice+ci"]);
    expect((await okJson(["repo", "list"], on)).repositories).toEqual(before.repos);
    expect((await okJson(["tag", "list", "alice/app"], on)).tags).toEqual(before.tags);
    // Rules and users come back as they were, times included (users without their passwords).
    expect((await okJson(["policy", "list"], on)).rules).toEqual(before.rules);
    expect((await okJson(["user", "list"], on)).users).toEqual(before.users);
    // A second restore is refused: the registry is not empty any more.
    expect((await cli(["restore", file], on)).code).toBe(6);

    // Restored users have no password until the admin sets one; then they pull what they pushed.
    await ok(["user", "passwd", "alice", "--password-stdin"], { ...on, stdin: ALICE_PW + "\n" });
    const skopeoB = new Skopeo(regB);
    try {
      const raw = await skopeoB.run("inspect", ["--raw", "--creds", `alice:${ALICE_PW}`, skopeoB.ref("alice/app:1")]);
      expect(raw.stdout.trim()).toBe(layout.images.amd64.manifestBytes.toString("utf8").trim());
      const out = join(work, "pulled");
      await skopeoB.run("copy", ["--src-creds", `alice:${ALICE_PW}`, skopeoB.ref("alice/app:1"), `oci:${out}:1`]);
      const idx = JSON.parse(readFileSync(join(out, "index.json"), "utf8"));
      expect(idx.manifests[0].digest).toBe(layout.images.amd64.manifestDigest);
      for (const l of layout.images.amd64.manifest.layers) expect(existsSync(join(out, "blobs", ...l.digest.split(":")))).toBe(true);
      // The public rule came back too: anonymous pull works.
      await skopeoB.run("inspect", ["--raw", "--no-creds", skopeoB.ref("alice/app:1")]);
    } finally {
      skopeoB.cleanup();
    }
  });
});
