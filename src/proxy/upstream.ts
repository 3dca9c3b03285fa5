// Requests to an upstream registry with its own auth flow: none, Basic, or a Bearer challenge
// answered by its token service (anonymously, or with the namespace's credentials). Upstream
// failures become OCI errors here, so no caller ever turns one into a 500.
import { oci, OciError } from "../oci/errors";
import type { ProxyTarget } from "./config";

/** Accept header for manifest requests: every type cloister stores (the client's Accept is applied on serving). */
export const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.artifact.manifest.v1+json",
].join(", ");

/** Bearer tokens per (upstream, repository), kept until shortly before they expire. Bounded. */
const tokens = new Map<string, { value: string; until: number }>();
const MAX_TOKENS = 1000;

export class UpstreamUnreachable extends OciError {}

export async function upstreamFetch(t: ProxyTarget, method: "GET" | "HEAD", path: string, headers: Record<string, string> = {}): Promise<Response> {
  const url = `${t.ns.upstream.replace(/\/+$/, "")}/v2/${t.upstreamRepo}/${path}`;
  const key = `${t.ns.upstream}|${t.upstreamRepo}`;
  const known = tokens.get(key);
  const auth = known && known.until > Date.now() ? `Bearer ${known.value}` : null;
  let res = await timedFetch(t, url, method, auth ? { ...headers, Authorization: auth } : headers);
  if (res.status !== 401) return res;
  const challenge = res.headers.get("WWW-Authenticate") ?? "";
  await res.body?.cancel().catch(() => {});
  let authorization: string;
  if (/^bearer\s/i.test(challenge)) {
    authorization = `Bearer ${await bearerToken(t, key, challenge)}`;
  } else if (/^basic/i.test(challenge) && t.ns.username !== undefined) {
    authorization = basic(t);
  } else {
    return res; // no credentials to offer: the caller maps 401
  }
  res = await timedFetch(t, url, method, { ...headers, Authorization: authorization });
  return res;
}

function basic(t: ProxyTarget): string {
  return `Basic ${btoa(`${t.ns.username}:${t.ns.password}`)}`;
}

/** Parse `Bearer realm="…",service="…",scope="…"` (quoted values may hold commas). */
function challengeParams(h: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of h.replace(/^bearer\s+/i, "").matchAll(/([a-zA-Z]+)="([^"]*)"/g)) out[m[1].toLowerCase()] = m[2];
  return out;
}

async function bearerToken(t: ProxyTarget, key: string, challenge: string): Promise<string> {
  const p = challengeParams(challenge);
  if (!p.realm || !/^https?:\/\//.test(p.realm)) throw unreachable(t, `its Bearer challenge has no usable realm`);
  const u = new URL(p.realm);
  if (p.service) u.searchParams.set("service", p.service);
  u.searchParams.set("scope", `repository:${t.upstreamRepo}:pull`);
  const headers: Record<string, string> = t.ns.username !== undefined ? { Authorization: basic(t) } : {};
  const res = await timedFetch(t, u.toString(), "GET", headers);
  if (res.status === 429) throw tooMany(res);
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw oci("DENIED", `upstream ${t.ns.upstream} refused a token for ${t.upstreamRepo} (HTTP ${res.status}); check the proxy namespace's credentials`, { upstream: t.ns.upstream, status: res.status }, 403);
  }
  let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch {
    throw unreachable(t, "its token service answered something that is not JSON");
  }
  const value = typeof body.token === "string" ? body.token : typeof body.access_token === "string" ? body.access_token : null;
  if (!value) throw unreachable(t, "its token service answered without a token");
  const ttl = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
  if (tokens.size >= MAX_TOKENS) tokens.clear();
  tokens.set(key, { value, until: Date.now() + Math.max(0, ttl - 10) * 1000 });
  return value;
}

/** fetch, bounded by the namespace's timeout until the response headers arrive. */
async function timedFetch(t: ProxyTarget, url: string, method: string, headers: Record<string, string>): Promise<Response> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), t.ns.timeoutSeconds * 1000);
  try {
    return await fetch(url, { method, headers, signal: ctl.signal, redirect: "follow" });
  } catch (err) {
    const why = ctl.signal.aborted ? `it did not answer within ${t.ns.timeoutSeconds} s` : `it could not be reached (${err instanceof Error ? err.message : String(err)})`;
    throw unreachable(t, why, ctl.signal.aborted ? 504 : 502);
  } finally {
    clearTimeout(timer);
  }
}

export function unreachable(t: ProxyTarget, why: string, status = 502): UpstreamUnreachable {
  return new UpstreamUnreachable("INTERNAL", `upstream ${t.ns.upstream} for ${t.ns.prefix}/ failed: ${why}`, { upstream: t.ns.upstream }, status);
}

function tooMany(res: Response): OciError {
  const retry = res.headers.get("Retry-After");
  const seconds = retry && /^\d{1,6}$/.test(retry) ? retry : "60";
  return oci("TOOMANYREQUESTS", `the upstream registry is rate-limiting this proxy; retry after ${seconds} s`, { retryAfter: Number(seconds) }, 429, { "Retry-After": seconds });
}

/**
 * A non-2xx upstream answer as an OCI error: 404 → `unknown` (MANIFEST_UNKNOWN / BLOB_UNKNOWN),
 * 429 → TOOMANYREQUESTS with Retry-After, 401/403 → DENIED naming the upstream, else 502.
 */
export async function upstreamError(t: ProxyTarget, res: Response, unknown: OciError): Promise<OciError> {
  await res.body?.cancel().catch(() => {});
  if (res.status === 404) return unknown;
  if (res.status === 429) return tooMany(res);
  if (res.status === 401 || res.status === 403) {
    return oci("DENIED", `upstream ${t.ns.upstream} refused access to ${t.upstreamRepo} (HTTP ${res.status}); check the proxy namespace's credentials`, { upstream: t.ns.upstream, status: res.status }, 403);
  }
  return unreachable(t, `it answered HTTP ${res.status}`);
}

/** Errors after which a cached tag is served instead (upstream down, slow or rate-limiting). */
export function isOutage(err: unknown): boolean {
  return err instanceof UpstreamUnreachable || (err instanceof OciError && err.code === "TOOMANYREQUESTS");
}
