// Where pulled images go: an OCI image layout (every platform, byte-exact) or a docker-archive
// (one platform, loadable with `docker load`). Both take blobs as streams and check their
// sha256 while writing, so nothing unverified lands on disk under its digest's name.
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile, open as openFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { join, dirname } from "node:path";
import { RegistryError } from "../../lib/registry-client.mjs";
import { tarHeader, tarPadding, TAR_END } from "./tar.mjs";

/** Write `stream` to `path` via a temp name, checking size and sha256 digest. */
async function writeVerified(stream, path, desc, bar) {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.partial`;
  const h = createHash("sha256");
  let n = 0;
  const check = new Transform({
    transform(chunk, _e, cb) {
      h.update(chunk);
      n += chunk.length;
      bar?.update(n);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(stream, check, createWriteStream(tmp));
    if (n !== desc.size) throw new RegistryError(`blob ${desc.digest}: got ${n} bytes, expected ${desc.size}`);
    if (desc.digest.startsWith("sha256:") && "sha256:" + h.digest("hex") !== desc.digest) throw new RegistryError(`blob ${desc.digest}: content does not match its digest`);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export async function ociDestination(dir, ref) {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  const blobFile = (digest) => {
    const [alg, hex] = digest.split(":");
    return join(dir, "blobs", alg, hex);
  };
  const exists = async (digest, size) => (await stat(blobFile(digest)).catch(() => null))?.size === size;
  return {
    name: `oci:${dir}`,
    stats: { uploaded: 0, uploadedBytes: 0, skipped: 0, skippedBytes: 0, mounted: 0, chunks: 0, resumes: 0 },
    async putBlob(desc, blob, bar) {
      if (await exists(desc.digest, desc.size)) {
        this.stats.skipped++;
        this.stats.skippedBytes += desc.size;
        bar?.update(desc.size);
        return "skipped";
      }
      await writeVerified(blob.open(0, desc.size), blobFile(desc.digest), desc, bar);
      this.stats.uploaded++;
      this.stats.uploadedBytes += desc.size;
      return "written";
    },
    /** Children are stored as blobs; the root also gets an index.json entry named `ref`. */
    async putManifest(reference, mediaType, bytes, { root = false, digest } = {}) {
      await writeFile(blobFile(digest), bytes);
      if (!root) return digest;
      await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
      let index = { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [] };
      try {
        index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
      } catch {}
      const name = ref ?? reference;
      const named = (d) => d.annotations?.["org.opencontainers.image.ref.name"] === name;
      index.manifests = (index.manifests ?? []).filter((d) => !named(d));
      index.manifests.push({ mediaType, digest, size: bytes.length, annotations: { "org.opencontainers.image.ref.name": name } });
      await writeFile(join(dir, "index.json"), JSON.stringify(index));
      return digest;
    },
    async close() {},
  };
}

/**
 * A `docker save`-style tarball: manifest.json (Config, RepoTags, Layers), the config as
 * <hex>.json and each layer as <hex>.tar, byte for byte as the registry holds them (docker load
 * decompresses gzip layers itself). Blobs are staged in a directory next to the archive, then
 * written into it in manifest order.
 */
export async function dockerArchiveDestination(path, ref, { repoTag } = {}) {
  const stage = `${path}.cloister-staging`;
  await mkdir(stage, { recursive: true });
  const files = new Map();
  return {
    name: `docker-archive:${path}`,
    singleImage: true,
    stats: { uploaded: 0, uploadedBytes: 0, skipped: 0, skippedBytes: 0, mounted: 0, chunks: 0, resumes: 0 },
    async putBlob(desc, blob, bar) {
      const f = join(stage, desc.digest.replace(":", "-"));
      await writeVerified(blob.open(0, desc.size), f, desc, bar);
      files.set(desc.digest, { path: f, size: desc.size });
      this.stats.uploaded++;
      this.stats.uploadedBytes += desc.size;
      return "written";
    },
    async putManifest(reference, mediaType, bytes) {
      const m = JSON.parse(bytes.toString("utf8"));
      const hex = (d) => d.split(":")[1];
      const entries = [
        [`${hex(m.config.digest)}.json`, m.config.digest],
        ...m.layers.map((l) => [`${hex(l.digest)}.tar`, l.digest]),
      ];
      const manifestJson = Buffer.from(JSON.stringify([{ Config: entries[0][0], RepoTags: [ref ?? repoTag].filter(Boolean), Layers: entries.slice(1).map((e) => e[0]) }]));
      const out = await openFile(`${path}.partial`, "w");
      try {
        const write = async (buf) => {
          for (let off = 0; off < buf.length; ) off += (await out.write(buf, off, buf.length - off)).bytesWritten;
        };
        const seen = new Set();
        for (const [name, digest] of entries) {
          if (seen.has(name)) continue; // a layer repeated in one image is stored once
          seen.add(name);
          const f = files.get(digest);
          await write(tarHeader(name, f.size));
          const src = await openFile(f.path, "r");
          try {
            const buf = Buffer.alloc(1 << 20);
            for (let pos = 0; pos < f.size; ) {
              const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, f.size - pos), pos);
              if (!bytesRead) throw new RegistryError(`${f.path} shrank while being archived`);
              await write(buf.subarray(0, bytesRead));
              pos += bytesRead;
            }
          } finally {
            await src.close();
          }
          await write(tarPadding(f.size));
        }
        await write(tarHeader("manifest.json", manifestJson.length));
        await write(manifestJson);
        await write(tarPadding(manifestJson.length));
        await write(TAR_END);
      } finally {
        await out.close();
      }
      await rename(`${path}.partial`, path);
      return reference;
    },
    async close() {
      await rm(stage, { recursive: true, force: true });
    },
  };
}
