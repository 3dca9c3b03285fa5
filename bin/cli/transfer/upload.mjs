// Pushing to a registry: blobs in chunks that respect the registry's advertised
// OCI-Chunk-Max-Length / OCI-Chunk-Min-Length, resumed from the upload's Range after a dropped
// connection or a 5xx, skipped when the registry has them, or mounted from another repository;
// manifests byte for byte. See docs/adr/0015-cli-transfer.md.
import { Transform } from "node:stream";
import { RegistryError, EXIT, expectStatus, describeError } from "../../lib/registry-client.mjs";

const MiB = 1 << 20;
/** Chunk size when the registry advertises no maximum (distribution, most others). */
export const DEFAULT_CHUNK = 64 * MiB;
/** Blobs up to this size go in one PUT (configs, small layers): two requests instead of three. */
const SMALL_BLOB = 1 * MiB;
/** Consecutive failed attempts (no byte gained) before a blob upload gives up. */
const MAX_FAILURES = 6;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** "0-N" → N+1; "0-0" is ambiguous (0 or 1 byte), so the caller's known offset decides. */
function rangeEnd(header, known) {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(header ?? "");
  if (!m) return null;
  const end = Number(m[1]);
  return end === 0 && known === 0 ? 0 : end + 1;
}

function retryAfterMs(res, attempt) {
  const ra = Number(res?.headers?.["retry-after"]);
  return Number.isFinite(ra) && ra >= 0 ? Math.min(ra, 30) * 1000 : Math.min(250 * 2 ** attempt, 8000);
}

const transient = (status) => status >= 500 || status === 408 || status === 429;

export class RegistryDestination {
  /**
   * @param {import("../../lib/registry-client.mjs").RegistryClient} client
   * @param {{host: string, repo: string, tag?: string|null, digest?: string|null}} ref
   * @param {{chunkSize?: number, mountFrom?: string[], log?: (m: string) => void}} opts
   */
  constructor(client, ref, opts = {}) {
    this.client = client;
    this.ref = ref;
    this.opts = opts;
    this.scope = [`repository:${ref.repo}:pull,push`, ...(opts.mountFrom ?? []).map((r) => `repository:${r}:pull`)];
    this.stats = { uploaded: 0, uploadedBytes: 0, skipped: 0, skippedBytes: 0, mounted: 0, chunks: 0, resumes: 0, chunkSize: null };
  }

  get name() {
    return `docker://${this.ref.host}/${this.ref.repo}`;
  }

  async hasBlob(digest) {
    const r = await this.client.request("HEAD", `/v2/${this.ref.repo}/blobs/${digest}`, { scope: this.scope });
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    expectStatus(r, [200, 404], `HEAD blob ${digest}`);
  }

  /**
   * Make `desc`'s blob present in the repository. `blob.open(start, end)` reads it from any
   * offset; `bar.update(bytesDone)` reports progress. Resolves "skipped" | "mounted" | "uploaded".
   */
  async putBlob(desc, blob, bar) {
    const repo = this.ref.repo;
    if (await this.hasBlob(desc.digest)) {
      this.stats.skipped++;
      this.stats.skippedBytes += desc.size;
      bar?.update(desc.size);
      return "skipped";
    }
    for (const from of this.opts.mountFrom ?? []) {
      const r = await this.client.request("POST", `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`, {
        scope: this.scope, body: Buffer.alloc(0),
      });
      if (r.status === 201) {
        this.stats.mounted++;
        bar?.update(desc.size);
        return "mounted";
      }
      if (r.status === 202 && r.headers.location) {
        // Not mountable from there; cancel the session the registry opened instead.
        await this.client.request("DELETE", new URL(r.headers.location, this.client.base).toString(), { scope: this.scope, retries: 0 }).catch(() => {});
      } else expectStatus(r, [201, 202], `mount ${desc.digest} from ${from}`);
    }
    for (let restart = 0; ; restart++) {
      try {
        await this.upload(desc, blob, bar);
        this.stats.uploaded++;
        this.stats.uploadedBytes += desc.size;
        return "uploaded";
      } catch (err) {
        // The session vanished (expired, or the registry lost it): start over once.
        if (err.uploadGone && restart === 0) {
          this.opts.log?.(`${short(desc.digest)}: upload session gone, starting the blob again`);
          continue;
        }
        throw err;
      }
    }
  }

  async open() {
    const r = expectStatus(
      await this.client.request("POST", `/v2/${this.ref.repo}/blobs/uploads/`, { scope: this.scope, body: Buffer.alloc(0) }),
      [202], `POST ${this.ref.repo}/blobs/uploads/`);
    if (!r.headers.location) throw new RegistryError("the registry opened an upload without a Location");
    const num = (h) => (h !== undefined && /^\d+$/.test(h) ? Number(h) : null);
    return { location: new URL(r.headers.location, this.client.base), min: num(r.headers["oci-chunk-min-length"]), max: num(r.headers["oci-chunk-max-length"]) };
  }

  /** Chunk size: --chunk-size or the advertised maximum (else DEFAULT_CHUNK), within [min, max]. */
  chunkFor(session) {
    let size = this.opts.chunkSize ?? session.max ?? DEFAULT_CHUNK;
    if (session.max !== null && size > session.max) size = session.max;
    if (session.min !== null && size < session.min && (session.max === null || session.min <= session.max)) size = session.min;
    return size;
  }

  async upload(desc, blob, bar) {
    const session = await this.open();
    let location = session.location;
    let chunk = this.chunkFor(session);
    this.stats.chunkSize ??= chunk;
    const size = desc.size;
    let offset = 0;
    let failures = 0;
    const scope = this.scope;
    const gone = (what, res) => Object.assign(new RegistryError(`${what}: ${describeError(res)}`, { status: res.status }), { uploadGone: true });

    /** After a failure: wait, then ask the registry how much it kept. */
    const resume = async (why, res) => {
      if (++failures > MAX_FAILURES) throw new RegistryError(`${short(desc.digest)}: giving up after ${MAX_FAILURES} failed attempts; last: ${why}`, { exitCode: EXIT.NETWORK });
      this.stats.resumes++;
      this.opts.log?.(`${short(desc.digest)}: ${why}; resuming`);
      await sleep(retryAfterMs(res, failures - 1));
      let st;
      try {
        st = await this.client.request("GET", location.toString(), { scope, retries: 3 });
      } catch (err) {
        return; // still unreachable: the next attempt fails and comes back here
      }
      if (st.status === 404) throw gone(`GET upload status`, st);
      if (st.status !== 204 && st.status !== 200) return;
      if (st.headers.location) location = new URL(st.headers.location, location);
      const end = rangeEnd(st.headers.range, offset);
      if (end !== null && end <= size) offset = end;
      bar?.update(offset);
    };

    const small = size <= Math.min(SMALL_BLOB, chunk);
    while (!small && offset < size) {
      const len = Math.min(chunk, size - offset);
      const start = offset;
      let res;
      try {
        res = await this.client.request("PATCH", location.toString(), {
          scope,
          retries: 0, // a PATCH is not idempotent: failures resume from the upload's Range instead
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `${start}-${start + len - 1}` },
          body: { length: len, open: () => counted(blob.open(start, start + len), (n) => bar?.update(start + n)) },
        });
      } catch (err) {
        if (err.exitCode === EXIT.NETWORK) {
          await resume(err.message);
          continue;
        }
        throw err;
      }
      if (res.status === 202) {
        if (res.headers.location) location = new URL(res.headers.location, location);
        const end = rangeEnd(res.headers.range, start + len);
        offset = end ?? start + len;
        if (offset !== start + len) this.opts.log?.(`${short(desc.digest)}: registry reports ${offset} bytes after a chunk ending at ${start + len}`);
        failures = 0;
        this.stats.chunks++;
        bar?.update(offset);
        continue;
      }
      if (res.status === 413) {
        // The registry (or a proxy in front of it) refuses bodies this large: shrink and go on.
        let detail = {};
        try {
          detail = JSON.parse(res.body.toString("utf8")).errors?.[0]?.detail ?? {};
        } catch {}
        const limit = Number(detail?.limit);
        const next = Number.isFinite(limit) && limit > 0 && limit < chunk ? limit : Math.floor(chunk / 2);
        if (next < (session.min ?? MiB) || next < 64 * 1024) throw new RegistryError(`PATCH ${short(desc.digest)}: ${describeError(res)}; chunks cannot get smaller`);
        this.opts.log?.(`${short(desc.digest)}: ${len}-byte chunk refused (413); using ${next}-byte chunks`);
        chunk = next;
        this.stats.chunkSize = Math.min(this.stats.chunkSize, chunk);
        await resume("413", { headers: { "retry-after": "0" } });
        continue;
      }
      if (res.status === 404) throw gone(`PATCH ${short(desc.digest)}`, res);
      if (transient(res.status) || res.status === 416) {
        await resume(`PATCH answered ${describeError(res)}`, res);
        continue;
      }
      expectStatus(res, [202], `PATCH ${short(desc.digest)}`);
    }

    // Close with the digest; a small blob travels in this PUT.
    const put = new URL(location);
    put.searchParams.set("digest", desc.digest);
    for (let attempt = 0; ; attempt++) {
      const body = small ? { length: size, open: () => counted(blob.open(0, size), (n) => bar?.update(n)) } : Buffer.alloc(0);
      let res;
      try {
        res = await this.client.request("PUT", put.toString(), { scope, retries: 0, body, headers: { "Content-Type": "application/octet-stream" } });
      } catch (err) {
        if (err.exitCode !== EXIT.NETWORK || attempt >= MAX_FAILURES) throw err;
        this.stats.resumes++;
        await sleep(retryAfterMs(null, attempt));
        if (await this.hasBlob(desc.digest)) break; // the lost answer was a success
        continue;
      }
      if (res.status === 201) break;
      if (res.status === 404 && (await this.hasBlob(desc.digest))) break;
      if (res.status === 404) throw gone(`PUT ${short(desc.digest)}`, res);
      if (transient(res.status) && attempt < MAX_FAILURES) {
        this.stats.resumes++;
        await sleep(retryAfterMs(res, attempt));
        continue;
      }
      expectStatus(res, [201], `PUT ${short(desc.digest)}`);
    }
    bar?.update(size);
  }

  /** PUT the manifest bytes as they are; returns the registry's digest for them. */
  async putManifest(reference, mediaType, bytes) {
    const r = expectStatus(
      await this.client.request("PUT", `/v2/${this.ref.repo}/manifests/${reference}`, { scope: this.scope, headers: { "Content-Type": mediaType }, body: bytes }),
      [201], `PUT ${this.ref.repo} manifest ${reference}`);
    return r.headers["docker-content-digest"] ?? null;
  }

  async close() {}
}

export const short = (digest) => digest.replace(/^(sha256:)?(.{12}).*$/, "$2");

/** Pass `stream` through, calling `onBytes(total so far)` as data flows. */
function counted(stream, onBytes) {
  let n = 0;
  const t = new Transform({
    transform(chunk, _enc, cb) {
      n += chunk.length;
      onBytes(n);
      cb(null, chunk);
    },
  });
  stream.on("error", (e) => t.destroy(e));
  return stream.pipe(t);
}
