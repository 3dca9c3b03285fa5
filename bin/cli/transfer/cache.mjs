// `cloister cache` (alias: the `cloister-cache` bin): reference producer/consumer for
// build-cache/v1 (cloister-spec/build-cache/v1/README.md).
//
//   cloister cache push  [options] <dir> <registry>/<repo>:<tag>
//   cloister cache fetch [options] <registry>/<repo>[:<tag>|@<digest>] <dir>
//
// push: walks <dir> (sorted, deterministic), cuts every regular file into fixed-size chunks,
// hashes each with BLAKE3, HEADs each chunk and uploads only the missing ones (monolithic
// POST ?digest=sha256:<blake3>), then uploads the config blob and PUTs the manifest by its
// BLAKE3 digest and by tag. fetch: reads the manifest and config, downloads every chunk,
// verifies its BLAKE3, and writes the tree byte-identical with file modes.
import { mkdir, open, readdir, stat, chmod, lstat, writeFile } from "node:fs/promises";
import { join, resolve, dirname, sep } from "node:path";
import { createHash } from "node:crypto";
import { createBLAKE3 } from "hash-wasm";
import {
  buildConfig, buildManifest, canonicalJson, blake3HexOf, comparePaths, configProblems, manifestProblems, isSafePath,
  parseMode, utf8, wireDigest, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, MANIFEST_MEDIA_TYPE,
} from "../../lib/build-cache.mjs";
import { RegistryError, parseReference, expectStatus, connect, EXIT } from "../../lib/registry-client.mjs";
import { credentialsFor } from "../../lib/credentials.mjs";
import { pool } from "./copy.mjs";

const USAGE = `usage:
  cloister cache push  [options] <dir> <registry>/<repo>:<tag>
  cloister cache fetch [options] <registry>/<repo>[:<tag>|@<digest>] <dir>
(\`cloister-cache\` is an alias of \`cloister cache\`.)

The registry may be given as a URL prefix: http://127.0.0.1:8787/team/cache:main

options:
  --plain-http           talk HTTP instead of HTTPS (automatic for 127.0.0.1 and localhost)
  --insecure             accept any TLS certificate (self-signed development registries)
  --user U, --password P credentials (or CLOISTER_USER / CLOISTER_PASSWORD)
  --chunk-size N         push: chunk size in bytes; K/M/KiB/MiB suffixes (default 4MiB)
  --jobs N               parallel transfers (default 4)
  --no-layer-annotations push: omit per-chunk annotations (smaller manifests for huge caches)
  --force                fetch: write into a non-empty directory
  --json                 print the final summary as JSON on stdout
  --quiet                no progress output on stderr
  -h, --help             this text
`;

// ---------- argument parsing ----------

function parseSize(s) {
  const m = /^(\d+)\s*(k|kib|kb|m|mib|mb|g|gib|gb)?$/i.exec(String(s).trim());
  if (!m) throw new RegistryError(`invalid size ${JSON.stringify(s)}`, { exitCode: EXIT.USAGE });
  const mult = { k: 1024, kib: 1024, kb: 1024, m: 1 << 20, mib: 1 << 20, mb: 1 << 20, g: 1 << 30, gib: 1 << 30, gb: 1 << 30 };
  return Number(m[1]) * (m[2] ? mult[m[2].toLowerCase()] : 1);
}

function parseArgs(argv) {
  const o = { positional: [], jobs: 4, chunkSize: DEFAULT_CHUNK_SIZE, layerAnnotations: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new RegistryError(`${flag} needs a value`, { exitCode: EXIT.USAGE });
      return argv[++i];
    };
    switch (flag) {
      case "--plain-http": o.plainHttp = true; break;
      case "--insecure": o.insecure = true; break;
      case "--user": o.user = value(); break;
      case "--password": o.password = value(); break;
      case "--chunk-size": o.chunkSize = parseSize(value()); break;
      case "--jobs": o.jobs = Math.max(1, Math.min(64, parseInt(value(), 10) || 4)); break;
      case "--no-layer-annotations": o.layerAnnotations = false; break;
      case "--force": o.force = true; break;
      case "--json": o.json = true; break;
      case "--quiet": case "-q": o.quiet = true; break;
      case "-h": case "--help": o.help = true; break;
      default:
        if (a.startsWith("-") && a !== "-") throw new RegistryError(`unknown option ${a}\n\n${USAGE}`, { exitCode: EXIT.USAGE });
        o.positional.push(a);
    }
  }
  if (o.chunkSize < MIN_CHUNK_SIZE || o.chunkSize > MAX_CHUNK_SIZE)
    throw new RegistryError(`--chunk-size must be between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE} bytes`);
  return o;
}

/** A connected client (scheme chosen and /v2/ answered; see connect()), with credentials. */
function clientFor(ref, o, scope) {
  const creds = credentialsFor(ref.host, { user: o.user, password: o.password });
  return connect({
    host: ref.host, scheme: ref.scheme, plainHttp: o.plainHttp, insecure: o.insecure,
    user: creds?.user, password: creds?.password, maxSockets: o.jobs + 2, scope,
  });
}

// ---------- progress ----------

const fmtBytes = (n) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) (n /= 1024), i++;
  return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${u[i]}`;
};

class Progress {
  constructor(label, totalBytes, quiet) {
    this.label = label;
    this.total = totalBytes;
    this.quiet = quiet;
    this.tty = process.stderr.isTTY;
    this.done = 0;
    this.counts = {};
    this.start = Date.now();
    this.last = this.tty ? 0 : this.start;
  }
  add(bytes, counter) {
    this.done += bytes;
    if (counter) this.counts[counter] = (this.counts[counter] ?? 0) + 1;
    this.tick();
  }
  line() {
    const secs = (Date.now() - this.start) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const counts = Object.entries(this.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    return `${this.label}: ${fmtBytes(this.done)} / ${fmtBytes(this.total)} (${fmtBytes(rate)}/s)${counts ? `; chunks: ${counts}` : ""}`;
  }
  tick(force = false) {
    if (this.quiet) return;
    const now = Date.now();
    if (!force && now - this.last < (this.tty ? 200 : 5000)) return;
    this.last = now;
    process.stderr.write(this.tty ? `\r\x1b[K${this.line()}` : `${this.line()}\n`);
  }
  finish() {
    if (this.quiet) return;
    process.stderr.write(this.tty ? `\r\x1b[K${this.line()}\n` : `${this.line()}\n`);
  }
}

// ---------- push ----------

/** Regular files under root, as { path (POSIX, relative), abs, size, mode }, in canonical order. */
async function walk(root, warn) {
  const out = [];
  const rec = async (dirAbs, rel) => {
    const entries = await readdir(dirAbs, { withFileTypes: true });
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = join(dirAbs, e.name);
      if (e.isDirectory()) await rec(abs, r);
      else if (e.isFile()) {
        if (!isSafePath(r)) {
          warn(`skipping ${JSON.stringify(r)}: not a portable path`);
          continue;
        }
        const st = await stat(abs);
        out.push({ path: r, abs, size: st.size, mode: st.mode & 0o777 });
      } else warn(`skipping ${r}: ${e.isSymbolicLink() ? "symbolic links" : "special files"} are not part of build-cache/v1`);
    }
  };
  await rec(root, "");
  return out.sort((a, b) => comparePaths(a.path, b.path));
}

async function readExactly(abs, offset, length, path) {
  const fh = await open(abs, "r");
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got !== length) throw new RegistryError(`${path} changed while it was being pushed (short read)`);
    return buf;
  } finally {
    await fh.close();
  }
}

async function blobExists(client, repo, digest, scope) {
  const r = await client.request("HEAD", `/v2/${repo}/blobs/${digest}`, { scope });
  if (r.status === 200) return true;
  if (r.status === 404) return false;
  expectStatus(r, [200, 404], `HEAD blob ${digest}`);
}

async function uploadBlob(client, repo, digest, body, scope) {
  const r = await client.request("POST", `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, {
    headers: { "Content-Type": "application/octet-stream" }, body, scope,
  });
  if (r.status === 201) return;
  if (r.status === 202 && r.headers.location) {
    // The registry opened a session instead of taking the monolithic body: finish with PUT.
    const u = new URL(r.headers.location, client.base);
    u.searchParams.set("digest", digest);
    const fin = await client.request("PUT", u.toString(), { headers: { "Content-Type": "application/octet-stream" }, body, scope });
    expectStatus(fin, [201], `upload ${digest}`);
    return;
  }
  expectStatus(r, [201], `upload ${digest}`);
}

async function push(o) {
  const [dir, refText] = o.positional;
  if (!dir || !refText || o.positional.length > 2) throw new RegistryError(USAGE, { exitCode: EXIT.USAGE });
  const ref = parseReference(refText);
  if (ref.digest) throw new RegistryError("push needs a tag, not a digest");
  const root = resolve(dir);
  if (!(await stat(root).catch(() => null))?.isDirectory()) throw new RegistryError(`${dir} is not a directory`);
  const warn = (m) => process.stderr.write(`warning: ${m}\n`);
  const files = await walk(root, warn);
  const total = files.reduce((s, f) => s + f.size, 0);
  const scope = `repository:${ref.repo}:pull,push`;
  const client = await clientFor(ref, o, scope);
  const t0 = Date.now();
  try {

    const tasks = [];
    const chunkHex = files.map((f) => new Array(Math.ceil(f.size / o.chunkSize)));
    files.forEach((f, fi) => {
      for (let ci = 0; ci * o.chunkSize < f.size; ci++) tasks.push({ fi, ci, offset: ci * o.chunkSize, length: Math.min(o.chunkSize, f.size - ci * o.chunkSize) });
    });
    const stats = { uploaded: 0, uploadedBytes: 0, skipped: 0, skippedBytes: 0, deduplicated: 0 };
    const seen = new Map(); // digest → Promise (one HEAD/upload per distinct chunk)
    const chunkSizes = new Map();
    const hashers = await Promise.all(Array.from({ length: o.jobs }, () => createBLAKE3()));
    let hasherNext = 0;
    const progress = new Progress(`push ${ref.repo}:${ref.tag}`, total, o.quiet);
    await pool(tasks, o.jobs, async (t) => {
      const f = files[t.fi];
      const buf = await readExactly(f.abs, t.offset, t.length, f.path);
      const h = hashers[hasherNext++ % hashers.length];
      h.init();
      h.update(buf);
      const hex = h.digest("hex");
      chunkHex[t.fi][t.ci] = hex;
      const d = wireDigest(hex);
      chunkSizes.set(d, buf.length);
      if (seen.has(d)) {
        await seen.get(d);
        stats.deduplicated++;
        progress.add(buf.length, "deduplicated");
        return;
      }
      const job = (async () => {
        if (await blobExists(client, ref.repo, d, scope)) {
          stats.skipped++;
          stats.skippedBytes += buf.length;
          progress.add(buf.length, "skipped");
        } else {
          await uploadBlob(client, ref.repo, d, buf, scope);
          stats.uploaded++;
          stats.uploadedBytes += buf.length;
          progress.add(buf.length, "uploaded");
        }
      })();
      seen.set(d, job);
      await job;
    });
    progress.finish();

    const config = buildConfig({ chunkSize: o.chunkSize, files: files.map((f, i) => ({ path: f.path, size: f.size, mode: f.mode, chunks: chunkHex[i] })) });
    const configBytes = Buffer.from(utf8(canonicalJson(config)));
    const configHex = blake3Hex(hashers[0], configBytes);
    const configDigest = wireDigest(configHex);
    if (!(await blobExists(client, ref.repo, configDigest, scope))) await uploadBlob(client, ref.repo, configDigest, configBytes, scope);

    const manifest = buildManifest({ config, configBlake3Hex: configHex, configSize: configBytes.length, chunkSizes, layerAnnotations: o.layerAnnotations });
    const manifestBytes = Buffer.from(utf8(canonicalJson(manifest)));
    const manifestDigest = wireDigest(blake3Hex(hashers[0], manifestBytes));
    const mh = { "Content-Type": MANIFEST_MEDIA_TYPE };
    expectStatus(await client.request("PUT", `/v2/${ref.repo}/manifests/${manifestDigest}`, { headers: mh, body: manifestBytes, scope }), [201], `PUT manifest ${manifestDigest}`);
    const tagRes = expectStatus(await client.request("PUT", `/v2/${ref.repo}/manifests/${ref.tag}`, { headers: mh, body: manifestBytes, scope }), [201], `PUT manifest :${ref.tag}`);

    return {
      command: "push",
      reference: `${ref.host}/${ref.repo}:${ref.tag}`,
      files: files.length,
      bytes: total,
      chunkSize: o.chunkSize,
      chunks: tasks.length,
      uniqueChunks: seen.size,
      uploaded: stats.uploaded,
      uploadedBytes: stats.uploadedBytes,
      skipped: stats.skipped,
      skippedBytes: stats.skippedBytes,
      deduplicated: stats.deduplicated,
      config: configDigest,
      manifest: manifestDigest,
      manifestBytes: manifestBytes.length,
      registryDigest: tagRes.headers["docker-content-digest"] ?? null,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    client.close();
  }
}

function blake3Hex(h, bytes) {
  h.init();
  h.update(bytes);
  return h.digest("hex");
}

// ---------- fetch ----------

function verifyDigest(bytes, digest, hasher, what) {
  const i = digest.indexOf(":");
  const alg = digest.slice(0, i);
  const hex = digest.slice(i + 1);
  const b3 = blake3Hex(hasher, bytes);
  if (alg === "blake3" ? b3 === hex : alg === "sha256" && (b3 === hex || createHash("sha256").update(bytes).digest("hex") === hex)) return;
  throw new RegistryError(`${what}: content does not match ${digest} (BLAKE3 ${b3})`);
}

async function fetchCache(o) {
  const [refText, dir] = o.positional;
  if (!refText || !dir || o.positional.length > 2) throw new RegistryError(USAGE, { exitCode: EXIT.USAGE });
  const ref = parseReference(refText);
  const root = resolve(dir);
  const existing = await stat(root).catch(() => null);
  if (existing && !existing.isDirectory()) throw new RegistryError(`${dir} exists and is not a directory`);
  if (existing && !o.force && (await readdir(root)).length) throw new RegistryError(`${dir} is not empty (use --force to write into it)`);
  const scope = `repository:${ref.repo}:pull`;
  const client = await clientFor(ref, o, scope);
  const hashers = await Promise.all(Array.from({ length: o.jobs }, () => createBLAKE3()));
  const t0 = Date.now();
  try {
    const mref = ref.digest ?? ref.tag;
    const mr = expectStatus(
      await client.request("GET", `/v2/${ref.repo}/manifests/${mref}`, { headers: { Accept: MANIFEST_MEDIA_TYPE }, scope }),
      [200], `GET manifest ${ref.repo}:${mref}`);
    const claimed = ref.digest ?? mr.headers["docker-content-digest"];
    if (claimed) verifyDigest(mr.body, claimed, hashers[0], "manifest");
    let manifest;
    try {
      manifest = JSON.parse(mr.body.toString("utf8"));
    } catch {
      throw new RegistryError("manifest is not JSON");
    }
    const mp = manifestProblems(manifest);
    if (mp.length) throw new RegistryError(`not a build-cache/v1 manifest: ${mp.slice(0, 5).join("; ")}`);

    const cr = expectStatus(await client.request("GET", `/v2/${ref.repo}/blobs/${manifest.config.digest}`, { scope }), [200], `GET config ${manifest.config.digest}`);
    if (cr.body.length !== manifest.config.size) throw new RegistryError(`config is ${cr.body.length} bytes, descriptor says ${manifest.config.size}`);
    if (blake3Hex(hashers[0], cr.body) !== blake3HexOf(manifest.config.digest)) throw new RegistryError(`config does not match ${manifest.config.digest}`);
    const config = JSON.parse(cr.body.toString("utf8"));
    const cp = configProblems(config);
    if (cp.length) throw new RegistryError(`invalid build-cache/v1 config: ${cp.slice(0, 5).join("; ")}`);
    const layerSize = new Map(manifest.layers.map((l) => [l.digest, l.size]));

    const tasks = [];
    const state = config.files.map((f) => ({ remaining: f.chunks.length, handle: null }));
    let total = 0;
    for (const [fi, f] of config.files.entries()) {
      total += f.size;
      f.chunks.forEach((d, ci) => {
        const length = Math.min(config.chunkSize, f.size - ci * config.chunkSize);
        if (!layerSize.has(d)) throw new RegistryError(`${f.path}: chunk ${d} is not a layer of the manifest`);
        if (layerSize.get(d) !== length) throw new RegistryError(`${f.path}: chunk ${ci} should be ${length} bytes, its descriptor says ${layerSize.get(d)}`);
        tasks.push({ fi, ci, digest: d, offset: ci * config.chunkSize, length });
      });
    }

    await mkdir(root, { recursive: true });
    const target = (p) => {
      const abs = resolve(root, ...p.split("/"));
      if (!abs.startsWith(root + sep)) throw new RegistryError(`refusing to write outside ${dir}: ${p}`);
      return abs;
    };
    const ensureParent = async (abs) => {
      await mkdir(dirname(abs), { recursive: true });
      // A pre-existing symlink on the way could redirect the write; refuse (only with --force can one exist).
      for (let d = dirname(abs); d.startsWith(root + sep); d = dirname(d))
        if ((await lstat(d)).isSymbolicLink()) throw new RegistryError(`refusing to write through symbolic link ${d}`);
    };
    // Empty files have no chunks.
    for (const f of config.files) {
      if (f.size !== 0) continue;
      const abs = target(f.path);
      await ensureParent(abs);
      await writeFile(abs, "");
      await chmod(abs, parseMode(f.mode));
    }

    const progress = new Progress(`fetch ${ref.repo}:${mref}`, total, o.quiet);
    let hasherNext = 0;
    await pool(tasks, o.jobs, async (t) => {
      const f = config.files[t.fi];
      const s = state[t.fi];
      const r = expectStatus(await client.request("GET", `/v2/${ref.repo}/blobs/${t.digest}`, { scope }), [200], `GET chunk ${t.digest} of ${f.path}`);
      if (r.body.length !== t.length) throw new RegistryError(`chunk ${t.digest} of ${f.path}: got ${r.body.length} bytes, expected ${t.length}`);
      const hex = blake3Hex(hashers[hasherNext++ % hashers.length], r.body);
      if (hex !== blake3HexOf(t.digest)) throw new RegistryError(`chunk ${t.digest} of ${f.path}: BLAKE3 of the received bytes is ${hex}`);
      s.handle ??= (async () => {
        const abs = target(f.path);
        await ensureParent(abs);
        const fh = await open(abs, "w");
        await fh.truncate(f.size);
        return fh;
      })();
      const fh = await s.handle;
      let written = 0;
      while (written < r.body.length) written += (await fh.write(r.body, written, r.body.length - written, t.offset + written)).bytesWritten;
      progress.add(r.body.length, "downloaded");
      if (--s.remaining === 0) {
        await fh.close();
        await chmod(target(f.path), parseMode(f.mode));
      }
    });
    progress.finish();
    return {
      command: "fetch",
      reference: `${ref.host}/${ref.repo}${ref.digest ? "@" + ref.digest : ":" + ref.tag}`,
      files: config.files.length,
      bytes: total,
      chunks: tasks.length,
      config: manifest.config.digest,
      manifest: claimed ?? null,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    client.close();
  }
}

// ---------- main ----------

function printSummary(s, o) {
  if (o.json) return process.stdout.write(JSON.stringify(s) + "\n");
  if (s.command === "push") {
    process.stdout.write(
      `pushed ${s.reference}: ${s.files} files, ${fmtBytes(s.bytes)} in ${s.chunks} chunks (${s.uniqueChunks} distinct) in ${s.seconds.toFixed(1)} s\n` +
        `  uploaded ${s.uploaded} chunks (${fmtBytes(s.uploadedBytes)}), skipped ${s.skipped} already in the registry (${fmtBytes(s.skippedBytes)}), ${s.deduplicated} repeated within this push\n` +
        `  manifest ${s.manifest}  config ${s.config}${s.registryDigest && s.registryDigest !== s.manifest ? `  (registry digest ${s.registryDigest})` : ""}\n`,
    );
  } else {
    process.stdout.write(`fetched ${s.reference}: ${s.files} files, ${fmtBytes(s.bytes)} in ${s.chunks} chunks in ${s.seconds.toFixed(1)} s\n`);
  }
}

/** Runs `cloister cache <argv…>`; resolves the process exit code (errors are printed here). */
export async function runCache(argv, name = "cloister cache") {
  try {
    const [cmd, ...rest] = argv;
    if (!cmd || cmd === "-h" || cmd === "--help" || cmd === "help") {
      process.stdout.write(USAGE);
      return cmd ? 0 : EXIT.USAGE;
    }
    const o = parseArgs(rest);
    if (o.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (cmd === "push") printSummary(await push(o), o);
    else if (cmd === "fetch") printSummary(await fetchCache(o), o);
    else throw new RegistryError(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`, { exitCode: EXIT.USAGE });
    return 0;
  } catch (err) {
    if (process.stderr.isTTY) process.stderr.write("\n");
    process.stderr.write(`${name}: ${err instanceof RegistryError ? err.message : err?.stack ?? err}\n`);
    return err instanceof RegistryError ? err.exitCode : 1;
  }
}
