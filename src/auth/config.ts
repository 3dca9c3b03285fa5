// Auth configuration from Worker vars and secrets (see docs/auth.md). Nothing here is cached:
// every request reads its own env, so tests and `--var` overrides apply at once.
import { oci } from "../oci/errors";

export type AuthMode = "open" | "token";

export interface SigningKey {
  kid: string;
  secret: string;
}

export interface AuthConfig {
  mode: AuthMode;
  /** Secret ADMIN_PASSWORD; null = nobody can sign in as admin. */
  adminPassword: string | null;
  /** TOKEN_SIGNING_KEYS when set (first signs, all verify); null = keys kept in the AccountStore. */
  signingKeys: SigningKey[] | null;
  realm: string;
  service: string;
  tokenTtlSeconds: number;
  refreshTokenTtlSeconds: number;
}

export const TOKEN_ISSUER = "cloister";
export const DEFAULT_TOKEN_TTL = 300;
export const DEFAULT_REFRESH_TTL = 14 * 24 * 3600;
const MIN_SECRET_LENGTH = 32;

type Vars = Record<string, unknown>;

const str = (v: unknown): string | null => (typeof v === "string" && v.trim() !== "" ? v.trim() : null);
const int = (v: unknown, dflt: number, min: number, max: number) => {
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : typeof v === "number" ? v : NaN;
  return Number.isInteger(n) && n >= min && n <= max ? n : dflt;
};

export function authMode(env: Vars): AuthMode {
  return String(env.AUTH_MODE ?? "").trim().toLowerCase() === "open" ? "open" : "token";
}

/** Parses TOKEN_SIGNING_KEYS; throws a message that never contains a secret. */
export function parseSigningKeys(raw: unknown): SigningKey[] | null {
  const text = str(raw);
  if (text === null) return null;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("TOKEN_SIGNING_KEYS is not valid JSON (expected [{\"kid\":\"…\",\"secret\":\"…\"}, …])");
  }
  if (!Array.isArray(data) || data.length === 0) throw new Error("TOKEN_SIGNING_KEYS must be a non-empty JSON array of {kid, secret}");
  const seen = new Set<string>();
  return data.map((k, i) => {
    const kid = (k as { kid?: unknown })?.kid;
    const secret = (k as { secret?: unknown })?.secret;
    if (typeof kid !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(kid)) throw new Error(`TOKEN_SIGNING_KEYS[${i}].kid must be 1-64 of A-Z a-z 0-9 . _ -`);
    if (seen.has(kid)) throw new Error(`TOKEN_SIGNING_KEYS has kid "${kid}" twice`);
    seen.add(kid);
    if (typeof secret !== "string" || secret.length < MIN_SECRET_LENGTH) throw new Error(`TOKEN_SIGNING_KEYS[${i}].secret must be a string of at least ${MIN_SECRET_LENGTH} characters`);
    return { kid, secret };
  });
}

/** Loopback hosts: local development needs no realm configuration. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "[::1]" || /^127(?:\.\d{1,3}){3}$/.test(h);
}

/** REGISTRY_HOSTS: comma-separated host names (optionally host:port) this registry answers to. */
export function registryHosts(env: Vars): string[] {
  const text = str(env.REGISTRY_HOSTS);
  return text === null ? [] : text.split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
}

/**
 * Realm and service for a request. The Host header must not choose them (a proxy or cache that
 * passes Host through would advertise an attacker's realm): in token mode they come from
 * AUTH_REALM/AUTH_SERVICE, or from the request only when its host is listed in REGISTRY_HOSTS or
 * is a loopback host (local development). Any other host is refused with 421. Open mode is for
 * development and answers any host.
 */
function realmAndService(env: Vars, url: URL, mode: AuthMode): { realm: string; service: string } {
  const realm = str(env.AUTH_REALM);
  const service = str(env.AUTH_SERVICE);
  if (realm !== null && service !== null) return { realm, service };
  const host = url.host.toLowerCase();
  const allowed = mode === "open" || isLoopbackHost(url.hostname) || registryHosts(env).includes(host);
  if (realm !== null) {
    let realmHost: string;
    try {
      realmHost = new URL(realm).host;
    } catch {
      console.error("cloister auth misconfigured: AUTH_REALM is not a URL");
      throw oci("INTERNAL", "auth misconfigured: AUTH_REALM is not a URL", undefined, 503);
    }
    return { realm, service: realmHost };
  }
  if (!allowed) {
    console.warn(
      `cloister auth: refused a request for unknown host ${JSON.stringify(host.slice(0, 100))}: list it in REGISTRY_HOSTS, or set AUTH_REALM and AUTH_SERVICE`,
    );
    throw oci(
      "DENIED",
      `this registry does not serve host ${host.slice(0, 100)}; the operator can list it in REGISTRY_HOSTS or set AUTH_REALM and AUTH_SERVICE`,
      undefined,
      421,
    );
  }
  return { realm: `${url.origin}/token`, service: service ?? url.host };
}

/** The configuration for one request. Misconfiguration is an OCI error that names the variable. */
export function authConfig(env: Vars, requestUrl: string): AuthConfig {
  const url = new URL(requestUrl);
  let signingKeys: SigningKey[] | null;
  try {
    signingKeys = parseSigningKeys(env.TOKEN_SIGNING_KEYS);
  } catch (e) {
    console.error(`cloister auth misconfigured: ${(e as Error).message}`);
    throw oci("INTERNAL", `auth misconfigured: ${(e as Error).message}`, undefined, 503);
  }
  const mode = authMode(env);
  return {
    mode,
    adminPassword: typeof env.ADMIN_PASSWORD === "string" && env.ADMIN_PASSWORD !== "" ? env.ADMIN_PASSWORD : null,
    signingKeys,
    ...realmAndService(env, url, mode),
    tokenTtlSeconds: int(env.TOKEN_TTL_SECONDS, DEFAULT_TOKEN_TTL, 30, 86400),
    refreshTokenTtlSeconds: int(env.REFRESH_TOKEN_TTL_SECONDS, DEFAULT_REFRESH_TTL, 60, 366 * 86400),
  };
}

let openWarned = false;
/**
 * Logs once per isolate that the registry is serving without authentication. OPEN_MODE_WARNING=off
 * (set in .dev.vars) silences it where something else already warns once per process: `npm start`
 * prints it itself, and the test pools would otherwise print it once per test file.
 */
export function warnOpenOnce(env: Vars = {}): void {
  if (openWarned || String(env.OPEN_MODE_WARNING ?? "").trim().toLowerCase() === "off") return;
  openWarned = true;
  console.warn(
    "\n" +
      "!!! ================================================================== !!!\n" +
      "!!!  cloister: AUTH_MODE=open — NO AUTHENTICATION. Anyone can pull,     !!!\n" +
      "!!!  push and delete anything. For local development only. Deployments !!!\n" +
      "!!!  without AUTH_MODE use token auth (see docs/auth.md).              !!!\n" +
      "!!! ================================================================== !!!",
  );
}
