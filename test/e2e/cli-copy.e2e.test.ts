// `cloister copy|push|pull` with a two-platform OCI index (umoci-built busybox images): every
// platform goes up byte-exact, comes back into an OCI layout byte-exact, one platform comes back
// as a docker-archive skopeo can read, a registry-to-registry copy mounts instead of uploading,
// a second push skips what is there, and bad input gets the documented exit codes.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { needClients, Skopeo } from "./helpers/exec";
import { buildLayout, blobPath, type Layout } from "./helpers/images";
import { cloister } from "./helpers/big-image";
import { request, sha256 } from "./helpers/http";

const clients = needClients("cli-copy.e2e", ["umoci", "skopeo", "busybox"]);
let reg: RunningRegistry;
let work: string;
let layout: Layout;
let skopeo: Skopeo;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-cli-copy-"));
  [reg, layout] = await Promise.all([startRegistry({ https: false }), buildLayout(join(work, "layout"), work)]);
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

const json = async (args: string[]) => JSON.parse((await cloister(["--json", ...args])).stdout);

async function servedDigest(repo: string, ref: string, accept: string): Promise<string> {
  const r = await request(reg, "GET", `/v2/${repo}/manifests/${ref}`, { headers: { Accept: accept } });
  expect(r.status, `${repo}:${ref}`).toBe(200);
  return `sha256:${sha256(r.body)}`;
}

describe.skipIf(clients.skip)("cloister copy with a multi-platform index", () => {
  test("push oci: index — the index and every platform byte-exact", async () => {
    const s = await json(["push", `oci:${layout.dir}:multi`, `${reg.host}/e2e/multi:1`]);
    expect(s.digest).toBe(layout.index.digest);
    expect(s.manifests).toBe(3);
    expect(await servedDigest("e2e/multi", "1", "application/vnd.oci.image.index.v1+json")).toBe(layout.index.digest);
    for (const img of Object.values(layout.images))
      expect(await servedDigest("e2e/multi", img.manifestDigest, "application/vnd.oci.image.manifest.v1+json")).toBe(img.manifestDigest);
  });

  test("a second push (naming the registry with --server) skips every blob", async () => {
    const s = await json(["--server", reg.url, "push", `oci:${layout.dir}:multi`, "e2e/multi:1"]);
    expect(s.destination).toBe(`docker://${reg.host}/e2e/multi`);
    expect(s.transferred).toBe(0);
    expect(s.skipped).toBe(s.blobs);
  });

  test("pull into oci: — every platform, byte-exact", async () => {
    const back = join(work, "back");
    const s = await json(["pull", `${reg.host}/e2e/multi:1`, `oci:${back}:m`]);
    expect(s.digest).toBe(layout.index.digest);
    const idx = JSON.parse(readFileSync(join(back, "index.json"), "utf8"));
    expect(idx.manifests).toEqual([expect.objectContaining({ digest: layout.index.digest, annotations: { "org.opencontainers.image.ref.name": "m" } })]);
    for (const img of Object.values(layout.images)) {
      expect(readFileSync(blobPath(back, img.manifestDigest)).equals(img.manifestBytes)).toBe(true);
      for (const l of img.manifest.layers) expect(`sha256:${sha256(readFileSync(blobPath(back, l.digest)))}`).toBe(l.digest);
      expect(existsSync(blobPath(back, img.manifest.config.digest))).toBe(true);
    }
  });

  test("pull --platform linux/arm64 into docker-archive: — skopeo reads that platform", async () => {
    const file = join(work, "arm64.tar");
    await cloister(["pull", "--platform", "linux/arm64", `${reg.host}/e2e/multi:1`, `docker-archive:${file}:e2e/multi:arm64`]);
    const info = JSON.parse((await skopeo.run("inspect", [`docker-archive:${file}`])).stdout);
    expect(info.Architecture).toBe("arm64");
    // skopeo names docker-archive layers by their diff_ids (it decompresses gzip layers on read).
    expect(info.Layers).toEqual(JSON.parse(layout.images.arm64.configBytes.toString("utf8")).rootfs.diff_ids);
    const raw = JSON.parse((await skopeo.run("inspect", ["--raw", `docker-archive:${file}`])).stdout);
    expect(raw.config.digest).toBe(layout.images.arm64.manifest.config.digest);
  });

  test("that docker-archive (gzip layers) pushed back: same config and layer digests, gzip media types", async () => {
    const s = await json(["push", `docker-archive:${join(work, "arm64.tar")}`, `${reg.host}/e2e/from-archive:1`]);
    const r = await request(reg, "GET", `/v2/e2e/from-archive/manifests/1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(`sha256:${sha256(r.body)}`).toBe(s.digest);
    const m = JSON.parse(r.body.toString("utf8"));
    const arm = layout.images.arm64.manifest;
    expect(m.config.digest).toBe(arm.config.digest);
    expect(m.layers.map((l: any) => [l.digest, l.mediaType])).toEqual(arm.layers.map((l) => [l.digest, "application/vnd.oci.image.layer.v1.tar+gzip"]));
  });

  test("copy registry → registry with --mount-from: mounts instead of uploading", async () => {
    const s = await json(["copy", "--mount-from", "e2e/multi", `docker://${reg.host}/e2e/multi:1`, `docker://${reg.host}/e2e/mounted:1`]);
    expect(s.digest).toBe(layout.index.digest);
    expect(s.mounted).toBe(s.blobs);
    expect(s.transferred).toBe(0);
    expect(await servedDigest("e2e/mounted", "1", "application/vnd.oci.image.index.v1+json")).toBe(layout.index.digest);
  });

  test("registry → registry without mounting streams the blobs across", async () => {
    const s = await json(["copy", `docker://${reg.host}/e2e/multi:1`, `docker://${reg.host}/e2e/streamed:1`]);
    expect(s.transferred).toBe(s.blobs);
    expect(await servedDigest("e2e/streamed", "1", "application/vnd.oci.image.index.v1+json")).toBe(layout.index.digest);
  });

  test("exit codes: 2 bad usage, 4 not found", async () => {
    const bad = await cloister(["copy", "nonsense", `oci:${work}/x`], { allowFail: true });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown transport/);
    const missing = await cloister(["push", `oci:${work}/no-such-layout`, `${reg.host}/e2e/x:1`], { allowFail: true });
    expect(missing.code).toBe(4);
    const noTag = await cloister(["--json", "pull", `${reg.host}/e2e/multi:nope`, `oci:${work}/never`], { allowFail: true });
    expect(noTag.code).toBe(4);
    expect(noTag.stdout).toBe("");
    const line = JSON.parse(noTag.stderr.split("\n").find((l) => l.startsWith("{"))!);
    expect(line.error).toMatchObject({ status: 404, code: "MANIFEST_UNKNOWN", exitCode: 4 });
  });
});
