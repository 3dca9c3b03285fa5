// containerd's ctr (a client independent of containers/image and docker) against cloister in
// token mode: a private containerd imports the umoci two-platform OCI index, `ctr images push
// --user` pushes the index with both platforms into the user's namespace, and `ctr images pull
// --user --all-platforms` pulls it back into an empty store. ctr reaches the self-signed HTTPS
// port through a hosts.toml with skip_verify (--hosts-dir): without one, ctr 1.6 talks plain
// HTTP to a loopback host. Other namespaces, wrong passwords and anonymous pulls are refused.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningRegistry } from "./helpers/registry";
import { needClients, run } from "./helpers/exec";
import { buildLayout, OCI_INDEX, type Layout } from "./helpers/images";
import { Containerd } from "./helpers/containerd";
import { adminAuth, basic, startTokenRegistry } from "./helpers/token";
import { expectBlobsServed, servedManifest, tagsOf } from "./helpers/checks";

const ALICE_PW = "alice-ctr-password";
const BOB_PW = "bob-ctr-password";
const LOCAL = "e2e/local";
const clients = needClients("containerd.e2e", ["containerd", "ctr", "umoci", "busybox", "tar"]);
let reg: RunningRegistry;
let containerd: Containerd;
let work: string;
let layout: Layout;
let hosts: string[];

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-containerd-"));
  // Assign each as soon as it is up, so afterAll stops it even if another fails to start.
  await Promise.all([
    startTokenRegistry({ alice: ALICE_PW, bob: BOB_PW }).then((r) => (reg = r)),
    Containerd.start().then((c) => (containerd = c)),
    buildLayout(join(work, "layout"), work).then((l) => (layout = l)),
  ]);
  hosts = ["--hosts-dir", containerd.hostsDir(reg.host)];
});

afterAll(async () => {
  await containerd?.stop();
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const remote = (repo: string) => `${reg.host}/${repo}`;
/** Every blob (configs, layers) of both platform images. */
const allBlobs = () => Object.values(layout.images).flatMap((i) => [i.manifest.config, ...i.manifest.layers]);

describe.skipIf(clients.skip)("containerd ctr in token mode", () => {
  test("ctr imports the two-platform index built with umoci", async () => {
    const tarball = join(work, "layout.tar");
    await run("tar", ["-C", layout.dir, "-cf", tarball, "."]);
    await containerd.ctr(["images", "import", "--base-name", LOCAL, "--all-platforms", "--no-unpack", tarball]);
    const images = await containerd.images();
    expect(images[`${LOCAL}:multi`]).toBe(layout.index.digest);
    expect(images[`${LOCAL}:amd64`]).toBe(layout.images.amd64.manifestDigest);
  });

  test("ctr push --user pushes the index and both platforms into the user's namespace", async () => {
    await containerd.ctr(["images", "push", ...hosts, "--user", `alice:${ALICE_PW}`, remote("alice/multi:1"), `${LOCAL}:multi`]);
    const auth = basic("alice", ALICE_PW);
    const idx = await servedManifest(reg, "alice/multi", "1", layout.index.digest, auth);
    expect(idx.mediaType).toBe(OCI_INDEX);
    expect(idx.bytes.equals(layout.index.bytes)).toBe(true);
    for (const img of Object.values(layout.images)) {
      const m = await servedManifest(reg, "alice/multi", img.manifestDigest, img.manifestDigest, auth);
      expect(m.bytes.equals(img.manifestBytes)).toBe(true);
    }
    await expectBlobsServed(reg, "alice/multi", allBlobs(), auth);
  });

  test("ctr pull --user --all-platforms restores the index into an empty store", async () => {
    await containerd.ctr(["images", "rm", "--sync", ...Object.keys(await containerd.images())]);
    expect(await containerd.images()).toEqual({});
    const before = (await containerd.ctr(["content", "ls", "--quiet"])).stdout;
    for (const b of allBlobs()) expect(before).not.toContain(b.digest);

    await containerd.ctr(["images", "pull", ...hosts, "--user", `alice:${ALICE_PW}`, "--all-platforms", "--snapshotter", "native", remote("alice/multi:1")]);
    expect((await containerd.images())[remote("alice/multi:1")]).toBe(layout.index.digest);
    const content = (await containerd.ctr(["content", "ls", "--quiet"])).stdout;
    for (const d of [layout.index.digest, ...Object.values(layout.images).map((i) => i.manifestDigest), ...allBlobs().map((b) => b.digest)]) expect(content).toContain(d);
    // Fetched content is verified against its digest; `images check` also wants every platform's blobs present.
    const check = (await containerd.ctr(["images", "check"])).stdout;
    expect(check).toMatch(/complete \(\d+\/\d+\)/);
    expect(check).not.toMatch(/incomplete|missing/);
  });

  test("another user's push, a wrong password and an anonymous pull are refused", async () => {
    const bob = await containerd.ctr(["images", "push", ...hosts, "--user", `bob:${BOB_PW}`, remote("alice/multi:bob"), remote("alice/multi:1")], { allowFail: true });
    expect(bob.code).not.toBe(0);
    expect(bob.stderr).toMatch(/denied|unauthorized|authorization failed|401|403/i);
    const wrong = await containerd.ctr(["images", "pull", ...hosts, "--user", "alice:not-her-password", remote("alice/multi:1")], { allowFail: true });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/unauthorized|401/i);
    expect(wrong.stderr).not.toMatch(/x509/);
    const anon = await containerd.ctr(["images", "pull", ...hosts, remote("alice/multi:1")], { allowFail: true });
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toMatch(/denied|unauthorized|insufficient_scope|401/i);
    // bob may push into his own namespace.
    await containerd.ctr(["images", "push", ...hosts, "--user", `bob:${BOB_PW}`, remote("bob/multi:1"), remote("alice/multi:1")]);
    await servedManifest(reg, "bob/multi", "1", layout.index.digest, basic("bob", BOB_PW));
    expect(await tagsOf(reg, "alice/multi", adminAuth())).toEqual(["1"]);
  });
});

