// build-cache/v1 wire format: constants, canonical JSON, config and manifest construction and
// validation. Shared by the reference CLI (bin/cloister-cache.mjs) and the vector generator
// (scripts/gen-vectors.mjs) so the two can never disagree. See cloister-spec/build-cache/v1/README.md.

export const ARTIFACT_TYPE = "application/vnd.cloister.build-cache.v1";
export const CONFIG_MEDIA_TYPE = "application/vnd.cloister.build-cache.v1.config+json";
export const CHUNK_MEDIA_TYPE = "application/vnd.cloister.build-cache.v1.chunk";
export const MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json";

export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

const NS = "dev.cloister.build-cache.";
export const ANN = {
  // Manifest-level.
  chunkSize: NS + "chunk-size",
  fileCount: NS + "file-count",
  totalSize: NS + "total-size",
  // Layer-level (informative: first occurrence of the chunk in the canonical file order).
  path: NS + "path",
  chunkIndex: NS + "chunk-index",
  fileSize: NS + "file-size",
  fileMode: NS + "file-mode",
};

const HEX64 = /^[0-9a-f]{64}$/;

/** `sha256:<hex>` where hex is BLAKE3-256 of the body: the build-cache/v1 wire digest. */
export const wireDigest = (blake3Hex) => `sha256:${blake3Hex}`;

/** Hex part of a build-cache digest (`sha256:<blake3hex>` or native `blake3:<hex>`), or null. */
export function blake3HexOf(digest) {
  if (typeof digest !== "string") return null;
  const i = digest.indexOf(":");
  if (i < 0) return null;
  const alg = digest.slice(0, i);
  const hex = digest.slice(i + 1);
  if ((alg !== "sha256" && alg !== "blake3") || !HEX64.test(hex)) return null;
  return hex;
}

/**
 * Canonical JSON: object keys sorted by UTF-16 code unit order (all keys in this format are
 * ASCII, where that equals byte order), no insignificant whitespace, integers only.
 */
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`canonical JSON allows safe integers only, got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
  }
  throw new Error(`cannot encode ${typeof value} as canonical JSON`);
}

const enc = new TextEncoder();
export const utf8 = (s) => enc.encode(s);

/** Byte-wise comparison of the UTF-8 encodings (the canonical file order). */
export function comparePaths(a, b) {
  const x = enc.encode(a);
  const y = enc.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** A safe relative POSIX path: no leading '/', no empty, '.' or '..' segments, no NUL or '\\'. */
export function isSafePath(p) {
  if (typeof p !== "string" || p.length === 0 || p.length > 4096) return false;
  if (p.startsWith("/") || p.includes("\0") || p.includes("\\")) return false;
  return p.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

export const formatMode = (mode) => "0" + (mode & 0o777).toString(8).padStart(3, "0");
export const parseMode = (s) => parseInt(s, 8);

/**
 * Build the config object.
 * files: [{ path, size, mode (number), chunks: [blake3hex…] }] in any order; sorted here.
 */
export function buildConfig({ chunkSize, files }) {
  const sorted = [...files].sort((a, b) => comparePaths(a.path, b.path));
  return {
    chunkSize,
    files: sorted.map((f) => ({
      chunks: f.chunks.map(wireDigest),
      mode: formatMode(f.mode),
      path: f.path,
      size: f.size,
    })),
    mediaType: CONFIG_MEDIA_TYPE,
    schemaVersion: 1,
  };
}

/**
 * Build the manifest object for a config (as built by buildConfig) whose canonical bytes hash to
 * configBlake3Hex. chunkSizes: Map<wireDigest, size>. One layer per distinct chunk, in order of
 * first occurrence; layer annotations describe that first occurrence. `layerAnnotations: false`
 * omits them (for very large caches).
 */
export function buildManifest({ config, configBlake3Hex, configSize, chunkSizes, layerAnnotations = true }) {
  const layers = [];
  const seen = new Set();
  let total = 0;
  for (const f of config.files) {
    total += f.size;
    f.chunks.forEach((d, i) => {
      if (seen.has(d)) return;
      seen.add(d);
      const size = chunkSizes.get(d);
      if (size === undefined) throw new Error(`no size known for chunk ${d}`);
      const desc = { digest: d, mediaType: CHUNK_MEDIA_TYPE, size };
      if (layerAnnotations) {
        desc.annotations = {
          [ANN.chunkIndex]: String(i),
          [ANN.fileMode]: f.mode,
          [ANN.fileSize]: String(f.size),
          [ANN.path]: f.path,
        };
      }
      layers.push(desc);
    });
  }
  return {
    annotations: {
      [ANN.chunkSize]: String(config.chunkSize),
      [ANN.fileCount]: String(config.files.length),
      [ANN.totalSize]: String(total),
    },
    artifactType: ARTIFACT_TYPE,
    config: { digest: wireDigest(configBlake3Hex), mediaType: CONFIG_MEDIA_TYPE, size: configSize },
    layers,
    mediaType: MANIFEST_MEDIA_TYPE,
    schemaVersion: 2,
  };
}

/** Validate a parsed manifest; returns a list of problems (empty = valid). */
export function manifestProblems(m) {
  const p = [];
  if (!m || typeof m !== "object") return ["manifest is not a JSON object"];
  if (m.schemaVersion !== 2) p.push("schemaVersion must be 2");
  if (m.mediaType !== undefined && m.mediaType !== MANIFEST_MEDIA_TYPE) p.push(`mediaType must be ${MANIFEST_MEDIA_TYPE}`);
  if (m.artifactType !== ARTIFACT_TYPE) p.push(`artifactType must be ${ARTIFACT_TYPE} (got ${m.artifactType})`);
  if (!m.config || m.config.mediaType !== CONFIG_MEDIA_TYPE) p.push(`config.mediaType must be ${CONFIG_MEDIA_TYPE}`);
  else if (!blake3HexOf(m.config.digest)) p.push("config.digest is not a build-cache digest");
  if (!Array.isArray(m.layers)) p.push("layers must be an array");
  else
    m.layers.forEach((l, i) => {
      if (!l || l.mediaType !== CHUNK_MEDIA_TYPE) p.push(`layers[${i}].mediaType must be ${CHUNK_MEDIA_TYPE}`);
      else if (!blake3HexOf(l.digest)) p.push(`layers[${i}].digest is not a build-cache digest`);
      else if (!Number.isSafeInteger(l.size) || l.size <= 0) p.push(`layers[${i}].size must be a positive integer`);
    });
  return p;
}

/** Validate a parsed config; returns a list of problems (empty = valid). */
export function configProblems(c) {
  const p = [];
  if (!c || typeof c !== "object") return ["config is not a JSON object"];
  if (c.schemaVersion !== 1) p.push("schemaVersion must be 1");
  if (c.mediaType !== CONFIG_MEDIA_TYPE) p.push(`mediaType must be ${CONFIG_MEDIA_TYPE}`);
  if (!Number.isSafeInteger(c.chunkSize) || c.chunkSize <= 0) p.push("chunkSize must be a positive integer");
  if (!Array.isArray(c.files)) return [...p, "files must be an array"];
  let prev = null;
  c.files.forEach((f, i) => {
    const at = `files[${i}]`;
    if (!f || typeof f !== "object") return p.push(`${at} is not an object`);
    if (!isSafePath(f.path)) return p.push(`${at}.path ${JSON.stringify(f.path)} is not a safe relative path`);
    if (prev !== null && comparePaths(prev, f.path) >= 0) p.push(`${at}.path is out of order or duplicated`);
    prev = f.path;
    if (typeof f.mode !== "string" || !/^0[0-7]{3}$/.test(f.mode)) p.push(`${at}.mode must be a 4-digit octal string`);
    if (!Number.isSafeInteger(f.size) || f.size < 0) p.push(`${at}.size must be a non-negative integer`);
    if (!Array.isArray(f.chunks) || !f.chunks.every((d) => blake3HexOf(d))) return p.push(`${at}.chunks must be build-cache digests`);
    const want = Number.isSafeInteger(c.chunkSize) && c.chunkSize > 0 ? Math.ceil(f.size / c.chunkSize) : f.chunks.length;
    if (f.chunks.length !== want) p.push(`${at} has ${f.chunks.length} chunks, expected ${want} for size ${f.size}`);
  });
  return p;
}
