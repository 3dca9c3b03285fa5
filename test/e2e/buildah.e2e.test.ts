// buildah (vfs storage, private root/runroot) against cloister in token mode: an image built
// from scratch with busybox (`buildah from scratch`, `copy`, `config`, `commit`; nothing is run),
// pushed with --creds into the user's namespace as OCI and as Docker v2s2, and refused outside it.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningRegistry } from "./helpers/registry";
import { request } from "./helpers/http";
import { needClients } from "./helpers/exec";
import { busyboxPath, DOCKER_V2S2, OCI_MANIFEST } from "./helpers/images";
import { StorageClient } from "./helpers/podman";
import { adminAuth, basic, startTokenRegistry } from "./helpers/token";
import { expectBlobsServed, expectNoTags, servedManifest, tagsOf } from "./helpers/checks";

const ALICE_PW = "alice-buildah-password";
const clients = needClients("buildah.e2e", ["buildah", "busybox"]);
let reg: RunningRegistry;
let buildah: StorageClient;
let work: string;
let imageId: string;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-buildah-"));
  buildah = new StorageClient("buildah");
  reg = await startTokenRegistry({ alice: ALICE_PW, bob: "bob-buildah-password" });
});

afterAll(async () => {
  await reg?.stop();
  await buildah?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function push(dest: string, extra: string[] = [], creds = `alice:${ALICE_PW}`) {
  const df = join(work, `digest-${dest.replace(/\W/g, "_")}`);
  const r = await buildah.run("push", ["--tls-verify=false", "--creds", creds, "--digestfile", df, ...extra, imageId, `docker://${reg.host}/${dest}`], { allowFail: true });
  return { ...r, digest: r.code === 0 ? readFileSync(df, "utf8").trim() : "" };
}

describe.skipIf(clients.skip)("buildah in token mode", () => {
  test("build an image from scratch with busybox", async () => {
    const ctr = (await buildah.run("from", ["scratch"])).stdout.trim();
    await buildah.run("copy", [ctr, busyboxPath(), "/bin/busybox"]);
    await buildah.run("config", ["--cmd", "/bin/busybox sh", "--label", "dev.cloister.e2e=buildah", ctr]);
    imageId = (await buildah.run("commit", ["--quiet", ctr, "e2e-buildah:1"])).stdout.trim();
    expect(imageId).toMatch(/^[0-9a-f]{64}$/);
  });

  test("push as OCI into the user's namespace: the registry serves buildah's manifest and blobs", async () => {
    const r = await push("alice/buildah:oci");
    expect(r.code, r.stderr).toBe(0);
    const m = await servedManifest(reg, "alice/buildah", "oci", r.digest, basic("alice", ALICE_PW));
    expect(m.mediaType).toBe(OCI_MANIFEST);
    expect(m.json.config!.digest).toBe(`sha256:${imageId}`);
    await expectBlobsServed(reg, "alice/buildah", [m.json.config!, ...m.json.layers!], basic("alice", ALICE_PW));
    const cfg = await request(reg, "GET", `/v2/alice/buildah/blobs/${m.json.config!.digest}`, { headers: basic("alice", ALICE_PW) });
    expect(cfg.json().config.Labels).toMatchObject({ "dev.cloister.e2e": "buildah" });
  });

  test("push as Docker v2s2 (converted by buildah) keeps the layers", async () => {
    const r = await push("alice/buildah:v2s2", ["--format", "v2s2"]);
    expect(r.code, r.stderr).toBe(0);
    const m = await servedManifest(reg, "alice/buildah", "v2s2", r.digest, basic("alice", ALICE_PW));
    expect(m.mediaType).toBe(DOCKER_V2S2);
    await expectBlobsServed(reg, "alice/buildah", [m.json.config!, ...m.json.layers!], basic("alice", ALICE_PW));
  });

  test("a push outside the user's namespace, or with a wrong password, is refused", async () => {
    const other = await push("bob/buildah:1");
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/denied|unauthorized|authentication required|401/i);
    const wrong = await push("alice/buildah:wrong", [], "alice:not-her-password");
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/unauthorized|invalid username\/password|401/i);
    await expectNoTags(reg, "bob/buildah", adminAuth());
    expect((await tagsOf(reg, "alice/buildah", adminAuth())).sort()).toEqual(["oci", "v2s2"]);
  });
});

