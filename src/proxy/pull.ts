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
import type { ManifestRecord } from "../stores/trust-store";
import { record } from "../audit/record";
import { proxyFor, type ProxyTarget } from "./config";
import { isDigestMismatch, takeFillLease, teeFill } from "./fill";
import { readStreamCapped } from "../http/body";
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

/** R2 key of a cached tag's last upstream check (GC deletes it with the tag). */
export const stateKey = (repo: string, tag: string) => `_proxy/tags/${repo}/${tag}`;

/**
 * Last upstream check per cached tag, kept in the isolate too: a pull within the TTL then costs
 * no R2 read of the tag's state. Bounded; cleared when full (the R2 object stays the truth).
 */
const checked = new Map<string, { at: number; digest: string }>();
const MAX_CHECKED = 10_000;
function noteChecked(repo: string, tag: string, at: number, digest: string) {
  if (checked.size >= MAX_CHECKED) checked.clear();
  checked.set(`${repo}|${tag}`, { at, digest });
}

async function lastCheck(env: Env, repo: string, tag: string, digest: string): Promise<number> {
  const known = checked.get(`${repo}|${tag}`);
  if (known && known.digest === digest) return known.at;
  const state = await env.BUCKET.head(stateKey(repo, tag));
  const at = Number(state?.customMetadata?.checkedAt ?? 0);
  if (state?.customMetadata?.digest === digest) noteChecked(repo, tag, at, digest);
  return at;
}

/**
 * Make sure `reference` of proxy repository `repo` is cached and fresh. Returns null for an
 * ordinary repository. Else `stale`: why a cached tag is served although the upstream failed to
 * revalidate it; `manifest`: the record when it was served from the cache as found (the route
 * uses it instead of looking it up again), null when it was (re)fetched. `pulledDay` (a GET):
 * the lookup records the pull, as the route's would (see TrustStore.manifest).
 */
export async function proxyManifest(env: Env, repo: string, ref: { tag: string | null; digest: string | null }, pulledDay?: number): Promise<{ stale: string | null; manifest: ManifestRecord | null } | null> {
  const t = await proxyFor(env, repo);
  if (!t) return null;
  if (ref.digest !== null) {
    const digest = ref.digest;
    const local = await memberManifest(env, repo, digest, true, pulledDay);
    if (local) return { stale: null, manifest: local };
    // Single flight across isolates, as for blobs (fill.ts): one request fetches, the others wait
    // until the manifest is stored and then read it from the cache.
    const lease = await takeFillLease(env, repo, digest, async () => (await memberManifest(env, repo, digest, true)) !== null);
    if (lease) {
      try {
        await fetchManifest(env, t, repo, digest, null);
      } catch (e) {
        throw namedProblem(t, e);
      } finally {
        await lease.release();
      }
    }
    return { stale: null, manifest: null };
  }
  const tag = ref.tag!;
  const local = await memberManifest(env, repo, tag, false, pulledDay);
  if (local && Date.now() - (await lastCheck(env, repo, tag, local.digest)) < t.ns.tagTtlSeconds * 1000) return { stale: null, manifest: local };
  try {
    const kept = await once(`t|${repo}|${tag}`, () => revalidate(env, t, repo, tag, local?.digest ?? null));
    return { stale: null, manifest: kept ? local : null };
  } catch (err) {
    if (local && isOutage(err)) {
      console.warn(`proxy: serving cached ${repo}:${tag}: ${(err as Error).message}`);
      return { stale: `upstream unavailable (${err instanceof OciError ? err.status : "error"}); cached ${local.digest}`, manifest: local };
    }
    throw namedProblem(t, err);
  }
}

/** An upstream refusal while the namespace's secret is unusable says so (the secret is the likely cause). */
function namedProblem(t: ProxyTarget, err: unknown): unknown {
  if (!t.credentialsProblem || !(err instanceof OciError) || err.code !== "DENIED") return err;
  return oci("DENIED", `${err.message}; and ${t.credentialsProblem}`, err.detail, err.status);
}

/** True when the cached tag still matches the upstream (only its check time renewed). */
async function revalidate(env: Env, t: ProxyTarget, repo: string, tag: string, localDigest: string | null): Promise<boolean> {
  if (localDigest !== null) {
    const head = await upstreamFetch(t, "HEAD", `manifests/${tag}`, { Accept: MANIFEST_ACCEPT });
    if (!head.ok) throw await upstreamError(t, head, manifestUnknown(t, tag));
    if (head.headers.get("Docker-Content-Digest") === localDigest) {
      await markChecked(env, repo, tag, localDigest);
      return true;
    }
  }
  await fetchManifest(env, t, repo, tag, tag);
  return false;
}

async function markChecked(env: Env, repo: string, tag: string, digest: string) {
  const at = Date.now();
  await env.BUCKET.put(stateKey(repo, tag), "", { customMetadata: { checkedAt: String(at), digest } });
  noteChecked(repo, tag, at, digest);
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
 * Returns `{member}` when it was cached (the lookup, for the route to reuse), `{streamed}` — with
 * `stream` (a plain GET) — the body to send while it is still landing (`waitUntil` keeps that fill
 * alive if the client leaves), or null: not a proxy repository, or filled now (look it up).
 * Without `stream` (HEAD, ranges) the fill completes before this returns.
 */
export async function proxyBlob(
  env: Env, repo: string, digestParam: string, opts: { stream?: boolean; waitUntil?: (p: Promise<unknown>) => void } = {},
): Promise<{ member: NonNullable<Awaited<ReturnType<typeof memberBlob>>> } | { streamed: StreamedBlob } | null> {
  const t = await proxyFor(env, repo);
  if (!t) return null;
  const claim = parseDigest(digestParam);
  const member = await memberBlob(env, repo, claim.digest);
  if (member) return { member };
  const lease = await takeFillLease(env, repo, claim.digest);
  if (!lease) return null; // another request filled it meanwhile
  let streaming = false;
  try {
    const res = await upstreamFetch(t, "GET", `blobs/${claim.digest}`);
    if (!res.ok) throw namedProblem(t, await upstreamError(t, res, oci("BLOB_UNKNOWN", `blob ${claim.digest} is not known to ${t.ns.upstream}/${t.upstreamRepo}`, { digest: claim.digest })));
    const declared = res.headers.get("Content-Length");
    const contentLength = declared && /^\d+$/.test(declared) ? Number(declared) : null;
    if (opts.stream && opts.waitUntil && res.body) {
      const fill = teeFill(env, repo, claim, res.body, contentLength);
      streaming = true;
      opts.waitUntil(fill.done.then(async (outcome) => {
        if (!outcome.ok) await fillFailed(env, t, repo, claim.digest, outcome.error).catch(() => {});
      }).finally(() => lease.release()));
      return { streamed: { body: fill.body, size: contentLength } };
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
  return readStreamCapped(res.body!, max, Number.isSafeInteger(declared) && declared > 0 ? declared : null, () => unreachable(t, `its manifest exceeds this registry's limit of ${max} bytes`));
}

/** Pushes into a proxy namespace are refused: its content belongs to the upstream. */
export async function refuseProxyPush(env: Env, repo: string): Promise<void> {
  const t = await proxyFor(env, repo);
  if (!t) return;
  throw oci("UNSUPPORTED", `${repo} is in proxy namespace ${t.ns.prefix}/, a read-only cache of ${t.ns.upstream}; push to the upstream instead`, { repository: repo, upstream: t.ns.upstream }, 405);
}
