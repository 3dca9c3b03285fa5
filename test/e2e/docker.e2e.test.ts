// docker (Debian docker.io 20.10: dockerd + CLI) against cloister in token mode: a private
// dockerd builds a tiny busybox image FROM scratch, logs in as a user created through the admin
// API, pushes into that user's namespace, pulls it back, is refused outside the namespace and
// without credentials, and pushes and pulls a 150 MB layer.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningRegistry } from "./helpers/registry";
import { needClients } from "./helpers/exec";
import { busyboxPath, DOCKER_V2S2 } from "./helpers/images";
import { writeDeterministicFile } from "./helpers/data";
import { Docker, DOCKER_CLI } from "./helpers/docker";
import { adminAuth, basic, startTokenRegistry } from "./helpers/token";
import { expectBlobsServed, expectNoTags, servedManifest } from "./helpers/checks";

const ALICE_PW = "alice-docker-password";
const LARGE = 150_000_000;

const clients = needClients("docker.e2e", [DOCKER_CLI, "dockerd", "busybox"]);
let reg: RunningRegistry;
let docker: Docker;
let work: string;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-docker-"));
  // Assign each as soon as it is up, so afterAll stops it even if the other fails to start.
  await Promise.all([startTokenRegistry({ alice: ALICE_PW, bob: "bob-docker-password" }).then((r) => (reg = r)), Docker.start().then((d) => (docker = d))]);
  await build("e2e/tiny:1", {});
});

afterAll(async () => {
  await docker?.stop();
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** `docker build` of FROM scratch + busybox (+ extra files); no network needed. */
async function build(tag: string, extra: Record<string, string>) {
  const ctx = join(work, `ctx-${tag.replace(/\W/g, "_")}`);
  mkdirSync(ctx);
  copyFileSync(busyboxPath(), join(ctx, "busybox"));
  const copies = Object.keys(extra).map((f) => `COPY ${f} /data/${f}\n`);
  for (const [f, src] of Object.entries(extra)) copyFileSync(src, join(ctx, f));
  writeFileSync(join(ctx, "Dockerfile"), `FROM scratch\nCOPY busybox /bin/busybox\n${copies.join("")}CMD ["/bin/busybox", "sh"]\n`);
  await docker.run(["build", "--quiet", "--tag", tag, ctx]);
  rmSync(ctx, { recursive: true, force: true });
}

/** docker push; returns the manifest digest docker reports. */
async function push(ref: string): Promise<string> {
  const r = await docker.run(["push", ref]);
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(r.stdout);
  expect(m, `docker push output: ${r.stdout}`).toBeTruthy();
  return m![1];
}

/** The manifest the registry serves for docker's digest: Docker v2s2, blobs intact. */
async function expectPushed(repo: string, tag: string, digest: string) {
  const m = await servedManifest(reg, repo, tag, digest, basic("alice", ALICE_PW));
  expect(m.mediaType).toBe(DOCKER_V2S2);
  await expectBlobsServed(reg, repo, [m.json.config!, ...m.json.layers!], basic("alice", ALICE_PW));
  return m.json as { config: { digest: string }; layers: { digest: string; size: number }[] };
}

describe.skipIf(clients.skip)("docker in token mode", () => {
  test("docker login: a wrong password is refused, the right one succeeds", async () => {
    const bad = await docker.login(reg.host, "alice", "not-her-password", { allowFail: true });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/unauthorized|401|incorrect username or password/i);
    const ok = await docker.login(reg.host, "alice", ALICE_PW);
    expect(ok.stdout).toMatch(/Login Succeeded/);
  });

  test("push into the user's namespace: registry holds docker's manifest, config and layers", async () => {
    const ref = `${reg.host}/alice/busybox:1`;
    await docker.run(["tag", "e2e/tiny:1", ref]);
    const digest = await push(ref);
    const m = await expectPushed("alice/busybox", "1", digest);
    // docker's image ID is the digest of its config: the registry got the very same config.
    const local = await docker.inspect("e2e/tiny:1");
    expect(m.config.digest).toBe(local.Id);
    expect(m.layers.length).toBe(local.RootFS.Layers.length);
  });

  test("pull after removing the local image gives back the same image", async () => {
    const ref = `${reg.host}/alice/busybox:1`;
    const id = (await docker.inspect(ref)).Id;
    await docker.run(["rmi", ref, "e2e/tiny:1"]);
    expect((await docker.run(["image", "inspect", ref], { allowFail: true })).code).not.toBe(0);
    const pulled = await docker.run(["pull", ref]);
    expect(pulled.stdout).toMatch(/Downloaded newer image|Pull complete/);
    const img = await docker.inspect(ref);
    expect(img.Id).toBe(id);
    expect(img.RepoDigests.some((d) => d.startsWith(`${reg.host}/alice/busybox@sha256:`))).toBe(true);
  });

  test("refused outside the user's namespace, and without credentials", async () => {
    const ref = `${reg.host}/bob/busybox:1`;
    await docker.run(["tag", `${reg.host}/alice/busybox:1`, ref]);
    const denied = await docker.run(["push", ref], { allowFail: true });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr + denied.stdout).toMatch(/denied|unauthorized|authentication required/i);
    await expectNoTags(reg, "bob/busybox", adminAuth());

    await docker.run(["logout", reg.host]);
    const anon = await docker.run(["pull", `${reg.host}/alice/busybox:1`], { allowFail: true });
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toMatch(/denied|unauthorized|authentication required/i);
    await docker.login(reg.host, "alice", ALICE_PW);
  });

  test("a 150 MB layer is pushed and pulled back", async () => {
    const file = await writeDeterministicFile(join(work, "large.bin"), LARGE, "docker-150mb");
    await build("e2e/large:1", { "large.bin": file.path });
    rmSync(file.path);
    const ref = `${reg.host}/alice/large:1`;
    await docker.run(["tag", "e2e/large:1", ref]);
    const t0 = Date.now();
    const digest = await push(ref);
    const t1 = Date.now();
    const m = await expectPushed("alice/large", "1", digest);
    const big = m.layers.find((l) => l.size >= LARGE);
    expect(big, `a layer of at least ${LARGE} bytes in ${JSON.stringify(m.layers)}`).toBeTruthy();

    const id = (await docker.inspect(ref)).Id;
    await docker.run(["rmi", ref, "e2e/large:1"]);
    const t2 = Date.now();
    await docker.run(["pull", ref]);
    const t3 = Date.now();
    expect((await docker.inspect(ref)).Id).toBe(id);
    const mbps = (ms: number) => (big!.size / 1e6 / (ms / 1000)).toFixed(1);
    console.log(`docker: ${big!.size} B layer pushed in ${t1 - t0} ms (${mbps(t1 - t0)} MB/s), pulled in ${t3 - t2} ms (${mbps(t3 - t2)} MB/s)`);
  });
});
