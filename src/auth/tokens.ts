// Docker registry token format: HS256 JWTs (hono/jwt) with the kid in the header, scopes in and
// out, and refresh tokens. Signing keys come from TOKEN_SIGNING_KEYS or the AccountStore.
import { sign, verify, decode } from "hono/jwt";
import { z } from "zod";
import { isValidName } from "../oci/grammar";
import { randomId } from "./crypto";
import { bytesToBase64url } from "../util/encoding";
import type { SigningKey } from "./config";
import { TOKEN_ISSUER } from "./config";
import { allowedActions, gateRequirements, type Action, type GateRequirement, type Rule, type Subject } from "./policy";

/** One entry of a token's "access" claim (Docker token spec). */
export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface AccessClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: AccessEntry[];
  /**
   * Signature gates of the repositories this token may pull, evaluated at issuance (ADR 0019,
   * "Session 4"): present (even empty) means a gated pull needs no policy lookup; absent (older
   * tokens, or too many gates to embed) means the pull loads the rules.
   */
  sg?: GateClaim[];
}

/** One repository's signature gates inside an access token: gates and the repositories whose signatures count. */
export interface GateClaim {
  name: string;
  gates: GateRequirement[];
  links: string[];
}

export interface RefreshClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  use: "refresh";
  /** Account epoch at issue; a password change bumps it and retires older refresh tokens. */
  ep: number;
}

type JWTPayload = Parameters<typeof sign>[0];

const REPO_ACTIONS: readonly Action[] = ["pull", "push", "delete"];

/** Most scopes one token request can name (parseScopes keeps this many), and so a token carries. */
export const MAX_SCOPES = 64;
const MAX_SCOPE_NAME = 512;
/** Gate rules embedded per repository; more and the token carries no gate claim (the pull loads the rules). */
export const MAX_GATES_PER_REPOSITORY = 16;
/** Largest gate claim embedded in an access token (JSON characters); beyond it the claim is left out. */
export const MAX_GATE_CLAIM_CHARS = 8192;

// Claim schemas: a correctly signed token is still checked for shape before any claim is used,
// so a malformed one is 401 invalid_token and never a TypeError (or "*" read as ["*"]).
const accessEntrySchema = z.strictObject({
  type: z.string().min(1).max(64),
  name: z.string().min(1).max(MAX_SCOPE_NAME),
  actions: z.array(z.enum(["pull", "push", "delete", "*"])).max(REPO_ACTIONS.length + 1),
});
const registeredSchema = {
  iss: z.string(),
  sub: z.string().min(1).max(256),
  aud: z.string(),
  exp: z.number().int(),
  nbf: z.number().int(),
  iat: z.number().int(),
  jti: z.string().max(64),
};
const gateClaimSchema = z.strictObject({
  name: z.string().min(1).max(MAX_SCOPE_NAME),
  gates: z.array(z.strictObject({ id: z.string().max(128), keys: z.array(z.string().max(64)).max(32), minimum: z.number().int().min(1).max(32) })).max(MAX_GATES_PER_REPOSITORY),
  links: z.array(z.string().max(MAX_SCOPE_NAME)).max(8),
});
const accessClaimsSchema = z.object({ ...registeredSchema, access: z.array(accessEntrySchema).max(MAX_SCOPES), sg: z.array(gateClaimSchema).max(MAX_SCOPES).optional() });
const refreshClaimsSchema = z.object({ ...registeredSchema, use: z.literal("refresh"), ep: z.number().int().min(0) });
// Web UI sessions (src/ui/session.ts): never accepted where an access or refresh token is expected.
// `pw` ties an admin session to the ADMIN_PASSWORD it was made with (its epoch is always 0).
const sessionClaimsSchema = z.object({ ...registeredSchema, use: z.literal("session"), ep: z.number().int().min(0), pw: z.string().max(64).optional() });

export interface SessionClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  use: "session";
  ep: number;
  pw?: string;
}

/**
 * Parses scopes as sent in `scope` parameters: each value may hold several space-separated
 * scopes. "type[(class)]:name:actions"; the name may itself contain ":" (host:port/…), so type is
 * before the first ":" and actions after the last. Entries for the same resource are merged.
 * Malformed scopes are dropped (the token simply does not grant them).
 */
export function parseScopes(values: readonly string[]): AccessEntry[] {
  const out = new Map<string, AccessEntry>();
  for (const value of values) {
    for (const s of value.split(" ")) {
      if (!s) continue;
      const first = s.indexOf(":");
      const last = s.lastIndexOf(":");
      if (first <= 0 || last === first) continue;
      const type = s.slice(0, first).replace(/\([^)]*\)$/, "");
      const name = s.slice(first + 1, last);
      const actions = s.slice(last + 1).split(",").filter(Boolean);
      if (!name || name.length > MAX_SCOPE_NAME || !type || type.length > 64) continue;
      const key = `${type}\u0000${name}`;
      const e = out.get(key) ?? { type, name, actions: [] };
      for (const a of actions) if (!e.actions.includes(a)) e.actions.push(a);
      out.set(key, e);
    }
  }
  return [...out.values()].slice(0, MAX_SCOPES);
}

export function formatScope(e: AccessEntry): string {
  return `${e.type}:${e.name}:${e.actions.join(",")}`;
}

/** Granted = requested ∩ allowed. Unknown or denied actions are dropped, never an error. */
export function grantAccess(rules: readonly Rule[], subject: Subject, requested: readonly AccessEntry[]): AccessEntry[] {
  return requested.map((e) => {
    if (e.type === "repository") {
      if (!isValidName(e.name)) return { ...e, actions: [] };
      const want = e.actions.includes("*") ? [...REPO_ACTIONS] : REPO_ACTIONS.filter((a) => e.actions.includes(a));
      const ok = allowedActions(rules, subject, e.name, want);
      // A request for "*" is answered with the actions actually held, "*" only when all are.
      const actions = e.actions.includes("*") && ok.length === REPO_ACTIONS.length ? ["*"] : ok;
      return { type: e.type, name: e.name, actions };
    }
    if (e.type === "registry" && e.name === "catalog") {
      const ok = e.actions.includes("*") && allowedActions(rules, subject, null, ["catalog"]).length === 1;
      return { type: e.type, name: e.name, actions: ok ? ["*"] : [] };
    }
    if (e.type === "registry" && e.name === "admin") {
      const ok = e.actions.includes("*") && allowedActions(rules, subject, null, ["admin"]).length === 1;
      return { type: e.type, name: e.name, actions: ok ? ["*"] : [] };
    }
    return { type: e.type, name: e.name, actions: [] };
  });
}

/**
 * The gate claim for a granted access list: the signature gates of each repository it may pull,
 * or undefined when they do not fit (MAX_GATES_PER_REPOSITORY, MAX_GATE_CLAIM_CHARS), in which
 * case a gated pull falls back to loading the rules.
 */
export function gateClaims(rules: readonly Rule[], access: readonly AccessEntry[]): GateClaim[] | undefined {
  const out: GateClaim[] = [];
  for (const e of access) {
    if (e.type !== "repository" || !(e.actions.includes("pull") || e.actions.includes("*"))) continue;
    const g = gateRequirements(rules, e.name, isValidName);
    if (!g) continue;
    if (g.gates.length > MAX_GATES_PER_REPOSITORY) return undefined;
    out.push({ name: e.name, ...g });
  }
  return JSON.stringify(out).length > MAX_GATE_CLAIM_CHARS ? undefined : out;
}

/** Whether the access claim grants every action in `need` on (type, name). "*" grants all. */
export function accessCovers(access: readonly AccessEntry[], type: string, name: string, need: readonly string[]): boolean {
  const held = new Set<string>();
  for (const e of access) if (e.type === type && e.name === name) for (const a of e.actions) held.add(a);
  return held.has("*") || need.every((a) => held.has(a));
}

function jwk(key: SigningKey) {
  return { kty: "oct", k: bytesToBase64url(new TextEncoder().encode(key.secret)), alg: "HS256", kid: key.kid };
}

/** Signs with the first key; the header carries its kid. */
export async function signJwt(payload: JWTPayload, keys: readonly SigningKey[]): Promise<string> {
  if (!keys.length) throw new Error("no signing key");
  return sign(payload, jwk(keys[0]), "HS256");
}

export type VerifyFailure = "malformed" | "unknown-kid" | "bad-signature" | "expired" | "not-yet-valid" | "wrong-audience" | "wrong-issuer" | "wrong-use";

/**
 * Verifies signature (by the header's kid), iss, aud, exp and nbf. `use` "access" refuses
 * refresh tokens and vice versa. Returns the claims or the reason it failed (never throws).
 */
export async function verifyJwt<T extends JWTPayload>(
  token: string,
  keys: readonly SigningKey[],
  audience: string,
  use: "access" | "refresh" | "session",
): Promise<{ ok: true; claims: T } | { ok: false; reason: VerifyFailure }> {
  let header: { kid?: string; alg?: string };
  try {
    header = decode(token).header;
  } catch {
    return { ok: false, reason: "malformed" };
  }
  const key = keys.find((k) => k.kid === header.kid);
  if (!key) return { ok: false, reason: "unknown-kid" };
  let claims: JWTPayload;
  try {
    claims = await verify(token, jwk(key), { alg: "HS256", iss: TOKEN_ISSUER, aud: audience, iat: false });
  } catch (e) {
    const name = (e as Error)?.name ?? "";
    if (name === "JwtTokenExpired") return { ok: false, reason: "expired" };
    if (name === "JwtTokenNotBefore") return { ok: false, reason: "not-yet-valid" };
    if (name === "JwtTokenAudience" || name === "JwtPayloadRequiresAud") return { ok: false, reason: "wrong-audience" };
    if (name === "JwtTokenIssuer") return { ok: false, reason: "wrong-issuer" };
    if (name === "JwtTokenSignatureMismatched") return { ok: false, reason: "bad-signature" };
    return { ok: false, reason: "malformed" };
  }
  // Access tokens carry no "use"; refresh and session tokens are refused everywhere else.
  if ((claims.use ?? "access") !== use) return { ok: false, reason: "wrong-use" };
  const parsed = (use === "access" ? accessClaimsSchema : use === "refresh" ? refreshClaimsSchema : sessionClaimsSchema).safeParse(claims);
  if (!parsed.success) return { ok: false, reason: "malformed" };
  return { ok: true, claims: parsed.data as unknown as T };
}

/** The registered claims every token carries (5 s of clock-skew allowance on nbf). */
function registeredClaims(opts: { subject: string; audience: string; ttl: number; now?: number }) {
  const t = opts.now ?? Math.floor(Date.now() / 1000);
  return { iss: TOKEN_ISSUER, sub: opts.subject, aud: opts.audience, exp: t + opts.ttl, nbf: t - 5, iat: t, jti: randomId(16) };
}

export async function issueAccessToken(opts: {
  keys: readonly SigningKey[];
  subject: string;
  audience: string;
  access: AccessEntry[];
  ttl: number;
  now?: number;
  gates?: GateClaim[];
}): Promise<{ token: string; claims: AccessClaims }> {
  const claims: AccessClaims = { ...registeredClaims(opts), access: opts.access, ...(opts.gates ? { sg: opts.gates } : {}) };
  return { token: await signJwt(claims, opts.keys), claims };
}

export async function issueRefreshToken(opts: {
  keys: readonly SigningKey[];
  subject: string;
  audience: string;
  epoch: number;
  ttl: number;
  now?: number;
}): Promise<string> {
  const claims: RefreshClaims = { ...registeredClaims(opts), use: "refresh", ep: opts.epoch };
  return signJwt(claims, opts.keys);
}

export async function issueSessionToken(opts: {
  keys: readonly SigningKey[];
  subject: string;
  audience: string;
  epoch: number;
  adminPasswordTag?: string;
  ttl: number;
  now?: number;
}): Promise<{ token: string; claims: SessionClaims }> {
  const claims: SessionClaims = { ...registeredClaims(opts), use: "session", ep: opts.epoch, ...(opts.adminPasswordTag ? { pw: opts.adminPasswordTag } : {}) };
  return { token: await signJwt(claims, opts.keys), claims };
}
