// Where images come from. Every source offers the same three things:
//   root()           → { mediaType, bytes, digest }  the manifest or index named by the reference
//   manifest(desc)   → Buffer                          a child manifest of an index, byte-exact
//   blob(desc)       → { size, open(start, end) }      a blob, readable from any offset (resume)
// Sources never re-serialize a manifest they read; only docker-archive builds one (see
// dockerArchiveSource).
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RegistryError, EXIT, expectStatus } from "../../lib/registry-client.mjs";
import { indexTar } from "./tar.mjs";

export const MT = {
  OCI_MANIFEST: "application/vnd.oci.image.manifest.v1+json",
  OCI_INDEX: "application/vnd.oci.image.index.v1+json",
  DOCKER_MANIFEST: "application/vnd.docker.distribution.manifest.v2+json",
  DOCKER_LIST: "application/vnd.docker.distribution.manifest.list.v2+json",
  OCI_CONFIG: "application/vnd.oci.image.config.v1+json",
  OCI_LAYER: "application/vnd.oci.image.layer.v1.tar",
  OCI_LAYER_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
  OCI_LAYER_ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
};
export const MANIFEST_ACCEPT = [MT.OCI_INDEX, MT.OCI_MANIFEST, MT.DOCKER_LIST, MT.DOCKER_MANIFEST].join(", ");
export const isIndex = (mt) => mt === MT.OCI_INDEX || mt === MT.DOCKER_LIST;

/** Largest manifest we read into memory (cloister's own default limit is 32 MiB). */
const MAX_MANIFEST = 32 << 20;

export const sha256 = (b) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** The manifest's media type: its own field, else the descriptor's, else by shape. */
export function mediaTypeOf(bytes, fallback) {
  let j;
  try {
    j = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new RegistryError("manifest is not JSON");
  }
  return j.mediaType ?? fallback ?? (Array.isArray(j.manifests) ? MT.OCI_INDEX : MT.OCI_MANIFEST);
}

function verify(bytes, digest, what) {
  if (!digest.startsWith("sha256:")) return; // other algorithms are checked by the registry
  const got = sha256(bytes);
  if (got !== digest) throw new RegistryError(`${what}: content is ${got}, not ${digest}`);
}

const fileBlob = (path, size, base = 0) => ({
  size,
  open: (start = 0, end = size) => (end > start ? createReadStream(path, { start: base + start, end: base + end - 1 }) : emptyStream()),
});

function emptyStream() {
  const p = new PassThrough();
  p.end();
  return p;
}

const blobPath = (dir, digest) => {
  const [alg, hex] = digest.split(":");
  if (!/^[a-z0-9+._-]+$/.test(alg) || !/^[a-zA-Z0-9=_-]+$/.test(hex ?? "")) throw new RegistryError(`invalid digest ${digest}`);
  return join(dir, "blobs", alg, hex);
};

// ---------- oci: an OCI image layout ----------

export async function ociSource(dir, ref) {
  let index;
  try {
    index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
  } catch (err) {
    throw new RegistryError(`${dir}: not an OCI image layout (${err.code === "ENOENT" ? "no index.json" : err.message})`, { exitCode: err.code === "ENOENT" ? EXIT.NOT_FOUND : EXIT.ERROR });
  }
  const list = index.manifests ?? [];
  const named = (d) => d.annotations?.["org.opencontainers.image.ref.name"];
  let desc;
  if (ref) desc = list.find((d) => named(d) === ref || d.digest === ref);
  else if (list.length === 1) desc = list[0];
  else throw new RegistryError(`${dir} holds ${list.length} images; name one: oci:${dir}:REF (${list.map(named).filter(Boolean).join(", ")})`, { exitCode: EXIT.USAGE });
  if (!desc) throw new RegistryError(`${dir}: no image named ${JSON.stringify(ref)} in index.json`, { exitCode: EXIT.NOT_FOUND });
  const readManifest = async (d) => {
    const b = await readFile(blobPath(dir, d.digest));
    verify(b, d.digest, `manifest ${d.digest}`);
    return b;
  };
  const bytes = await readManifest(desc);
  return {
    name: `oci:${dir}${ref ? ":" + ref : ""}`,
    tag: named(desc) ?? null,
    root: async () => ({ mediaType: mediaTypeOf(bytes, desc.mediaType), bytes, digest: desc.digest }),
    manifest: readManifest,
    blob: async (d) => {
      const p = blobPath(dir, d.digest);
      const st = await stat(p).catch(() => null);
      if (!st) throw new RegistryError(`${dir}: blob ${d.digest} is missing from the layout`, { exitCode: EXIT.NOT_FOUND });
      if (st.size !== d.size) throw new RegistryError(`${dir}: blob ${d.digest} is ${st.size} bytes, its descriptor says ${d.size}`);
      return fileBlob(p, st.size);
    },
    close: async () => {},
  };
}

// ---------- docker-archive: a `docker save` tarball ----------

/** Layer media type from the first bytes: gzip, zstd, or a plain tar. */
async function layerMediaType(path, offset) {
  const fh = await open(path, "r");
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, offset);
    if (b[0] === 0x1f && b[1] === 0x8b) return MT.OCI_LAYER_GZIP;
    if (b.readUInt32LE(0) === 0xfd2fb528) return MT.OCI_LAYER_ZSTD;
    return MT.OCI_LAYER;
  } finally {
    await fh.close();
  }
}

async function sha256OfRange(path, offset, size) {
  const h = createHash("sha256");
  if (size > 0) for await (const d of createReadStream(path, { start: offset, end: offset + size - 1 })) h.update(d);
  return "sha256:" + h.digest("hex");
}

/**
 * A docker-archive holds a config and layer tarballs but no registry manifest, so one is built:
 * an OCI image manifest whose config is the archive's config file byte for byte (so the image ID
 * stays the same) and whose layers are the archive's layer files as they are (uncompressed
 * `docker save` layers stay uncompressed, so each layer digest equals its diff_id). The manifest
 * is serialized compactly with keys in a fixed order, so the same archive always gives the same
 * manifest digest.
 */
export async function dockerArchiveSource(path, ref, { label } = {}) {
  const entries = await indexTar(path).catch((err) => {
    throw new RegistryError(`${path}: ${err.code === "ENOENT" ? "no such file" : err.message}`, { exitCode: err.code === "ENOENT" ? EXIT.NOT_FOUND : EXIT.ERROR });
  });
  const readEntry = async (name) => {
    const e = entries.get(name);
    if (!e) throw new RegistryError(`${path}: ${name} is missing from the archive`);
    if (e.size > MAX_MANIFEST) throw new RegistryError(`${path}: ${name} is over ${MAX_MANIFEST} bytes`);
    const fh = await open(path, "r");
    try {
      const b = Buffer.alloc(e.size);
      await fh.read(b, 0, e.size, e.offset);
      return b;
    } finally {
      await fh.close();
    }
  };
  let list;
  try {
    list = JSON.parse((await readEntry("manifest.json")).toString("utf8"));
  } catch (err) {
    throw new RegistryError(`${path}: not a docker archive (${err.message})`);
  }
  const wanted = ref && (ref.includes(":") || ref.includes("@") ? ref : `${ref}:latest`);
  const matches = (t) => t === wanted || t === `docker.io/library/${wanted}` || t.replace(/^docker\.io\/(library\/)?/, "") === wanted;
  let item;
  if (ref && /^@\d+$/.test(ref)) item = list[Number(ref.slice(1))];
  else if (ref) item = list.find((m) => (m.RepoTags ?? []).some(matches));
  else if (list.length === 1) item = list[0];
  else throw new RegistryError(`${path} holds ${list.length} images; name one: docker-archive:${path}:NAME:TAG`, { exitCode: EXIT.USAGE });
  if (!item) throw new RegistryError(`${path}: no image ${JSON.stringify(ref)} in the archive`, { exitCode: EXIT.NOT_FOUND });

  const configBytes = await readEntry(item.Config);
  const configDigest = sha256(configBytes);
  const blobs = new Map([[configDigest, { size: configBytes.length, open: (s = 0, e = configBytes.length) => bufferStream(configBytes.subarray(s, e)) }]]);
  const layers = [];
  for (const name of item.Layers) {
    const e = entries.get(name);
    if (!e || e.offset === undefined) throw new RegistryError(`${path}: layer ${name} is missing from the archive`);
    const digest = await sha256OfRange(path, e.offset, e.size);
    layers.push({ mediaType: await layerMediaType(path, e.offset), digest, size: e.size });
    blobs.set(digest, fileBlob(path, e.size, e.offset));
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.OCI_MANIFEST,
    config: { mediaType: MT.OCI_CONFIG, digest: configDigest, size: configBytes.length },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(bytes);
  return {
    name: label ?? `docker-archive:${path}`,
    tag: (item.RepoTags?.[0] ?? "").split(":").pop() || null,
    root: async () => ({ mediaType: MT.OCI_MANIFEST, bytes, digest }),
    manifest: async () => {
      throw new RegistryError("a docker archive holds one image manifest");
    },
    blob: async (d) => {
      const b = blobs.get(d.digest);
      if (!b) throw new RegistryError(`${path}: no blob ${d.digest}`);
      return b;
    },
    close: async () => {},
  };
}

function bufferStream(buf) {
  const p = new PassThrough();
  p.end(buf);
  return p;
}

// ---------- docker-daemon: the Engine API ----------

/** { socketPath } or { host, port } from DOCKER_HOST (unix:// or tcp://), default /var/run/docker.sock. */
export function dockerEndpoint(env = process.env) {
  const h = env.DOCKER_HOST;
  if (!h) return { socketPath: "/var/run/docker.sock" };
  if (h.startsWith("unix://")) return { socketPath: h.slice(7) };
  const m = /^(?:tcp|http):\/\/([^:/]+)(?::(\d+))?/.exec(h);
  if (m) return { host: m[1], port: Number(m[2] ?? 2375) };
  throw new RegistryError(`DOCKER_HOST=${h}: only unix:// and tcp:// (plain) are supported`, { exitCode: EXIT.USAGE });
}

/**
 * GET /images/<name>/get streams what `docker save` writes. It is spooled to a temporary file
 * (in TMPDIR) because the layer order in the stream is not the manifest's and uploads need to
 * read layers from any offset to resume; the file is removed when the copy ends.
 */
export async function dockerDaemonSource(name, { onSpool } = {}) {
  const dir = await mkdtemp(join(tmpdir(), "cloister-daemon-"));
  const file = join(dir, "image.tar");
  const ep = dockerEndpoint();
  try {
    await new Promise((resolve, reject) => {
      const req = http.request({ ...ep, method: "GET", path: `/images/${encodeURIComponent(name)}/get` }, (res) => {
        if (res.statusCode !== 200) {
          const parts = [];
          res.on("data", (d) => parts.push(d));
          res.on("end", () => {
            let msg = Buffer.concat(parts).toString("utf8");
            try {
              msg = JSON.parse(msg).message ?? msg;
            } catch {}
            reject(new RegistryError(`docker daemon: ${msg.trim() || "HTTP " + res.statusCode}`, { exitCode: res.statusCode === 404 ? EXIT.NOT_FOUND : EXIT.ERROR }));
          });
          return;
        }
        let n = 0;
        res.on("data", (d) => onSpool?.((n += d.length)));
        pipeline(res, createWriteStream(file)).then(resolve, reject);
      });
      req.on("error", (err) =>
        reject(new RegistryError(`cannot reach the docker daemon at ${ep.socketPath ?? `${ep.host}:${ep.port}`}: ${err.message}`, { exitCode: EXIT.NETWORK })),
      );
      req.end();
    });
    const src = await dockerArchiveSource(file, name.includes("@") ? null : name, { label: `docker-daemon:${name}` });
    return { ...src, close: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

// ---------- docker://: a registry ----------

export async function registrySource(client, ref) {
  const scope = `repository:${ref.repo}:pull`;
  const getManifest = async (reference, accept = MANIFEST_ACCEPT) => {
    const r = expectStatus(
      await client.request("GET", `/v2/${ref.repo}/manifests/${reference}`, { headers: { Accept: accept }, scope }),
      [200], `GET ${ref.host}/${ref.repo} manifest ${reference}`);
    if (r.body.length > MAX_MANIFEST) throw new RegistryError(`manifest ${reference} is over ${MAX_MANIFEST} bytes`);
    return r;
  };
  const r = await getManifest(ref.digest ?? ref.tag);
  const digest = ref.digest ?? r.headers["docker-content-digest"] ?? sha256(r.body);
  verify(r.body, digest, `manifest ${ref.repo}:${ref.digest ?? ref.tag}`);
  const mediaType = mediaTypeOf(r.body, r.headers["content-type"]?.split(";")[0]);
  return {
    name: `docker://${ref.host}/${ref.repo}:${ref.digest ?? ref.tag}`,
    tag: ref.tag,
    root: async () => ({ mediaType, bytes: r.body, digest }),
    manifest: async (d) => {
      const m = await getManifest(d.digest, d.mediaType ? `${d.mediaType}, ${MANIFEST_ACCEPT}` : MANIFEST_ACCEPT);
      verify(m.body, d.digest, `manifest ${d.digest}`);
      return m.body;
    },
    blob: async (d) => ({
      size: d.size,
      // Streams the blob (from `start`, with a Range request) without holding it in memory.
      open: (start = 0, end = d.size) => {
        const out = new PassThrough();
        const headers = start > 0 || end < d.size ? { Range: `bytes=${start}-${end - 1}` } : {};
        client.request("GET", `/v2/${ref.repo}/blobs/${d.digest}`, { headers, scope, stream: true }).then((res) => {
          if (res.status !== 200 && res.status !== 206) return out.destroy(new RegistryError(`GET blob ${d.digest}: HTTP ${res.status}`, { status: res.status }));
          if (start > 0 && res.status === 200) return out.destroy(new RegistryError(`GET blob ${d.digest}: the registry ignored Range`));
          res.stream.on("error", (e) => out.destroy(e));
          res.stream.pipe(out);
        }, (e) => out.destroy(e));
        return out;
      },
    }),
    close: async () => {},
  };
}
