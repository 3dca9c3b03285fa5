#!/usr/bin/env node
// `npm run gen:vectors [-- --out DIR] [-- --ts FILE]`: regenerate the build-cache/v1 conformance
// vectors. Output is byte-identical on every run: data comes from a seeded xorshift32 generator
// (never Math.random), JSON is canonical or stably formatted, and nothing records time or host.
//
// Writes:
//   cloister-spec/build-cache/v1/vectors/   chunk-00N.bin, config.json, manifest.json,
//                                           digests.json, tree.json, VECTORS.sha256
//   test/build-cache/vectors.generated.ts   the same files base64-inlined for the workerd test
//                                           pool, which has no file system.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { createBLAKE3 } from "hash-wasm";
import { buildConfig, buildManifest, canonicalJson, CHUNK_MEDIA_TYPE, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, parseMode, utf8, wireDigest } from "../bin/lib/build-cache.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const outDir = opt("--out", join(root, "cloister-spec/build-cache/v1/vectors"));
const tsFile = opt("--ts", join(root, "test/build-cache/vectors.generated.ts"));

/** Chunk size the vector tree is cut with (small, so a 1 MiB vector is a whole chunk). */
const VECTOR_CHUNK_SIZE = 1024 * 1024;

/**
 * xorshift32 (Marsaglia; shifts 13, 17, 5) from a non-zero 32-bit seed; every step's state is
 * emitted as 4 little-endian bytes, the last step truncated to the requested length.
 */
export function xorshiftBytes(seed, length) {
  const out = new Uint8Array(length);
  let x = seed >>> 0;
  if (x === 0) throw new Error("xorshift32 seed must be non-zero");
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    for (let k = 0; k < 4 && i + k < length; k++) out[i + k] = (x >>> (8 * k)) & 0xff;
  }
  return out;
}

// name → [seed, length]. chunk-003 is the empty blob: an edge case for registries (not referenced
// by the manifest, since producers never emit empty chunks).
const CHUNKS = {
  "chunk-001.bin": [0xc1057e01, 1024],
  "chunk-002.bin": [0xc1057e02, 64 * 1024 + 3],
  "chunk-003.bin": [0xc1057e03, 0],
  "chunk-004.bin": [0xc1057e04, VECTOR_CHUNK_SIZE],
};

// The tree the vector manifest describes: each file is the concatenation of its chunks.
// data/large.bin re-uses chunk-001 as its tail, so the manifest shows in-artifact dedupe.
const TREE = [
  { path: "data/medium.bin", mode: 0o644, chunks: ["chunk-002.bin"] },
  { path: "bin/tool", mode: 0o755, chunks: ["chunk-001.bin"] },
  { path: "data/large.bin", mode: 0o644, chunks: ["chunk-004.bin", "chunk-001.bin"] },
  { path: "empty", mode: 0o644, chunks: [] },
];

const sha256Hex = (b) => createHash("sha256").update(b).digest("hex");
const hw = await createBLAKE3();
function blake3Hex(b) {
  const a = bytesToHex(blake3(b));
  hw.init();
  hw.update(b);
  const c = hw.digest("hex");
  if (a !== c) throw new Error(`BLAKE3 implementations disagree (${a} vs ${c})`);
  return a;
}
const pretty = (v) => JSON.stringify(sortKeys(v), null, 2) + "\n";
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

const files = new Map(); // name → bytes
const media = new Map(); // name → media type
for (const [name, [seed, len]] of Object.entries(CHUNKS)) {
  files.set(name, xorshiftBytes(seed, len));
  media.set(name, CHUNK_MEDIA_TYPE);
}
for (const [name, [, len]] of Object.entries(CHUNKS))
  if (len > VECTOR_CHUNK_SIZE) throw new Error(`${name} is larger than the vector chunk size`);

const hexOf = new Map([...files].map(([n, b]) => [n, blake3Hex(b)]));
const config = buildConfig({
  chunkSize: VECTOR_CHUNK_SIZE,
  files: TREE.map((f) => ({
    path: f.path,
    mode: f.mode,
    size: f.chunks.reduce((s, c) => s + files.get(c).length, 0),
    chunks: f.chunks.map((c) => hexOf.get(c)),
  })),
});
const configBytes = utf8(canonicalJson(config));
const chunkSizes = new Map([...files].map(([n, b]) => [wireDigest(hexOf.get(n)), b.length]));
const manifest = buildManifest({ config, configBlake3Hex: blake3Hex(configBytes), configSize: configBytes.length, chunkSizes });
const manifestBytes = utf8(canonicalJson(manifest));
files.set("config.json", configBytes);
media.set("config.json", CONFIG_MEDIA_TYPE);
files.set("manifest.json", manifestBytes);
media.set("manifest.json", MANIFEST_MEDIA_TYPE);

// Expected restored tree (what a consumer must write), so restores can be checked without
// committing the tree's bytes a second time.
const tree = config.files.map((f) => {
  const names = TREE.find((t) => t.path === f.path).chunks;
  const parts = names.map((n) => files.get(n));
  const body = new Uint8Array(f.size);
  let off = 0;
  for (const p of parts) body.set(p, off), (off += p.length);
  return { path: f.path, mode: f.mode, size: f.size, blake3: blake3Hex(body), sha256: sha256Hex(body) };
});
if (tree.some((t) => parseMode(t.mode) === 0)) throw new Error("mode lost");
files.set("tree.json", utf8(pretty({ chunkSize: VECTOR_CHUNK_SIZE, files: tree })));

const digests = {};
for (const [name, bytes] of files) {
  if (name === "tree.json") continue;
  const b3 = blake3Hex(bytes);
  digests[name] = { blake3: b3, digest: wireDigest(b3), mediaType: media.get(name), sha256: sha256Hex(bytes), size: bytes.length };
}
files.set("digests.json", utf8(pretty(digests)));

const names = [...files.keys()].sort();
files.set("VECTORS.sha256", utf8(names.map((n) => `${sha256Hex(files.get(n))}  ${n}\n`).join("")));

// Write: replace the directory's contents so stale vectors never linger.
mkdirSync(outDir, { recursive: true });
for (const f of readdirSync(outDir)) rmSync(join(outDir, f), { recursive: true, force: true });
for (const [name, bytes] of files) writeFileSync(join(outDir, name), bytes);

const lines = [
  "// GENERATED by scripts/gen-vectors.mjs (npm run gen:vectors). Do not edit.",
  "// The build-cache/v1 vectors (cloister-spec/build-cache/v1/vectors/) base64-inlined, because",
  "// the workerd test pool has no file system.",
  "export const VECTOR_FILES: Record<string, string> = {",
  ...[...files.keys()].sort().map((n) => `  ${JSON.stringify(n)}:\n    ${JSON.stringify(Buffer.from(files.get(n)).toString("base64"))},`),
  "};",
  "",
];
mkdirSync(dirname(tsFile), { recursive: true });
writeFileSync(tsFile, lines.join("\n"));

process.stderr.write(`wrote ${files.size} vectors to ${relative(process.cwd(), outDir) || "."} and ${relative(process.cwd(), tsFile)}\n`);
