// Builds real OCI images with umoci from a busybox-static rootfs, and a hand-made two-platform
// OCI image index over them, all in one OCI image layout directory.
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { run } from "./exec";
import { sha256 } from "./http";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json";
const REF_NAME = "org.opencontainers.image.ref.name";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

export interface BuiltImage {
  tag: string;
  arch: string;
  manifestDigest: string;
  manifestBytes: Buffer;
  manifest: { config: Descriptor; layers: Descriptor[]; mediaType?: string };
  configBytes: Buffer;
}

export interface Layout {
  dir: string;
  images: Record<string, BuiltImage>;
  index: { tag: string; digest: string; bytes: Buffer };
}

export function busyboxPath(): string {
  for (const p of ["/bin/busybox", "/usr/bin/busybox"]) if (existsSync(p)) return p;
  throw new Error("busybox not found; install busybox-static");
}

export function blobPath(layoutDir: string, digest: string): string {
  const [alg, hex] = digest.split(":");
  return join(layoutDir, "blobs", alg, hex);
}

export function readBlob(layoutDir: string, digest: string): Buffer {
  return readFileSync(blobPath(layoutDir, digest));
}

export function readIndexJson(layoutDir: string): { manifests: Descriptor[] } {
  return JSON.parse(readFileSync(join(layoutDir, "index.json"), "utf8"));
}

export function refDescriptor(layoutDir: string, tag: string): Descriptor {
  const d = readIndexJson(layoutDir).manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!d) throw new Error(`no ${tag} in ${layoutDir}/index.json`);
  return d;
}

const rootless = process.getuid?.() !== 0 ? ["--rootless"] : [];

async function buildImage(layout: string, work: string, arch: string): Promise<BuiltImage> {
  const base = `${arch}-base`;
  const bundle = join(work, `bundle-${arch}`);
  await run("umoci", ["new", "--image", `${layout}:${base}`]);
  await run("umoci", ["unpack", ...rootless, "--image", `${layout}:${base}`, bundle]);
  const rootfs = join(bundle, "rootfs");
  mkdirSync(join(rootfs, "bin"), { recursive: true });
  mkdirSync(join(rootfs, "etc"), { recursive: true });
  copyFileSync(busyboxPath(), join(rootfs, "bin/busybox"));
  for (const applet of ["sh", "ls", "cat", "echo", "uname"]) symlinkSync("busybox", join(rootfs, "bin", applet));
  writeFileSync(join(rootfs, "etc/platform"), `linux/${arch}\n`);
  await run("umoci", ["repack", "--image", `${layout}:${arch}`, bundle]);
  await run("umoci", [
    "config",
    "--image",
    `${layout}:${arch}`,
    "--os",
    "linux",
    "--architecture",
    arch,
    "--config.cmd",
    "/bin/sh",
    "--config.env",
    "PATH=/bin",
    "--config.env",
    `E2E_ARCH=${arch}`,
    "--config.label",
    "org.opencontainers.image.title=cloister-e2e",
    "--config.label",
    `dev.cloister.e2e.arch=${arch}`,
    "--config.workingdir",
    "/",
  ]);
  const desc = refDescriptor(layout, arch);
  const manifestBytes = readBlob(layout, desc.digest);
  if (`sha256:${sha256(manifestBytes)}` !== desc.digest) throw new Error("layout manifest digest mismatch");
  const manifest = JSON.parse(manifestBytes.toString("utf8"));
  return { tag: arch, arch, manifestDigest: desc.digest, manifestBytes, manifest, configBytes: readBlob(layout, manifest.config.digest) };
}

/** An OCI layout at `dir` with tags amd64, arm64 (images) and multi (an index over both). */
export async function buildLayout(dir: string, work: string): Promise<Layout> {
  await run("umoci", ["init", "--layout", dir]);
  const images: Record<string, BuiltImage> = {};
  for (const arch of ["amd64", "arm64"]) images[arch] = await buildImage(dir, work, arch);
  await run("umoci", ["gc", "--layout", dir]);
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: Object.values(images).map((img) => ({
      mediaType: OCI_MANIFEST,
      digest: img.manifestDigest,
      size: img.manifestBytes.length,
      platform: { architecture: img.arch, os: "linux" },
    })),
    annotations: { "org.opencontainers.image.description": "cloister e2e two-platform index" },
  };
  const bytes = Buffer.from(JSON.stringify(index));
  const digest = `sha256:${sha256(bytes)}`;
  writeFileSync(blobPath(dir, digest), bytes);
  const idx = readIndexJson(dir);
  idx.manifests.push({ mediaType: OCI_INDEX, digest, size: bytes.length, annotations: { [REF_NAME]: "multi" } });
  writeFileSync(join(dir, "index.json"), JSON.stringify(idx));
  return { dir, images, index: { tag: "multi", digest, bytes } };
}
