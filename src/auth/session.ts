// Per-request auth state, credential checks and the data the policy engine needs.
import type { Context } from "hono";
import { oci } from "../oci/errors";
import { classifyAccount, type AccountStore } from "../stores/account-store";
import { accountStoreFor } from "../stores/index";
import type { Env } from "../env";
import { authConfig, type AuthConfig, type SigningKey } from "./config";
import { sha256Hex, stringsEqual, verifyPassword } from "./crypto";
import { base64ToBytes } from "../util/encoding";
import { parseRule, withBuiltins, type Rule, type Subject } from "./policy";
import type { AccessEntry, GateClaim } from "./tokens";
import { record } from "../audit/record";

export type Principal = {
  kind: "user" | "robot" | "anonymous" | "open";
  name: string;
  /** Stable id, equal to the policy subject: "user:alice", "robot:alice+ci", "anonymous", "open". */
  id: string;
};

export const ANONYMOUS: Principal = Object.freeze({ kind: "anonymous", name: "anonymous", id: "anonymous" });
export const OPEN: Principal = Object.freeze({ kind: "open", name: "anonymous", id: "open" });

export interface AuthState {
  principal: Principal;
  via: "open" | "bearer" | "basic" | "anonymous" | "session";
  /** The token's access claim when the request came with a Bearer token. */
  access?: AccessEntry[];
  /** The token's signature-gate claim (evaluated at issuance), when it carried one. */
  gates?: GateClaim[];
  /** Rules (with built-ins) once loaded in this request. */
  rules?: Rule[];
}

/** Variables the auth module keeps in the Hono context. Add to AppEnv["Variables"]. */
export type AuthVariables = { auth: AuthState; principal: Principal };

type Bindings = { ACCOUNT_STORE: DurableObjectNamespace<AccountStore> } & Record<string, unknown>;
// The auth module reads and writes its own variables through this one view of any Context.
type AnyCtx = Context<any>;
type AuthCtx = Context<{ Bindings: Bindings; Variables: AuthVariables }>;
const view = (c: AnyCtx) => c as unknown as AuthCtx;

export function userPrincipal(name: string): Principal {
  return { kind: "user", name, id: `user:${name}` };
}
export function robotPrincipal(shortName: string): Principal {
  return { kind: "robot", name: `robot$${shortName}`, id: `robot:${shortName}` };
}

/**
 * Principal from a token's sub claim (the principal id). Tokens minted in open mode (sub "open")
 * are refused: they must not carry over into token mode when the signing key does.
 */
export function principalFromId(id: string): Principal | null {
  if (id === "anonymous") return ANONYMOUS;
  if (id.startsWith("user:") && id.length > 5) return userPrincipal(id.slice(5));
  if (id.startsWith("robot:") && id.length > 6) return robotPrincipal(id.slice(6));
  return null;
}

export function subjectOf(p: Principal): Subject {
  if (p.kind === "user") return { kind: "user", name: p.name };
  if (p.kind === "robot") return { kind: "robot", name: p.id.slice("robot:".length) };
  return { kind: "anonymous" };
}

export function setAuth(c: AnyCtx, state: AuthState): void {
  view(c).set("auth", state);
  view(c).set("principal", state.principal);
}

export function authState(c: AnyCtx): AuthState | undefined {
  return view(c).get("auth");
}

export function configOf(c: AnyCtx): AuthConfig {
  return authConfig(view(c).env, c.req.url);
}

export function storeOf(c: AnyCtx) {
  return accountStoreFor(view(c).env as unknown as Env);
}

/** Signing keys: TOKEN_SIGNING_KEYS, else the AccountStore's (created on first use). */
export async function signingKeysFor(c: AnyCtx, cfg: AuthConfig): Promise<SigningKey[]> {
  if (cfg.signingKeys) return cfg.signingKeys;
  const keys = await storeOf(c).signingKeys();
  return keys.map((k) => ({ kid: k.kid, secret: k.secret }));
}

/** Stored rules plus built-ins, loaded once per request. Invalid stored rules are skipped (logged). */
export async function rulesFor(c: AnyCtx): Promise<Rule[]> {
  const st = authState(c);
  if (st?.rules) return st.rules;
  const raw = await storeOf(c).rules();
  const parsed: Rule[] = [];
  for (const text of raw) {
    try {
      parsed.push(parseRule(JSON.parse(text)));
    } catch {
      console.error(`cloister auth: skipping an invalid stored policy rule: ${text.slice(0, 200)}`);
    }
  }
  const rules = withBuiltins(parsed);
  if (st) st.rules = rules;
  return rules;
}

// ---- credentials ------------------------------------------------------------------------------

/** Decodes "Basic base64(user:pass)"; null when absent or malformed. */
export function parseBasic(header: string | undefined): { username: string; password: string } | null {
  if (!header) return null;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return null;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(base64ToBytes(m[1]));
  } catch {
    return null;
  }
  const i = text.indexOf(":");
  if (i < 0) return null;
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(header);
  return m ? m[1] : null;
}

export type LoginResult =
  | { ok: true; principal: Principal; epoch: number }
  | { ok: false; status: 401; message: string }
  | { ok: false; status: 429; retryAfter: number; message: string };

const BAD_LOGIN = "invalid username or password";

/**
 * The client address sign-in failures are counted under. Deployed, Cloudflare sets
 * CF-Connecting-IP (a client cannot choose it). Local wrangler sets it from the socket unless the
 * client sent one, so locally it can be spoofed, and behind a local front (npm start's proxy)
 * every client is 127.0.0.1. Without the header (in-process tests) everyone is "unknown".
 * IPv6 clients are counted per /64, the block one subscriber usually holds.
 */
export function clientAddress(c: AnyCtx): string {
  const raw = (c.req.header("CF-Connecting-IP") ?? "").trim();
  if (!raw) return "unknown";
  if (/^\d{1,3}(?:\.\d{1,3}){3}$/.test(raw)) return raw;
  return ipv6Prefix64(raw) ?? "invalid";
}

/** "2001:db8:1:2::7" → "2001:db8:1:2::/64"; IPv4-mapped addresses → the IPv4 address; null if malformed. */
function ipv6Prefix64(text: string): string | null {
  if (text.length > 64 || !/^[0-9a-fA-F:.]+$/.test(text)) return null;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(text);
  if (mapped) return mapped[1];
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const part = (h: string) => (h === "" ? [] : h.split(":"));
  const head = part(halves[0]);
  const tail = halves.length === 2 ? part(halves[1]) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(":")}::/64`;
}

/**
 * Checks a username/password (or robot name/secret) with throttling per (account, client
 * address). Passwords are hashed here in the Worker; the AccountStore counts attempts before the
 * check (loginBegin) and records the outcome (loginEnd). Unknown accounts cost the same work as
 * known ones.
 */
export async function login(c: AnyCtx, cfg: AuthConfig, username: string, password: string): Promise<LoginResult> {
  if (username.length === 0 || username.length > 256 || password.length > 4096 || /[\u0000-\u001f]/.test(username)) {
    return { ok: false, status: 401, message: BAD_LOGIN };
  }
  const store = storeOf(c);
  const addr = clientAddress(c);
  // Parallel requests with the same credential are one guess; a short fingerprint tells them apart
  // (kept in the store only while the attempt runs).
  const guess = (await sha256Hex(`${username}\u0000${password}`)).slice(0, 16);
  const rec = await store.loginBegin(username, addr, guess);
  if (rec.status === "locked" || rec.status === "busy") {
    return {
      ok: false,
      status: 429,
      retryAfter: rec.retryAfter,
      message:
        rec.status === "locked"
          ? `too many failed sign-ins for this account from your address; try again in ${rec.retryAfter} s`
          : "too many sign-in attempts for this account are in progress from your address; retry shortly",
    };
  }
  let ok = false;
  let result: LoginResult = { ok: false, status: 401, message: BAD_LOGIN };
  try {
    // Many addresses are guessing this account: slow every attempt down rather than refuse it.
    if (rec.delayMs > 0) await new Promise((r) => setTimeout(r, rec.delayMs));
    const who = classifyAccount(username);
    if (rec.kind === "admin") {
      if (cfg.adminPassword === null) {
        await verifyPassword(password, null);
        console.warn("cloister auth: sign-in as admin refused: the ADMIN_PASSWORD secret is not set");
        result = { ok: false, status: 401, message: "sign-in as admin is disabled: the ADMIN_PASSWORD secret is not set on this deployment" };
      } else if (await stringsEqual(password, cfg.adminPassword)) {
        ok = true;
        result = { ok: true, principal: userPrincipal("admin"), epoch: 0 };
      }
    } else if (rec.kind === "user") {
      if (await verifyPassword(password, rec.hash)) {
        ok = true;
        result = { ok: true, principal: userPrincipal(username), epoch: rec.epoch };
      }
    } else if (rec.kind === "robot" && who.kind === "robot") {
      if (await stringsEqual(await sha256Hex(password), rec.secretSha256)) {
        ok = true; // the secret is right; expiry is reported, not counted as a guess
        result =
          rec.expiresAt !== null && rec.expiresAt <= Math.floor(Date.now() / 1000)
            ? { ok: false, status: 401, message: "this robot account has expired" }
            : { ok: true, principal: robotPrincipal(who.name), epoch: 0 };
      }
    } else if (who.kind === "robot") {
      await sha256Hex(password); // unknown robot: same work as a known one
    } else {
      await verifyPassword(password, null); // unknown user: same work as a known one
    }
  } finally {
    const end = await store.loginEnd(username, addr, guess, ok);
    if (end.lockedFor > 0) {
      void record(view(c).env as unknown as Env, { action: "lock.lock", outcome: { status: 429, code: "TOOMANYREQUESTS" }, details: { account: username.slice(0, 256), address: addr, lockedForSeconds: end.lockedFor } }, "background");
      console.warn(`cloister auth: address ${addr} locked out of account ${JSON.stringify(username.slice(0, 64))} for ${end.lockedFor} s after repeated failed sign-ins`);
    }
  }
  return result;
}

// ---- errors -----------------------------------------------------------------------------------

export function throttled(retryAfter: number, message: string) {
  return oci("TOOMANYREQUESTS", message, undefined, 429, { "Retry-After": String(Math.max(1, Math.ceil(retryAfter))) });
}
