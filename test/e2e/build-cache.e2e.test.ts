// build-cache/v1 end to end: the reference producer/consumer (bin/cloister-cache.mjs) against a
// real `wrangler dev` registry over self-signed HTTPS, with a deterministic tree of thousands of
// small files, nested directories, multi-MiB files, duplicates and an empty file. Also checks
// that scripts/gen-vectors.mjs reproduces the committed vectors byte for byte.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { repoRoot, startRegistry, type RunningRegistry } from "./helpers/registry";
import { run } from "./helpers/exec";
import { writeDeterministicFile, MiB } from "./helpers/data";

const CLI = join(repoRoot, "bin/cloister-cache.mjs");
const GEN = join(repoRoot, "scripts/gen-vectors.mjs");
const VECTORS = join(repoRoot, "cloister-spec/build-cache/v1/vectors");
const VECTORS_TS = join(repoRoot, "test/build-cache/vectors.generated.ts");
const REPO = "e2e/build-cache";
const SMALL_FILES = 2500;

let reg: RunningRegistry;
let work: string;
let src: string;

interface PushSummary {
  command: "push";
  files: number;
  bytes: number;
  chunks: number;
  uniqueChunks: number;
  uploaded: number;
  uploadedBytes: number;
  skipped: number;
  skippedBytes: number;
  deduplicated: number;
  config: string;
  manifest: string;
  registryDigest: string | null;
}

/** Deterministic small-file content: a SHA-256 counter stream keyed by `seed`. */
function smallContent(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += 32, i++) createHash("sha256").update(`${seed}/${i}`).digest().copy(out, off);
  return out;
}

/** The source tree: ~2500 small files under nested dirs, big files, duplicates, an empty file. */
async function buildTree(root: string) {
  for (let i = 0; i < SMALL_FILES; i++) {
    const dir = join(root, "node_modules", `pkg-${String(i % 97).padStart(2, "0")}`, i % 3 === 0 ? "dist" : "lib", `d${i % 7}`);
    mkdirSync(dir, { recursive: true });
    // Files 2000… repeat the contents of files 0…: duplicates. Sizes 0 … 8999 bytes (f0 is empty).
    const k = i % 2000;
    const f = join(dir, `f${i}.js`);
    writeFileSync(f, smallContent(`small-${k}`, (k * 7919) % 9000));
    if (i % 11 === 0) chmodSync(f, 0o755);
  }
  mkdirSync(join(root, "out/bin"), { recursive: true });
  await writeDeterministicFile(join(root, "out/bin/app"), 9 * MiB + 12345, "bc-app");
  chmodSync(join(root, "out/bin/app"), 0o755);
  await writeDeterministicFile(join(root, "out/big.dat"), 13 * MiB, "bc-big");
  await writeDeterministicFile(join(root, "out/exact-4mib.dat"), 4 * MiB, "bc-exact");
  await writeDeterministicFile(join(root, "out/big-copy.dat"), 13 * MiB, "bc-big"); // same chunks as big.dat
  writeFileSync(join(root, "EMPTY"), "");
  chmodSync(join(root, "EMPTY"), 0o600);
  writeFileSync(join(root, "ünïcödé name.txt"), "paths are UTF-8\n");
}

/** path → { sha256, size, mode } for every regular file under root. */
function snapshot(root: string): Map<string, { sha256: string; size: number; mode: number }> {
  const out = new Map<string, { sha256: string; size: number; mode: number }>();
  const rec = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) rec(p);
      else if (e.isFile()) {
        const st = statSync(p);
        out.set(relative(root, p), { sha256: createHash("sha256").update(readFileSync(p)).digest("hex"), size: st.size, mode: st.mode & 0o777 });
      }
    }
  };
  rec(root);
  return out;
}

function compareTrees(a: string, b: string) {
  const sa = snapshot(a);
  const sb = snapshot(b);
  expect([...sb.keys()].sort()).toEqual([...sa.keys()].sort());
  const diffs: string[] = [];
  for (const [p, x] of sa) {
    const y = sb.get(p)!;
    if (x.size !== y.size || x.sha256 !== y.sha256 || x.mode !== y.mode)
      diffs.push(`${p}: want ${x.size} B ${x.sha256.slice(0, 12)} ${x.mode.toString(8)}, got ${y.size} B ${y.sha256.slice(0, 12)} ${y.mode.toString(8)}`);
  }
  expect(diffs.slice(0, 20)).toEqual([]);
  return sa.size;
}

async function cli(args: string[], allowFail = false) {
  return run(process.execPath, [CLI, ...args], { allowFail, timeoutMs: 8 * 60_000 });
}

async function push(dir: string, tag: string): Promise<PushSummary> {
  const r = await cli(["push", "--insecure", "--json", "--jobs", "6", dir, `${reg.host}/${REPO}:${tag}`]);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as PushSummary;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-build-cache-"));
  src = join(work, "src");
  mkdirSync(src);
  const [r] = await Promise.all([startRegistry(), buildTree(src)]);
  reg = r;
});

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("cloister-cache push/fetch against cloister", () => {
  let first: PushSummary;

  test("first push uploads every distinct chunk once", async () => {
    first = await push(src, "v1");
    const files = snapshot(src);
    expect(first.files).toBe(files.size);
    expect(first.bytes).toBe([...files.values()].reduce((s, f) => s + f.size, 0));
    expect(first.skipped).toBe(0);
    expect(first.uploaded).toBe(first.uniqueChunks);
    // big-copy.dat repeats big.dat's 4 chunks and ~500 small files repeat earlier ones.
    expect(first.deduplicated).toBeGreaterThanOrEqual(4 + 400);
    expect(first.uniqueChunks + first.deduplicated).toBe(first.chunks);
    expect(first.manifest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  test("second push of the same tree skips every chunk and yields the same manifest digest", async () => {
    const again = await push(src, "v1-again");
    expect(again.uploaded).toBe(0);
    expect(again.uploadedBytes).toBe(0);
    expect(again.skipped).toBe(first.uniqueChunks);
    expect(again.manifest).toBe(first.manifest);
    expect(again.config).toBe(first.config);
  });

  test("an incremental change uploads only the changed chunks", async () => {
    const inc = join(work, "inc");
    await run("cp", ["-a", src, inc]);
    // Flip one byte in the 3rd 4 MiB chunk of big.dat, and add one new small file.
    const fh = await open(join(inc, "out/big.dat"), "r+");
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 9 * MiB + 5);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, 9 * MiB + 5);
    await fh.close();
    writeFileSync(join(inc, "node_modules/NEW.txt"), "new file\n");
    const s = await push(inc, "v2");
    expect(s.uploaded).toBe(2);
    expect(s.skipped).toBe(s.uniqueChunks - 2);
    expect(s.manifest).not.toBe(first.manifest);
    rmSync(inc, { recursive: true, force: true });
  });

  test("fetch by tag restores every file byte-for-byte with its mode", async () => {
    const dst = join(work, "fetched-tag");
    const r = await cli(["fetch", "--insecure", "--json", "--jobs", "6", `${reg.host}/${REPO}:v1`, dst]);
    const s = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(s.files).toBe(first.files);
    expect(compareTrees(src, dst)).toBe(first.files);
    rmSync(dst, { recursive: true, force: true });
  });

  test("fetch by the BLAKE3 manifest digest restores the same tree", async () => {
    const dst = join(work, "fetched-digest");
    await cli(["fetch", "--insecure", "--quiet", `https://${reg.host}/${REPO}@${first.manifest}`, dst]);
    compareTrees(src, dst);
    rmSync(dst, { recursive: true, force: true });
  });

  test("errors carry the registry's OCI error", async () => {
    const r = await cli(["fetch", "--insecure", `${reg.host}/${REPO}:no-such-tag`, join(work, "never")], true);
    expect(r.code, "exit code 4: not found (docs/cli.md)").toBe(4);
    expect(r.stderr).toMatch(/MANIFEST_UNKNOWN/);
    const tls = await cli(["fetch", `${reg.host}/${REPO}:v1`, join(work, "never")], true);
    expect(tls.code, "exit code 5: network or TLS failure").toBe(5);
    expect(tls.stderr).toMatch(/certificate/i);
  });
});

describe("operator switch BLAKE3_IN_SHA256=false", () => {
  test("a registry with the overload disabled refuses the push with DIGEST_INVALID", async () => {
    const strict = await startRegistry({ vars: { BLAKE3_IN_SHA256: "false" } });
    try {
      const tiny = join(work, "tiny");
      mkdirSync(tiny);
      writeFileSync(join(tiny, "a.txt"), "hello build cache\n");
      const r = await run(process.execPath, [CLI, "push", "--insecure", "--quiet", tiny, `${strict.host}/${REPO}:strict`], { allowFail: true });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/DIGEST_INVALID/);
      // The SHA-256 the registry computed is named, so the user can see what happened.
      expect(r.stderr).toContain(createHash("sha256").update("hello build cache\n").digest("hex"));
    } finally {
      await strict.stop();
    }
  });
});

describe("scripts/gen-vectors.mjs", () => {
  test("reproduces the committed vectors byte for byte, twice", async () => {
    for (const i of [1, 2]) {
      const out = join(work, `vectors-${i}`);
      const ts = join(work, `vectors-${i}.ts`);
      await run(process.execPath, [GEN, "--out", out, "--ts", ts]);
      const committed = readdirSync(VECTORS).sort();
      expect(readdirSync(out).sort()).toEqual(committed);
      for (const f of committed) expect(readFileSync(join(out, f)).equals(readFileSync(join(VECTORS, f))), f).toBe(true);
      expect(readFileSync(ts).equals(readFileSync(VECTORS_TS)), "vectors.generated.ts").toBe(true);
    }
  });
});
