// The /v2 gate: works out the scope a request needs from its route, then accepts a Bearer token
// that grants it, Basic credentials that policy allows, or anonymous access that policy allows.
// Otherwise 401 with a Docker token challenge naming exactly that scope.
import type { Context, MiddlewareHandler } from "hono";
import { oci } from "../oci/errors";
import { parseV2Path, type V2Route } from "../oci/path";
import type { AuthConfig } from "./config";
import { warnOpenOnce } from "./config";
import { evaluate, type Action } from "./policy";
import {
  ANONYMOUS,
  OPEN,
  authState,
  bearerToken,
  configOf,
  login,
  parseBasic,
  principalFromId,
  rulesFor,
  setAuth,
  signingKeysFor,
  subjectOf,
  throttled,
  type Principal,
} from "./session";
import { accessCovers, formatScope, verifyJwt, type AccessClaims, type AccessEntry } from "./tokens";
import { OciError } from "../oci/errors";
import { record } from "../audit/record";

/**
 * Audit a refusal of a request that carried credentials (in the background). Anonymous
 * challenges are not recorded: every docker push starts with one.
 */
export function auditDenial(c: Context<any>, err: unknown, repository: string | null, scope: string | null): void {
  if (!(err instanceof OciError) || ![401, 403, 429].includes(err.status) || !c.req.header("Authorization")) return;
  void record(c.env, { action: "auth.denied", target: { repository }, outcome: { status: err.status, code: err.code }, details: { reason: err.message.slice(0, 300), scope, method: c.req.method } }, "background");
}

/** The access a /v2 request needs; null for the base endpoint (any signed-in principal). */
export function requiredAccess(route: V2Route, method: string): AccessEntry | null {
  if (route.kind === "base") return null;
  if (route.kind === "catalog") return { type: "registry", name: "catalog", actions: ["*"] };
  const m = method.toUpperCase();
  let actions: string[];
  if (route.kind === "uploads" || route.kind === "upload") actions = ["pull", "push"];
  else if (m === "GET" || m === "HEAD") actions = ["pull"];
  else if (m === "DELETE") actions = ["delete"];
  else actions = ["pull", "push"];
  return { type: "repository", name: route.name, actions };
}

/** The policy actions behind an access entry. */
function policyActions(need: AccessEntry): Action[] {
  if (need.type === "registry") return need.name === "catalog" ? ["catalog"] : ["admin"];
  return need.actions as Action[];
}

function quote(v: string): string {
  return `"${v.replace(/["\\]/g, "")}"`;
}

export function challengeHeader(cfg: AuthConfig, need: AccessEntry | null, error?: "invalid_token" | "insufficient_scope"): string {
  let h = `Bearer realm=${quote(cfg.realm)},service=${quote(cfg.service)}`;
  if (need) h += `,scope=${quote(formatScope(need))}`;
  if (error) h += `,error=${quote(error)}`;
  return h;
}

/** Detail in distribution's shape: the access records the request needed. */
function accessDetail(need: AccessEntry | null) {
  if (!need) return null;
  return need.actions.map((a) => ({ Type: need.type, Class: "", Name: need.name, Action: a }));
}

export function unauthorized(cfg: AuthConfig, need: AccessEntry | null, message: string, error?: "invalid_token" | "insufficient_scope") {
  return oci("UNAUTHORIZED", message, accessDetail(need), 401, { "WWW-Authenticate": challengeHeader(cfg, need, error) });
}

/** Whether `principal` may do everything in `need` according to current policy. */
async function policyAllows(c: Context<any>, principal: Principal, need: AccessEntry): Promise<boolean> {
  const rules = await rulesFor(c);
  const repo = need.type === "repository" ? need.name : null;
  return policyActions(need).every((a) => evaluate(rules, subjectOf(principal), a, repo).allowed);
}

export function authMiddleware(): MiddlewareHandler<any> {
  const gate = gateMiddleware();
  return async (c, next) => {
    try {
      return await gate(c, async () => {
        await next();
      });
    } catch (err) {
      const route = parseV2Path(new URL(c.req.url).pathname);
      const need = route ? requiredAccess(route, c.req.method) : null;
      auditDenial(c, err, need?.type === "repository" ? need.name : null, need ? formatScope(need) : null);
      throw err;
    }
  };
}

function gateMiddleware(): MiddlewareHandler<any> {
  return async (c, next) => {
    const cfg = configOf(c);
    if (cfg.mode === "open") {
      warnOpenOnce(c.env);
      setAuth(c, { principal: OPEN, via: "open" });
      return next();
    }
    const route = parseV2Path(new URL(c.req.url).pathname);
    if (!route) {
      // Not a registry endpoint: the router answers 404 and nothing is served.
      setAuth(c, { principal: ANONYMOUS, via: "anonymous" });
      return next();
    }
    const need = requiredAccess(route, c.req.method);
    const header = c.req.header("Authorization");

    const token = bearerToken(header);
    if (token) {
      const v = await verifyJwt<AccessClaims>(token, await signingKeysFor(c, cfg), cfg.service, "access");
      if (!v.ok) throw unauthorized(cfg, need, `invalid token (${v.reason}); request a new one from ${cfg.realm}`, "invalid_token");
      const principal = principalFromId(v.claims.sub);
      if (!principal) throw unauthorized(cfg, need, "invalid token (unknown subject)", "invalid_token");
      setAuth(c, { principal, via: "bearer", access: v.claims.access, gates: v.claims.sg });
      if (need && !accessCovers(v.claims.access, need.type, need.name, need.actions)) {
        throw unauthorized(cfg, need, `the token does not grant ${formatScope(need)}`, "insufficient_scope");
      }
      return next();
    }

    const basic = parseBasic(header);
    if (basic) {
      const r = await login(c, cfg, basic.username, basic.password);
      if (!r.ok) {
        if (r.status === 429) throw throttled(r.retryAfter, r.message);
        throw unauthorized(cfg, need, r.message);
      }
      setAuth(c, { principal: r.principal, via: "basic" });
      if (need && !(await policyAllows(c, r.principal, need))) {
        throw unauthorized(cfg, need, `${r.principal.name} may not ${formatScope(need)}`, "insufficient_scope");
      }
      return next();
    }

    if (header) throw unauthorized(cfg, need, "unsupported Authorization scheme: use Bearer (from the token realm) or Basic");

    // Anonymous: the base endpoint always challenges (clients learn the realm there); other
    // endpoints are served when policy grants anonymous access (public repositories).
    setAuth(c, { principal: ANONYMOUS, via: "anonymous" });
    if (!need || !(await policyAllows(c, ANONYMOUS, need))) throw unauthorized(cfg, need, "authentication required");
    return next();
  };
}

/** The principal of this request (anonymous when the auth middleware did not run). */
export function principalOf(c: Context<any>): Principal {
  return authState(c)?.principal ?? ANONYMOUS;
}
