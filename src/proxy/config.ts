// Proxy namespaces (docs/proxy.md, ADR 0020): a repository prefix served from an upstream
// registry. Two sources, merged:
//   - `PROXY_NAMESPACES` in wrangler.toml [vars] (a JSON list): deployed with the Worker; the admin
//     API can neither change nor delete these, and on the same prefix they win.
//   - the admin API's list, one small R2 object (not under data/ or manifests/, so GC never treats
//     it as an orphan), cached per isolate (see the cache below).
// Upstream credentials are Worker secrets (`wrangler secret put`, `.dev.vars` locally) holding
// `user:token`; a namespace names the secret, never holds it. Credentials written by older
// versions into the R2 object keep working until the namespace is replaced, and are flagged.
import { z } from "zod";
import type { Env } from "../env";
import { oci } from "../oci/errors";

export const PROXY_CONFIG_KEY = "_proxy/namespaces.json";
/** Most proxy namespaces one registry may configure, both sources together. */
export const MAX_PROXY_NAMESPACES = 64;
/** Largest PROXY_NAMESPACES value read (64 namespaces fit in well under this). */
const MAX_TOML_CHARS = 65_536;

/**
 * How often an isolate re-checks the R2 list: with namespaces, a body-less conditional GET
 * (etag) every RECHECK_MS; with none, every NEGATIVE_RECHECK_MS — a registry that proxies nothing
 * pays one R2 read per isolate per minute. Admin writes update the writing isolate at once.
 */
const RECHECK_MS = 10_000;
const NEGATIVE_RECHECK_MS = 60_000;

const prefixRe = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;

/** cloister's own variables and secrets: a namespace must not send one of them to an upstream. */
const RESERVED_NAMES = new Set([
  "ADMIN_PASSWORD", "TOKEN_SIGNING_KEYS", "UPLOAD_SIGNING_KEY", "PROXY_NAMESPACES", "AUTH_MODE", "AUTH_REALM", "AUTH_SERVICE",
  "REGISTRY_HOSTS", "TEST_CREDENTIALS",
]);

const secretName = z.string().min(1).max(128)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "credentialsSecret is the NAME of a Worker secret (letters, digits, '_'), set with `wrangler secret put`")
  .refine((n) => !RESERVED_NAMES.has(n), "credentialsSecret must not name one of cloister's own variables or secrets");

const fields = {
  /** Repositories named `<prefix>/<rest>` are pulled from `<upstream>/v2/<rest>`. */
  prefix: z.string().min(1).max(128).regex(prefixRe, "prefix must be a repository name (lowercase path components)"),
  upstream: z.string().url().max(512).refine((u) => /^https?:\/\//.test(u), "upstream must be an http(s) URL"),
  /** Docker Hub's rule: a single-component name `x` is `library/x` upstream. */
  libraryPrefix: z.boolean().default(false),
  /** Seconds a tag is served from the cache before a HEAD at the upstream revalidates it. */
  tagTtlSeconds: z.number().int().min(0).max(30 * 86400).default(300),
  /** Seconds to wait for the upstream's response headers. */
  timeoutSeconds: z.number().int().min(1).max(300).default(30),
  /** Name of the Worker secret holding `user:token` for the upstream (Basic, or its token service). */
  credentialsSecret: secretName.optional(),
  /** GC retention: cached manifests not pulled for this many days go (null: never). Docs: docs/proxy.md. */
  unpulledDays: z.number().int().min(1).max(36500).nullable().default(30),
};

const legacyCredentials = z.never({ message: "credentials are Worker secrets now: `wrangler secret put NAME` with the value user:token, then send \"credentialsSecret\": \"NAME\"" }).optional();

/** Body of PUT /admin/proxies and each entry of PROXY_NAMESPACES. */
export const namespaceInput = z.object({ ...fields, username: legacyCredentials, password: legacyCredentials }).strict();

export type ProxyNamespace = Omit<z.output<typeof namespaceInput>, "username" | "password"> & {
  /** Resolved for the upstream requests only (from the secret, or a legacy R2 entry); never shown. */
  username?: string;
  password?: string;
};

/** A namespace as configured, with where it came from. */
export interface ConfiguredNamespace extends ProxyNamespace {
  source: "api" | "wrangler.toml";
  /** A password stored in the R2 object by an older version (kept working until replaced). */
  legacyCredentials?: boolean;
}

// ---- PROXY_NAMESPACES (wrangler.toml) ------------------------------------------------------

let tomlMemo: { raw: string; list: ProxyNamespace[] } | null = null;

/** PROXY_NAMESPACES parsed and validated (once per isolate per value); a bad value is a clear 503 on every use. */
export function tomlNamespaces(env: Env): ProxyNamespace[] {
  // A string holding JSON, or (a TOML array of tables in [vars]) the list wrangler already parsed.
  const v: unknown = env.PROXY_NAMESPACES;
  const raw = typeof v === "string" ? v.trim() : v === undefined || v === null ? "" : JSON.stringify(v);
  if (raw === "") return [];
  if (tomlMemo?.raw === raw) return tomlMemo.list;
  const list = parseTomlNamespaces(raw);
  tomlMemo = { raw, list };
  return list;
}

function parseTomlNamespaces(raw: string): ProxyNamespace[] {
  const invalid = (why: string) => {
    const message = `PROXY_NAMESPACES (wrangler.toml [vars]) is invalid: ${why}; fix it and redeploy (docs/proxy.md)`;
    console.error(message);
    return oci("INTERNAL", message.slice(0, 1000), null, 503);
  };
  if (raw.length > MAX_TOML_CHARS) throw invalid(`over ${MAX_TOML_CHARS} characters`);
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch (err) {
    throw invalid(`not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const parsed = z.array(namespaceInput).max(MAX_PROXY_NAMESPACES).safeParse(data);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw invalid(`${i.path.length ? `[${i.path.join(".")}] ` : ""}${i.message}`);
  }
  const list = parsed.data.map(({ username: _u, password: _p, ...ns }) => ns);
  const seen = new Set<string>();
  for (const ns of list) {
    if (seen.has(ns.prefix)) throw invalid(`prefix ${ns.prefix} is listed twice`);
    seen.add(ns.prefix);
    const other = list.find((o) => overlaps(o.prefix, ns.prefix));
    if (other) throw invalid(`prefix ${ns.prefix} overlaps ${other.prefix}`);
  }
  return list;
}

/** One prefix inside the other (equal prefixes are the same namespace, not an overlap). */
export function overlaps(a: string, b: string): boolean {
  return a.startsWith(b + "/") || b.startsWith(a + "/");
}

// ---- the admin API's list (R2) -------------------------------------------------------------

/** An entry of the R2 object; entries written before secrets may hold username/password. */
type StoredNamespace = ProxyNamespace;

let cached: { at: number; etag: string | null; list: StoredNamespace[] } | null = null;

/** Defaults for fields added after an entry was written (unpulledDays arrived with pull tracking). */
const withDefaults = (n: StoredNamespace): StoredNamespace => ({ ...n, unpulledDays: n.unpulledDays === undefined ? 30 : n.unpulledDays });

export async function apiNamespaces(env: Env): Promise<StoredNamespace[]> {
  const now = Date.now();
  if (cached && now - cached.at < (cached.list.length ? RECHECK_MS : NEGATIVE_RECHECK_MS)) return cached.list;
  // Unchanged since the last read: R2 answers the precondition failure without a body.
  const obj = await env.BUCKET.get(PROXY_CONFIG_KEY, cached?.etag ? { onlyIf: { etagDoesNotMatch: cached.etag } } : undefined);
  if (obj && !("body" in obj) && cached) {
    cached = { ...cached, at: now };
    return cached.list;
  }
  const list = obj && "body" in obj ? (JSON.parse(await obj.text()) as StoredNamespace[]).map(withDefaults) : [];
  cached = { at: now, etag: obj?.etag ?? null, list };
  return list;
}

export async function saveApiNamespaces(env: Env, list: StoredNamespace[]): Promise<void> {
  const put = await env.BUCKET.put(PROXY_CONFIG_KEY, JSON.stringify(list), { httpMetadata: { contentType: "application/json" } });
  cached = { at: Date.now(), etag: put?.etag ?? null, list: list.map(withDefaults) };
}

/** Both sources merged: wrangler.toml wins on the same prefix (the admin entry is then ignored). */
export async function loadNamespaces(env: Env): Promise<ConfiguredNamespace[]> {
  const toml = tomlNamespaces(env);
  const api = await apiNamespaces(env);
  const fromToml = new Set(toml.map((n) => n.prefix));
  return [
    ...toml.map((n) => ({ ...n, source: "wrangler.toml" as const })),
    ...api.filter((n) => !fromToml.has(n.prefix)).map((n) => ({ ...n, source: "api" as const, legacyCredentials: n.password !== undefined || undefined })),
  ];
}

// ---- credentials -----------------------------------------------------------------------------

/** The `user:token` a secret holds, or why it cannot be used. */
export function readSecret(env: Env, name: string): { username: string; password: string } | { problem: string } {
  const v = env[name];
  if (typeof v !== "string" || v === "") return { problem: `the secret ${name} is not bound to this Worker: run \`wrangler secret put ${name}\` (locally: add it to .dev.vars)` };
  const i = v.indexOf(":");
  if (i <= 0 || i === v.length - 1) return { problem: `the secret ${name} must hold user:token` };
  return { username: v.slice(0, i), password: v.slice(i + 1) };
}

/** The credentials problem of a namespace, if any (shown by the admin API, named in upstream refusals). */
export function credentialsProblem(env: Env, ns: ProxyNamespace): string | null {
  if (!ns.credentialsSecret) return null;
  const r = readSecret(env, ns.credentialsSecret);
  return "problem" in r ? r.problem : null;
}

/** What the API shows: the secret's name, never a value. */
export function publicView(env: Env, n: ConfiguredNamespace) {
  const { password: _p, username: _u, legacyCredentials, ...rest } = n;
  const problem = credentialsProblem(env, n);
  return {
    ...rest,
    credentials: n.credentialsSecret ? "secret" : legacyCredentials ? "r2" : "none",
    ...(legacyCredentials ? { warning: "credentials stored in R2; move to a secret: `wrangler secret put NAME` (user:token), then PUT this namespace with \"credentialsSecret\": \"NAME\"" } : {}),
    ...(problem ? { warning: problem } : {}),
  };
}

export interface ProxyTarget {
  /** The namespace with its credentials resolved (from its secret, or a legacy R2 entry). */
  ns: ProxyNamespace;
  /** The repository name at the upstream. */
  upstreamRepo: string;
  /** The named secret cannot be used (upstream requests go without credentials). */
  credentialsProblem: string | null;
}

/** The namespace `repo` falls in (longest prefix wins), without resolving credentials. */
export function namespaceOf<T extends { prefix: string }>(list: T[], repo: string): T | null {
  let best: T | null = null;
  for (const ns of list) {
    if (repo.startsWith(ns.prefix + "/") && (!best || ns.prefix.length > best.prefix.length)) best = ns;
  }
  return best;
}

/** The proxy namespace `repo` falls in, or null for an ordinary repository. */
export async function proxyFor(env: Env, repo: string): Promise<ProxyTarget | null> {
  const list = await loadNamespaces(env);
  if (list.length === 0) return null;
  const best = namespaceOf(list, repo);
  if (!best) return null;
  let upstreamRepo = repo.slice(best.prefix.length + 1);
  if (best.libraryPrefix && !upstreamRepo.includes("/")) upstreamRepo = `library/${upstreamRepo}`;
  const { source: _s, legacyCredentials: _l, ...ns } = best;
  let problem: string | null = null;
  if (ns.credentialsSecret) {
    const r = readSecret(env, ns.credentialsSecret);
    if ("problem" in r) {
      problem = r.problem;
      delete ns.username;
      delete ns.password;
    } else Object.assign(ns, r);
  }
  return { ns, upstreamRepo, credentialsProblem: problem };
}
