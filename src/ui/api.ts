// The UI is a client of cloister's own HTTP API, called in-process (docs/adr/0018-web-ui.md):
// every read and change goes through the same /v2 and /admin routes — their validation, policy
// checks, limits and audit events — as a Bearer token minted for the signed-in principal with
// only what policy grants it. No page reimplements a route.
import type { Context } from "hono";
import { configOf, rulesFor, subjectOf, type Principal } from "../auth/session";
import { keysFor } from "./session";
import { grantAccess, issueAccessToken, type AccessEntry } from "../auth/tokens";

type Ctx = Context<any>;

/** What the UI needs from the app it is mounted in. */
export interface Upstream {
  fetch(req: Request, env: any, ctx?: any): Response | Promise<Response>;
}

/** Lifetime of the tokens the UI mints for its in-process calls (they never leave the Worker). */
const CALL_TOKEN_TTL = 60;
/** Largest JSON answer the UI reads from one call (an audit page of 500 rows fits). */
const MAX_API_BODY = 8 * 1024 * 1024;

export interface ApiResult<T = any> {
  status: number;
  ok: boolean;
  headers: Headers;
  data: T;
  /** The first error's message, for showing to the user. */
  error: string | null;
}

export interface CallOptions {
  method?: string;
  /** Scopes the call needs (e.g. repository:a/b:pull); granted only as far as policy allows. */
  scopes?: AccessEntry[];
  json?: unknown;
  accept?: string;
  raw?: boolean;
}

export const repoScope = (name: string, ...actions: string[]): AccessEntry => ({ type: "repository", name, actions });
export const ADMIN_SCOPE: AccessEntry = { type: "registry", name: "admin", actions: ["*"] };
export const CATALOG_SCOPE: AccessEntry = { type: "registry", name: "catalog", actions: ["*"] };

async function authorization(c: Ctx, principal: Principal | null, scopes: AccessEntry[]): Promise<string | null> {
  if (!principal || principal.kind === "open" || principal.kind === "anonymous") return null;
  const cfg = configOf(c);
  const access = grantAccess(await rulesFor(c), subjectOf(principal), scopes).filter((a) => a.actions.length);
  const { token } = await issueAccessToken({ keys: await keysFor(c), subject: principal.id, audience: cfg.service, access, ttl: CALL_TOKEN_TTL });
  return `Bearer ${token}`;
}

/** Calls `path` on the app in-process as `principal`; returns the response (raw) or parsed JSON. */
export async function callRaw(c: Ctx, up: Upstream, principal: Principal | null, path: string, o: CallOptions = {}): Promise<Response> {
  const url = new URL(path, new URL(c.req.url).origin);
  const headers = new Headers();
  const auth = await authorization(c, principal, o.scopes ?? []);
  if (auth) headers.set("Authorization", auth);
  // The audit log records the browser's address and agent, not the Worker's.
  for (const h of ["CF-Connecting-IP", "User-Agent", "X-Request-Id"]) {
    const v = c.req.header(h);
    if (v) headers.set(h, v);
  }
  if (o.accept) headers.set("Accept", o.accept);
  let body: string | undefined;
  if (o.json !== undefined) {
    body = JSON.stringify(o.json);
    headers.set("Content-Type", "application/json");
  }
  let ctx: unknown;
  try {
    ctx = c.executionCtx;
  } catch {
    ctx = undefined;
  }
  return up.fetch(new Request(url, { method: o.method ?? "GET", headers, body }), c.env, ctx);
}

export async function call<T = any>(c: Ctx, up: Upstream, principal: Principal | null, path: string, o: CallOptions = {}): Promise<ApiResult<T>> {
  const res = await callRaw(c, up, principal, path, o);
  const len = Number(res.headers.get("Content-Length") ?? "0");
  let data: any = null;
  if (len > MAX_API_BODY) {
    await res.body?.cancel();
  } else {
    const text = await res.text();
    if (text.length > MAX_API_BODY) data = null;
    else {
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = text;
      }
    }
  }
  const error = res.ok ? null : (data?.errors?.[0]?.message as string | undefined) ?? `HTTP ${res.status}`;
  return { status: res.status, ok: res.ok, headers: res.headers, data: data as T, error };
}
