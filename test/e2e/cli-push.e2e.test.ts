// `cloister push` gets an image with a 60 MB layer into a registry that refuses request bodies
// over 20 MB (MAX_BODY_BYTES, emulating Cloudflare's 100 MB cap at test scale), where skopeo —
// which sends a layer in one request — fails with 413. From an OCI layout, a docker-archive and
// a private dockerd (docker-daemon:), each into its own repository so every push uploads the
// layer; skopeo and docker pull it back digest-identical.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { needClients, Skopeo } from "./helpers/exec";
import { Docker, DOCKER_CLI } from "./helpers/docker";
import { buildBigImage, cloister, type BigImage } from "./helpers/big-image";
import { sha256 } from "./helpers/http";

const CAP = 20_000_000;
const LAYER = 60_000_000;

const clients = needClients("cli-push.e2e", ["skopeo", "tar", DOCKER_CLI, "dockerd"]);
let reg: RunningRegistry;
let skopeo: Skopeo;
let docker: Docker;
let work: string;
let img: BigImage;
let archive: string;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-cli-push-"));
  await Promise.all([
    startRegistry({ vars: { MAX_BODY_BYTES: String(CAP) } }).then((r) => (reg = r)),
    Docker.start().then((d) => (docker = d)),
    buildBigImage(join(work, "layout"), LAYER).then((i) => (img = i)),
  ]);
  skopeo = new Skopeo(reg);
  archive = join(work, "big.tar");
  await skopeo.run("copy", [`oci:${img.dir}:${img.tag}`, `docker-archive:${archive}:cl/big:1`]);
});

afterAll(async () => {
  await docker?.stop();
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

interface Summary {
  digest: string;
  transferred: number;
  transferredBytes: number;
  chunks: number;
  chunkSize: number;
  resumes: number;
}

async function push(src: string, repo: string, env?: NodeJS.ProcessEnv): Promise<Summary> {
  const r = await cloister(["--json", "push", "--tls-verify=false", src, `${reg.host}/${repo}:1`], { env: { ...process.env, ...env } });
  return JSON.parse(r.stdout);
}

/** The manifest the registry serves for repo:1, as skopeo reads it. */
async function served(repo: string): Promise<{ digest: string; manifest: any }> {
  const raw = (await skopeo.run("inspect", ["--raw", skopeo.ref(`${repo}:1`)])).stdout;
  return { digest: `sha256:${sha256(Buffer.from(raw))}`, manifest: JSON.parse(raw) };
}

function expectChunked(s: Summary) {
  expect(s.transferred, "config and layer uploaded").toBe(2);
  expect(s.chunkSize, "chunks no larger than the advertised OCI-Chunk-Max-Length").toBeLessThanOrEqual(CAP);
  expect(s.chunks, "the 60 MB layer went in several PATCHes").toBeGreaterThanOrEqual(Math.ceil(LAYER / CAP));
  expect(s.resumes, "no 413 to recover from: the advertised maximum was right").toBe(0);
}

describe.skipIf(clients.skip)("cloister push: a 60 MB layer through a 20 MB request cap", () => {
  test("skopeo, sending the layer in one request, fails with 413", async () => {
    const r = await skopeo.run("copy", [`oci:${img.dir}:${img.tag}`, skopeo.ref("e2e/skopeo:1")], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/413|too large|chunks/i);
  });

  test("from oci: — byte-exact manifest, skopeo pulls it back digest-identical", async () => {
    const s = await push(`oci:${img.dir}:${img.tag}`, "e2e/from-oci");
    expectChunked(s);
    expect(s.digest).toBe(img.manifestDigest);
    expect((await served("e2e/from-oci")).digest).toBe(img.manifestDigest);
    const back = join(work, "back-oci");
    await skopeo.run("copy", ["--preserve-digests", skopeo.ref("e2e/from-oci:1"), `oci:${back}:b`]);
    const idx = JSON.parse(readFileSync(join(back, "index.json"), "utf8"));
    expect(idx.manifests[0].digest).toBe(img.manifestDigest);
    const layer = readFileSync(join(back, "blobs/sha256", img.layerDigest.slice(7)));
    expect(`sha256:${sha256(layer)}`).toBe(img.layerDigest);
  });

  test("from docker-archive: — OCI manifest over the archive's config and layer, digests kept", async () => {
    const s = await push(`docker-archive:${archive}`, "e2e/from-archive");
    expectChunked(s);
    const { digest, manifest } = await served("e2e/from-archive");
    expect(digest).toBe(s.digest);
    expect(manifest.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(manifest.config.digest, "config bytes kept: same image ID").toBe(img.configDigest);
    expect(manifest.layers.map((l: any) => l.digest)).toEqual([img.layerDigest]);
  });

  test("from docker-daemon: (Engine API socket) — and docker pulls it back with the same image ID", async () => {
    await docker.run(["load", "-i", archive]);
    const s = await push("docker-daemon:cl/big:1", "e2e/from-daemon", { DOCKER_HOST: `unix://${docker.socket}` });
    expectChunked(s);
    const { digest, manifest } = await served("e2e/from-daemon");
    expect(digest).toBe(s.digest);
    expect(manifest.config.digest).toBe(img.configDigest);
    expect(manifest.layers.map((l: any) => l.digest)).toEqual([img.layerDigest]);

    await docker.run(["rmi", "cl/big:1"]);
    const ref = `${reg.host}/e2e/from-daemon@${s.digest}`;
    await docker.run(["pull", ref]);
    const inspected = await docker.inspect(ref);
    expect(inspected.Id, "docker's image ID is the config digest").toBe(img.configDigest);
    expect(inspected.RepoDigests).toContain(ref);
    expect(inspected.RootFS.Layers).toEqual([img.layerDigest]);
  });
});
