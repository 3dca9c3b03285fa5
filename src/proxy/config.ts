// Proxy namespaces (docs/proxy.md, ADR 0020): a repository prefix served from an upstream
// registry. The list lives in one small R2 object (not under data/ or manifests/, so GC never
// treats it as an orphan) and is cached per isolate for CONFIG_CACHE_MS; the admin API writes it.
// Upstream credentials are stored with it and never returned by the API.
import { z } from "zod";
import type { Env } from "../env";

export const PROXY_CONFIG_KEY = "_proxy/namespaces.json";
/** Most proxy namespaces one registry may configure (the list is read on every /v2 pull). */
export const MAX_PROXY_NAMESPACES = 64;
const CONFIG_CACHE_MS = 5_000;

const prefixRe = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;

export const namespaceInput = z.object({
  /** Repositories named `<prefix>/<rest>` are pulled from `<upstream>/v2/<rest>`. */
  prefix: z.string().min(1).max(128).regex(prefixRe, "prefix must be a repository name (lowercase path components)"),
  upstream: z.string().url().max(512).refine((u) => /^https?:\/\//.test(u), "upstream must be an http(s) URL"),
  /** Docker Hub's rule: a single-component name `x` is `library/x` upstream. */
  libraryPrefix: z.boolean().default(false),
  /** Seconds a tag is served from the cache before a HEAD at the upstream revalidates it. */
  tagTtlSeconds: z.number().int().min(0).max(30 * 86400).default(300),
  /** Seconds to wait for the upstream's response headers. */
  timeoutSeconds: z.number().int().min(1).max(300).default(30),
  /** Optional credentials for the upstream (Basic, or for its token service). Write-only. */
  username: z.string().min(1).max(256).optional(),
  password: z.string().min(1).max(4096).optional(),
}).strict().refine((n) => (n.username === undefined) === (n.password === undefined), "username and password go together");

export type ProxyNamespace = z.output<typeof namespaceInput>;

let cached: { at: number; list: ProxyNamespace[] } | null = null;

export async function loadNamespaces(env: Env): Promise<ProxyNamespace[]> {
  if (cached && Date.now() - cached.at < CONFIG_CACHE_MS) return cached.list;
  const obj = await env.BUCKET.get(PROXY_CONFIG_KEY);
  const list = obj ? (JSON.parse(await obj.text()) as ProxyNamespace[]) : [];
  cached = { at: Date.now(), list };
  return list;
}

export async function saveNamespaces(env: Env, list: ProxyNamespace[]): Promise<void> {
  await env.BUCKET.put(PROXY_CONFIG_KEY, JSON.stringify(list), { httpMetadata: { contentType: "application/json" } });
  cached = { at: Date.now(), list };
}

/** What the API shows: everything but the password. */
export function publicView(n: ProxyNamespace) {
  const { password: _p, ...rest } = n;
  return { ...rest, credentials: n.username !== undefined };
}

export interface ProxyTarget {
  ns: ProxyNamespace;
  /** The repository name at the upstream. */
  upstreamRepo: string;
}

/** The proxy namespace `repo` falls in (longest prefix wins), or null for an ordinary repository. */
export async function proxyFor(env: Env, repo: string): Promise<ProxyTarget | null> {
  const list = await loadNamespaces(env);
  if (list.length === 0) return null;
  let best: ProxyNamespace | null = null;
  for (const ns of list) {
    if (repo.startsWith(ns.prefix + "/") && (!best || ns.prefix.length > best.prefix.length)) best = ns;
  }
  if (!best) return null;
  let upstreamRepo = repo.slice(best.prefix.length + 1);
  if (best.libraryPrefix && !upstreamRepo.includes("/")) upstreamRepo = `library/${upstreamRepo}`;
  return { ns: best, upstreamRepo };
}
