// podman (vfs storage, private root/runroot, cgroupfs, file events) against cloister in token
// mode: the busybox image built with umoci is pulled into podman from the OCI layout, `podman
// login` signs in as a user created through the admin API, the image is pushed into the user's
// namespace, removed and pulled back, and a push outside the namespace is refused.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningRegistry } from "./helpers/registry";
import { needClients } from "./helpers/exec";
import { buildLayout, type Layout } from "./helpers/images";
import { StorageClient } from "./helpers/podman";
import { adminAuth, basic, startTokenRegistry } from "./helpers/token";
import { expectBlobsServed, expectNoTags, servedManifest } from "./helpers/checks";

const ALICE_PW = "alice-podman-password";
const clients = needClients("podman.e2e", ["podman", "umoci", "busybox"]);
let reg: RunningRegistry;
let podman: StorageClient;
let work: string;
let layout: Layout;
let imageId: string;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  // Lower-case path: podman names an image pulled from oci:<path> after the path.
  work = join(tmpdir(), `cloister-e2e-podman-${randomBytes(6).toString("hex")}`);
  mkdirSync(work);
  podman = new StorageClient("podman");
  [reg, layout] = await Promise.all([startTokenRegistry({ alice: ALICE_PW, bob: "bob-podman-password" }), buildLayout(join(work, "layout"), work)]);
  imageId = (await podman.run("pull", ["--quiet", `oci:${layout.dir}:amd64`])).stdout.trim();
});

afterAll(async () => {
  await reg?.stop();
  await podman?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(clients.skip)("podman in token mode", () => {
  test("the umoci image is in podman's private storage under its config digest", () => {
    // podman's image ID is the hex of the config digest.
    expect(`sha256:${imageId}`).toBe(layout.images.amd64.manifest.config.digest);
  });

  test("podman login: a wrong password is refused, the right one succeeds", async () => {
    const bad = await podman.login(reg.host, "alice", "not-her-password", { allowFail: true });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/invalid username\/password|unauthorized|401/i);
    const ok = await podman.login(reg.host, "alice", ALICE_PW);
    expect(ok.stdout).toMatch(/Login Succeeded/i);
  });

  test("push into the user's namespace: the registry serves podman's manifest and blobs", async () => {
    const df = join(work, "digest");
    await podman.run("push", ["--tls-verify=false", "--digestfile", df, imageId, `docker://${reg.host}/alice/busybox:1`]);
    const digest = readFileSync(df, "utf8").trim();
    const m = await servedManifest(reg, "alice/busybox", "1", digest, basic("alice", ALICE_PW));
    expect(m.json.config!.digest).toBe(`sha256:${imageId}`);
    expect(m.json.layers!.length).toBe(layout.images.amd64.manifest.layers.length);
    await expectBlobsServed(reg, "alice/busybox", [m.json.config!, ...m.json.layers!], basic("alice", ALICE_PW));
  });

  test("pull after removing the local image gives back the same image", async () => {
    await podman.run("rmi", ["--all", "--force"]);
    expect((await podman.run("image", ["exists", imageId], { allowFail: true })).code).not.toBe(0);
    const pulled = await podman.run("pull", ["--quiet", "--tls-verify=false", `${reg.host}/alice/busybox:1`]);
    expect(pulled.stdout.trim()).toBe(imageId);
    const info = JSON.parse((await podman.run("image", ["inspect", `${reg.host}/alice/busybox:1`])).stdout)[0];
    expect(info.Id).toBe(imageId);
    expect(info.Architecture).toBe("amd64");
  });

  test("a push outside the user's namespace is refused and leaves nothing", async () => {
    const r = await podman.run("push", ["--tls-verify=false", imageId, `docker://${reg.host}/bob/busybox:1`], { allowFail: true });
    expect(r.code).not.toBe(0);
    // podman 4.3 reports the refusal as "error parsing HTTP 401 response body: unexpected end of
    // JSON input" when the 401 comes on a HEAD (no body allowed); any of these is the refusal.
    expect(r.stderr).toMatch(/denied|unauthorized|authentication required|401/i);
    await expectNoTags(reg, "bob/busybox", adminAuth());
    await podman.run("logout", [reg.host]);
    const anon = await podman.run("pull", ["--tls-verify=false", `${reg.host}/alice/busybox:1`], { allowFail: true });
    expect(anon.code).not.toBe(0);
  });
});
