// A hand-written OCI image layout holding one image with a large random layer (a tar with one
// random file, uncompressed), for the chunked-push tests, plus the `cloister` CLI runner.
import { mkdirSync, writeFileSync, readFileSync, statSync, createReadStream } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { run, type RunOptions, type RunResult } from "./exec";
import { repoRoot } from "./registry";

export interface BigImage {
  /** the OCI layout directory (oci:DIR:TAG) */
  dir: string;
  tag: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
  layerSize: number;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const d of createReadStream(path)) h.update(d as Buffer);
  return "sha256:" + h.digest("hex");
}

function putBlob(dir: string, bytes: Buffer): string {
  const d = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  writeFileSync(join(dir, "blobs/sha256", d.slice(7)), bytes);
  return d;
}

/** An OCI layout at `dir` with image `tag` whose one layer holds `bytes` random bytes. */
export async function buildBigImage(dir: string, bytes: number, tag = "big"): Promise<BigImage> {
  const work = join(dir, "..", `${tag}-rootfs`);
  mkdirSync(work, { recursive: true });
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  // Random content in 1 MiB pieces (randomBytes of 60 MB at once is fine too, this keeps RSS low).
  const file = join(work, "random.bin");
  writeFileSync(file, "");
  for (let left = bytes; left > 0; left -= 1 << 20) writeFileSync(file, randomBytes(Math.min(left, 1 << 20)), { flag: "a" });
  const layerTmp = join(work, "layer.tar");
  await run("tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-cf", layerTmp, "-C", work, "random.bin"]);
  const layerDigest = await sha256File(layerTmp);
  const layerSize = statSync(layerTmp).size;
  await run("mv", [layerTmp, join(dir, "blobs/sha256", layerDigest.slice(7))]);
  const config = Buffer.from(
    JSON.stringify({
      created: "2026-01-01T00:00:00Z",
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/random.bin"] },
      rootfs: { type: "layers", diff_ids: [layerDigest] },
      history: [{ created: "2026-01-01T00:00:00Z", created_by: "cloister e2e: random layer" }],
    }),
  );
  const configDigest = putBlob(dir, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: layerSize }],
    }),
  );
  const manifestDigest = putBlob(dir, manifest);
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifestDigest, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": tag } }],
    }),
  );
  return { dir, tag, manifestDigest, configDigest, layerDigest, layerSize };
}

export function readJson<T = any>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8"));
}

export const CLOISTER = join(repoRoot, "bin/cloister.mjs");

/** Runs `node bin/cloister.mjs …` (no TTY: quiet progress lines). */
export function cloister(args: string[], o: RunOptions = {}): Promise<RunResult> {
  return run(process.execPath, [CLOISTER, ...args], { timeoutMs: 5 * 60_000, ...o });
}
