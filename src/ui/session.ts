// Web UI sessions and CSRF (docs/ui.md, docs/adr/0018-web-ui.md).
//
// Session: a signed JWT (use "session", the token service's keys) in an HttpOnly, SameSite=Strict
// cookie (Secure and "__Host-" over HTTPS) with an expiry. Every request re-checks the account's
// epoch, so a password change, a deleted user or an expired robot ends its sessions, and the
// signed-out session ids; an admin session is tied to a tag of the ADMIN_PASSWORD it was made with.
// CSRF: a random token in a cookie signed with HMAC (hono/cookie setSignedCookie, key derived
// from the signing key) that every state-changing form must repeat; plus hono/csrf's Origin check.
import type { Context } from "hono";
import { deleteCookie, getCookie, getSignedCookie, setCookie, setSignedCookie } from "hono/cookie";
import type { AuthConfig, SigningKey } from "../auth/config";
import { configOf, principalFromId, signingKeysFor, storeOf, subjectOf, type Principal } from "../auth/session";
import { issueSessionToken, verifyJwt, type SessionClaims } from "../auth/tokens";
import { randomId, sha256Hex, stringsEqual } from "../auth/crypto";

type Ctx = Context<any>;

// Per-request memo of the signing keys (one AccountStore read per page, not one per use). Keyed by
// the request object, so nothing outlives the request.
const keyMemo = new WeakMap<Request, Promise<SigningKey[]>>();
export function keysFor(c: Ctx): Promise<SigningKey[]> {
  let p = keyMemo.get(c.req.raw);
  if (!p) {
    p = signingKeysFor(c, configOf(c));
    keyMemo.set(c.req.raw, p);
  }
  return p;
}

/** Session lifetime default and bounds (UI_SESSION_TTL_SECONDS). */
export const DEFAULT_SESSION_TTL = 8 * 3600;
const MIN_SESSION_TTL = 300;
const MAX_SESSION_TTL = 7 * 86400;
export const CSRF_FIELD = "_csrf";
export const CSRF_HEADER = "X-CSRF-Token";

export function sessionTtl(env: Record<string, unknown>): number {
  const n = Number(env.UI_SESSION_TTL_SECONDS ?? DEFAULT_SESSION_TTL);
  return Number.isInteger(n) && n >= MIN_SESSION_TTL && n <= MAX_SESSION_TTL ? n : DEFAULT_SESSION_TTL;
}

const isHttps = (c: Ctx) => new URL(c.req.url).protocol === "https:";
// "__Host-" cookies must be Secure with Path=/ and no Domain: a sibling subdomain cannot plant them.
const sessionCookie = (c: Ctx) => (isHttps(c) ? "__Host-cloister_session" : "cloister_session");
const csrfCookie = (c: Ctx) => (isHttps(c) ? "__Host-cloister_csrf" : "cloister_csrf");
const cookieOpts = (c: Ctx, maxAge?: number) => ({
  path: "/",
  httpOnly: true,
  secure: isHttps(c),
  sameSite: "Strict" as const,
  ...(maxAge !== undefined ? { maxAge } : {}),
});

/** A short tag of ADMIN_PASSWORD: changing the secret ends every admin session. */
async function adminPasswordTag(cfg: AuthConfig): Promise<string | undefined> {
  return cfg.adminPassword === null ? undefined : (await sha256Hex(`cloister-ui-admin\u0000${cfg.adminPassword}`)).slice(0, 32);
}

/** Starts a session for a principal that just signed in (epoch from login()). */
export async function startSession(c: Ctx, principal: Principal, epoch: number): Promise<void> {
  const cfg = configOf(c);
  const ttl = sessionTtl(c.env ?? {});
  const isAdmin = principal.kind === "user" && principal.name === "admin";
  const { token } = await issueSessionToken({
    keys: await keysFor(c),
    subject: principal.id,
    audience: cfg.service,
    epoch,
    adminPasswordTag: isAdmin ? await adminPasswordTag(cfg) : undefined,
    ttl,
  });
  setCookie(c, sessionCookie(c), token, cookieOpts(c, ttl));
  // A new CSRF token at sign-in: one planted before (login CSRF, a shared machine) is retired.
  await issueCsrf(c);
}

/**
 * Sign-out: the session is ended in the AccountStore too, so a copy of the cookie (another tab,
 * a stolen one) stops working at once, not when it expires.
 */
export async function endSession(c: Ctx): Promise<void> {
  const raw = getCookie(c, sessionCookie(c));
  if (raw && raw.length <= 4096) {
    const v = await verifyJwt<SessionClaims>(raw, await keysFor(c), configOf(c).service, "session");
    if (v.ok) await storeOf(c).endSession(v.claims.jti, v.claims.exp);
  }
  deleteCookie(c, sessionCookie(c), { path: "/", secure: isHttps(c) });
}

/**
 * The principal of a valid session, or null (no cookie, bad signature, expired, or revoked:
 * the account's epoch moved, the account is gone, or ADMIN_PASSWORD changed).
 */
export async function sessionPrincipal(c: Ctx): Promise<Principal | null> {
  const raw = getCookie(c, sessionCookie(c));
  if (!raw || raw.length > 4096) return null;
  const cfg = configOf(c);
  const v = await verifyJwt<SessionClaims>(raw, await keysFor(c), cfg.service, "session");
  if (!v.ok) return null;
  const p = principalFromId(v.claims.sub);
  if (!p || (p.kind !== "user" && p.kind !== "robot")) return null;
  if (p.kind === "user" && p.name === "admin") {
    const tag = await adminPasswordTag(cfg);
    if (tag === undefined || v.claims.pw === undefined || !(await stringsEqual(tag, v.claims.pw))) return null;
  }
  const sub = subjectOf(p);
  // One AccountStore call: the account's epoch (0 for admin), or null when it is gone or this
  // session was signed out.
  const epoch = await storeOf(c).sessionEpoch({ kind: p.kind, name: sub.kind === "anonymous" ? "" : sub.name }, v.claims.jti);
  return epoch !== null && epoch === v.claims.ep ? p : null;
}

// ---- CSRF -------------------------------------------------------------------------------------

/** The cookie-signing key: HMAC of the token signing key with a fixed label (never the key itself). */
async function csrfSecret(c: Ctx): Promise<Uint8Array> {
  const keys = await keysFor(c);
  const k = await crypto.subtle.importKey("raw", new TextEncoder().encode(keys[0].secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, new TextEncoder().encode("cloister ui csrf cookie v1")));
}

async function issueCsrf(c: Ctx): Promise<string> {
  const token = randomId(24);
  await setSignedCookie(c, csrfCookie(c), token, await csrfSecret(c), cookieOpts(c));
  return token;
}

/** The CSRF token for forms on this page: the signed cookie's, or a new one (cookie set). */
export async function csrfToken(c: Ctx): Promise<string> {
  const current = await getSignedCookie(c, await csrfSecret(c), csrfCookie(c));
  return typeof current === "string" && current.length > 0 ? current : issueCsrf(c);
}

/**
 * Whether a state-changing request repeats the token of its correctly signed CSRF cookie (in the
 * form field or, for htmx requests, the X-CSRF-Token header). A forged request has neither: the
 * attacker's page cannot read the cookie, and cannot plant a cookie that verifies.
 */
export async function csrfValid(c: Ctx, sent: string | undefined): Promise<boolean> {
  if (!sent || sent.length > 256) return false;
  const cookie = await getSignedCookie(c, await csrfSecret(c), csrfCookie(c));
  if (typeof cookie !== "string" || cookie.length === 0) return false;
  return stringsEqual(cookie, sent);
}

// ---- flash messages ---------------------------------------------------------------------------
// The result of a form is shown once on the page it redirects to. It travels in a short-lived
// cookie, not the URL: a link cannot make the UI display text of an attacker's choosing.

export type Flash = { kind: "ok" | "error"; text: string };
const flashCookie = (c: Ctx) => (isHttps(c) ? "__Host-cloister_flash" : "cloister_flash");

export function setFlash(c: Ctx, flash: Flash): void {
  setCookie(c, flashCookie(c), encodeURIComponent(JSON.stringify({ kind: flash.kind, text: flash.text.slice(0, 500) })), cookieOpts(c, 60));
}

/** The pending flash message, if any (and clears it). */
export function takeFlash(c: Ctx): Flash | null {
  const raw = getCookie(c, flashCookie(c));
  if (!raw) return null;
  deleteCookie(c, flashCookie(c), { path: "/", secure: isHttps(c) });
  try {
    const f = JSON.parse(decodeURIComponent(raw)) as Flash;
    return (f.kind === "ok" || f.kind === "error") && typeof f.text === "string" ? { kind: f.kind, text: f.text.slice(0, 500) } : null;
  } catch {
    return null;
  }
}
