// The pull-miss path of proxy namespaces (docs/proxy.md, ADR 0020). Called by the ordinary
// manifest and blob GET/HEAD routes before they read the repository; the auth middleware has
// already checked pull, so a refused pull never reaches here (nor the upstream).
// Bytes land through the normal paths: blobs via uploadWhole (streamed into R2 while hashed,
// verified, committed through the handoff), manifests via commitManifest, byte-exact.
import type { Env } from "../env";
import { config } from "../env";
import { oci, OciError } from "../oci/errors";
import { parseDigest, truncate } from "../oci/grammar";
import { parseManifest } from "../oci/manifest";
import { computeAll, checkClaim } from "../digest/verify";
import { hashHex } from "../digest/hasher";
import { commitManifest } from "../storage/handoff";
import { digestPolicy, uploadWhole } from "../storage/uploads";
import { memberBlob, memberManifest } from "../storage/backfill";
import { record } from "../audit/record";
import { proxyFor, type ProxyTarget } from "./config";
import { isDigestMismatch, takeFillLease, teeFill } from "./fill";
import { MANIFEST_ACCEPT, isOutage, unreachable, upstreamError, upstreamFetch } from "./upstream";

/** Response header on a tag served from the cache because the upstream could not revalidate it. */
export const STALE_HEADER = "Cloister-Proxy-Stale";

/**
 * In-isolate single flight for manifests: concurrent misses for the same repository and reference
 * in one isolate share one upstream fetch (blobs: across isolates, src/proxy/fill.ts).
 */
const inflight = new Map<string, Promise<unknown>>();
function once<T>(key: string, run: () => Promise<T>): Promise<T> {
  const got = inflight.get(key) as Promise<T> | undefined;
  if (got) return got;
  const p = run().finally(() => inflight.delete(key));
  inflight.set(key, p);
  return p;
}

const stateKey = (repo: string, tag: string) => `_proxy/tags/${repo}/${tag}`;

/**
 * Make sure `reference` of proxy repository `repo` is cached and fresh. Returns null for an
 * ordinary repository, else the stale reason when a cached tag is served because the upstream
 * failed to revalidate it.
 */
export async function proxyManifest(env: Env, repo: string, ref: { tag: string | null; digest: string | null }): Promise<{ stale: string | null } | null> {
  const t = await proxyFor(env, repo);
  if (!t) return null;
  if (ref.digest !== null) {
    const digest = ref.digest;
    if (await memberManifest(env, repo, digest, true)) return { stale: null };
    await once(`m|${repo}|${digest}`, () => fetchManifest(env, t, repo, digest, null));
    return { stale: null };
  }
  const tag = ref.tag!;
  const local = await memberManifest(env, repo, tag, false);
  if (local) {
    const state = await env.BUCKET.head(stateKey(repo, tag));
    const checkedAt = Number(state?.customMetadata?.checkedAt ?? 0);
    if (Date.now() - checkedAt < t.ns.tagTtlSeconds * 1000) return { stale: null };
  }
  try {
    await once(`t|${repo}|${tag}`, () => revalidate(env, t, repo, tag, local?.digest ?? null));
    return { stale: null };
  } catch (err) {
    if (local && isOutage(err)) {
      console.warn(`proxy: serving cached ${repo}:${tag}: ${(err as Error).message}`);
      return { stale: `upstream unavailable (${err instanceof OciError ? err.status : "error"}); cached ${local.digest}` };
    }
    throw err;
  }
}

async function revalidate(env: Env, t: ProxyTarget, repo: string, tag: string, localDigest: string | null): Promise<void> {
  if (localDigest !== null) {
    const head = await upstreamFetch(t, "HEAD", `manifests/${tag}`, { Accept: MANIFEST_ACCEPT });
    if (!head.ok) throw await upstreamError(t, head, manifestUnknown(t, tag));
    if (head.headers.get("Docker-Content-Digest") === localDigest) {
      await markChecked(env, repo, tag, localDigest);
      return;
    }
  }
  await fetchManifest(env, t, repo, tag, tag);
}

async function markChecked(env: Env, repo: string, tag: string, digest: string) {
  await env.BUCKET.put(stateKey(repo, tag), "", { customMetadata: { checkedAt: String(Date.now()), digest } });
}

/** GET a manifest upstream (by tag or digest), verify it, store it byte-exact, move `tag`. */
async function fetchManifest(env: Env, t: ProxyTarget, repo: string, reference: string, tag: string | null): Promise<void> {
  const cfg = config(env);
  const res = await upstreamFetch(t, "GET", `manifests/${reference}`, { Accept: MANIFEST_ACCEPT });
  if (!res.ok) throw await upstreamError(t, res, manifestUnknown(t, reference));
  const body = await readCapped(t, res, cfg.maxManifestBytes);
  const sha256 = hashHex("sha256", body);
  let digest = `sha256:${sha256}`;
  if (tag === null) {
    const claim = parseDigest(reference);
    const verdict = checkClaim(claim, computeAll(body, claim, digestPolicy(env, repo)), digestPolicy(env, repo));
    if (!verdict.ok) throw await mismatch(env, t, repo, claim.digest, "manifest");
    digest = claim.digest;
  } else {
    const said = res.headers.get("Docker-Content-Digest");
    if (said && said.startsWith("sha256:") && said !== digest) throw await mismatch(env, t, repo, said, "manifest");
  }
  let parsed;
  try {
    parsed = parseManifest(body, res.headers.get("Content-Type"), { maxReferences: cfg.maxManifestReferences });
  } catch (err) {
    if (!(err instanceof OciError)) throw err;
    throw unreachable(t, `its manifest ${truncate(reference)} is not one cloister stores: ${err.message}`);
  }
  // References are fetched when clients ask for them: they are recorded for GC but not required.
  await commitManifest(env, { repo, digest, sha256, body, parsed, tag, lazyReferences: true });
  if (tag !== null) await markChecked(env, repo, tag, digest);
}

/** A cold blob streamed to this client while it lands in R2 (see teeFill). */
export interface StreamedBlob {
  body: ReadableStream<Uint8Array>;
  /** The upstream's Content-Length, or null when it sent none. */
  size: number | null;
}

/**
 * A blob missing from proxy repository `repo`: fetch it from the upstream (one filler per
 * repository and digest, src/proxy/fill.ts), verify it and commit it through the normal handoff.
 * Returns null when the blob is a member now (the caller serves it from R2), or — with `stream`
 * (a plain GET) — the body to send while it is still landing; `waitUntil` keeps that fill alive
 * if the client leaves. Without `stream` (HEAD, ranges) the fill completes before this returns.
 */
export async function proxyBlob(env: Env, repo: string, digestParam: string, opts: { stream?: boolean; waitUntil?: (p: Promise<unknown>) => void } = {}): Promise<StreamedBlob | null> {
  const t = await proxyFor(env, repo);
  if (!t) return null;
  const claim = parseDigest(digestParam);
  if (await memberBlob(env, repo, claim.digest)) return null;
  const lease = await takeFillLease(env, repo, claim.digest);
  if (!lease) return null; // another request filled it meanwhile
  let streaming = false;
  try {
    const res = await upstreamFetch(t, "GET", `blobs/${claim.digest}`);
    if (!res.ok) throw await upstreamError(t, res, oci("BLOB_UNKNOWN", `blob ${claim.digest} is not known to ${t.ns.upstream}/${t.upstreamRepo}`, { digest: claim.digest }));
    const declared = res.headers.get("Content-Length");
    const contentLength = declared && /^\d+$/.test(declared) ? Number(declared) : null;
    if (opts.stream && opts.waitUntil && res.body) {
      const fill = teeFill(env, repo, claim, res.body, contentLength);
      streaming = true;
      opts.waitUntil(fill.done.then(async (outcome) => {
        if (!outcome.ok) await fillFailed(env, t, repo, claim.digest, outcome.error).catch(() => {});
      }).finally(() => lease.release()));
      return { body: fill.body, size: contentLength };
    }
    try {
      await uploadWhole(env, repo, claim, { stream: res.body, contentLength });
    } catch (err) {
      throw await fillFailed(env, t, repo, claim.digest, err);
    }
    return null;
  } finally {
    if (!streaming) await lease.release();
  }
}

/** A failed fill as the OCI error to answer (uploadWhole already deleted what it wrote). */
async function fillFailed(env: Env, t: ProxyTarget, repo: string, digest: string, err: unknown): Promise<OciError> {
  if (isDigestMismatch(err)) return mismatch(env, t, repo, digest, "blob");
  if (err instanceof OciError) return err;
  const why = `the transfer of ${digest} broke off (${err instanceof Error ? err.message : String(err)})`;
  console.warn(`proxy: ${repo}: ${why}`);
  return unreachable(t, why);
}

async function mismatch(env: Env, t: ProxyTarget, repo: string, digest: string, kind: "blob" | "manifest"): Promise<OciError> {
  const message = `upstream ${t.ns.upstream} sent a ${kind} whose bytes do not match ${digest}; the bytes were discarded`;
  console.error(`proxy: ${message} (repository ${repo})`);
  await record(env, { action: "proxy.digest_mismatch", target: { repository: repo, digest }, outcome: { status: 502, code: "DIGEST_INVALID" }, details: { upstream: t.ns.upstream, kind } });
  return oci("INTERNAL", message, { digest, upstream: t.ns.upstream }, 502);
}

function manifestUnknown(t: ProxyTarget, reference: string) {
  return oci("MANIFEST_UNKNOWN", `manifest ${truncate(reference)} is not known to ${t.ns.upstream}/${t.upstreamRepo}`, { reference: truncate(reference) });
}

async function readCapped(t: ProxyTarget, res: Response, max: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get("Content-Length") ?? "0");
  if (declared > max) {
    await res.body?.cancel().catch(() => {});
    throw unreachable(t, `its manifest is ${declared} bytes, over this registry's limit of ${max}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw unreachable(t, `its manifest exceeds this registry's limit of ${max} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const ch of chunks) {
    out.set(ch, off);
    off += ch.length;
  }
  return out;
}

/** Pushes into a proxy namespace are refused: its content belongs to the upstream. */
export async function refuseProxyPush(env: Env, repo: string): Promise<void> {
  const t = await proxyFor(env, repo);
  if (!t) return;
  throw oci("UNSUPPORTED", `${repo} is in proxy namespace ${t.ns.prefix}/, a read-only cache of ${t.ns.upstream}; push to the upstream instead`, { repository: repo, upstream: t.ns.upstream }, 405);
}
