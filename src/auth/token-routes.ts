// The token service (Docker registry token spec + its OAuth2 variant), mounted at /token.
//   GET  /token?service=…&scope=…[&scope=…][&offline_token=true]   Basic credentials or anonymous
//   POST /token  (form) grant_type=password|refresh_token, service, scope, client_id, access_type
import { Hono, type Context } from "hono";
import { OciError, oci } from "../oci/errors";
import type { AuthConfig } from "./config";
import { record } from "../audit/record";
import {
  ANONYMOUS,
  OPEN,
  configOf,
  login,
  parseBasic,
  principalFromId,
  rulesFor,
  setAuth,
  signingKeysFor,
  storeOf,
  subjectOf,
  throttled,
  type Principal,
} from "./session";
import {
  formatScope,
  gateClaims,
  grantAccess,
  issueAccessToken,
  issueRefreshToken,
  parseScopes,
  verifyJwt,
  type AccessEntry,
  type GateClaim,
  type RefreshClaims,
} from "./tokens";

type Ctx = Context<any>;

function checkService(cfg: AuthConfig, service: string | undefined | null) {
  if (service && service !== cfg.service) {
    throw oci("UNSUPPORTED", `this token service issues tokens for service "${cfg.service}", not "${service.slice(0, 200)}" (set AUTH_SERVICE if the registry is reached under another name)`, undefined, 400);
  }
}

function badCredentials(message: string, basicChallenge: boolean) {
  return oci("UNAUTHORIZED", message, undefined, 401, basicChallenge ? { "WWW-Authenticate": 'Basic realm="cloister token service"' } : {});
}

async function authenticate(c: Ctx, cfg: AuthConfig, username: string, password: string): Promise<{ principal: Principal; epoch: number }> {
  const r = await login(c, cfg, username, password);
  // Sign-ins are not mutations: recorded in the background, never slowing or failing the sign-in.
  void record(c.env, { action: "auth.signin", principal: r.ok ? r.principal.id : "anonymous", outcome: r.ok ? { status: 200 } : { status: r.status, code: r.status === 429 ? "TOOMANYREQUESTS" : "UNAUTHORIZED" }, details: { account: username.slice(0, 256), ...(r.ok ? {} : { reason: r.message }) } }, "background");
  if (r.ok) return r;
  if (r.status === 429) throw throttled(r.retryAfter, r.message);
  throw badCredentials(r.message, c.req.method === "GET");
}

async function grant(c: Ctx, principal: Principal, requested: AccessEntry[]): Promise<{ access: AccessEntry[]; gates?: GateClaim[] }> {
  if (principal.kind === "open") {
    return { access: requested.map((e) => ({ ...e, actions: e.actions.filter((a) => ["pull", "push", "delete", "*"].includes(a)) })) };
  }
  const rules = await rulesFor(c);
  const access = grantAccess(rules, subjectOf(principal), requested);
  // The signature gates of what it may pull ride along, so a gated pull costs no policy lookup
  // (ADR 0019, "Session 4": as stale as the access claim itself, i.e. the token's lifetime).
  return { access, gates: gateClaims(rules, access) };
}

async function respond(
  c: Ctx,
  cfg: AuthConfig,
  principal: Principal,
  requested: AccessEntry[],
  refresh: { epoch: number } | null,
  oauth: boolean,
) {
  const keys = await signingKeysFor(c, cfg);
  const { access, gates } = await grant(c, principal, requested);
  const { token, claims } = await issueAccessToken({ keys, subject: principal.id, audience: cfg.service, access, ttl: cfg.tokenTtlSeconds, gates });
  const body: Record<string, unknown> = {
    token,
    access_token: token,
    expires_in: cfg.tokenTtlSeconds,
    issued_at: new Date(claims.iat * 1000).toISOString(),
  };
  void record(c.env, { action: "auth.token", principal: principal.id, details: { granted: access.filter((a) => a.actions.length).map(formatScope), requested: requested.map(formatScope).slice(0, 50), refreshToken: refresh !== null } }, "background");
  if (oauth) body.scope = access.filter((a) => a.actions.length).map(formatScope).join(" ");
  if (refresh) {
    body.refresh_token = await issueRefreshToken({ keys, subject: principal.id, audience: cfg.service, epoch: refresh.epoch, ttl: cfg.refreshTokenTtlSeconds });
  }
  return c.json(body, 200, { "Cache-Control": "no-store", Pragma: "no-cache" });
}

export const tokenRoutes = new Hono<any>();

tokenRoutes.onError((err) => {
  if (err instanceof OciError) return err.toResponse();
  console.error("cloister token service error", err instanceof Error ? err.stack : err);
  return oci("INTERNAL", "token service error").toResponse();
});

tokenRoutes.get("/", async (c) => {
  const cfg = configOf(c);
  checkService(cfg, c.req.query("service"));
  const requested = parseScopes(c.req.queries("scope") ?? []);
  const header = c.req.header("Authorization");
  let principal: Principal = cfg.mode === "open" ? OPEN : ANONYMOUS;
  let epoch: number | null = null;
  if (header) {
    const basic = parseBasic(header);
    if (!basic) throw badCredentials("the token service takes Basic credentials (or none, for anonymous access)", true);
    if (cfg.mode === "token") {
      ({ principal, epoch } = await authenticate(c, cfg, basic.username, basic.password));
      // docker sends account=<user>; a different value is a confused client, not a new identity.
      const account = c.req.query("account");
      if (account && account !== basic.username) throw badCredentials("account does not match the credentials", true);
    }
  }
  setAuth(c, { principal, via: header ? "basic" : "anonymous" });
  const offline = (c.req.query("offline_token") ?? "").toLowerCase() === "true";
  return respond(c, cfg, principal, requested, offline && epoch !== null ? { epoch } : null, false);
});

tokenRoutes.post("/", async (c) => {
  const cfg = configOf(c);
  const type = (c.req.header("Content-Type") ?? "").toLowerCase();
  if (!type.startsWith("application/x-www-form-urlencoded") && !type.startsWith("multipart/form-data")) {
    throw oci("UNSUPPORTED", "POST /token takes an application/x-www-form-urlencoded form (OAuth2)", undefined, 400);
  }
  let form: Record<string, string | File | (string | File)[]>;
  try {
    form = await c.req.parseBody({ all: true });
  } catch {
    throw oci("UNSUPPORTED", "unreadable form body", undefined, 400);
  }
  const field = (k: string): string | undefined => {
    const v = form[k];
    const s = Array.isArray(v) ? v[0] : v;
    return typeof s === "string" ? s : undefined;
  };
  const all = (k: string): string[] => {
    const v = form[k];
    return (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((x): x is string => typeof x === "string");
  };
  checkService(cfg, field("service"));
  const requested = parseScopes(all("scope"));
  const grantType = field("grant_type");

  if (grantType === "password") {
    const username = field("username") ?? "";
    const password = field("password") ?? "";
    if (!username) throw oci("UNSUPPORTED", "grant_type=password needs username and password", undefined, 400);
    if (cfg.mode === "open") return respond(c, cfg, OPEN, requested, null, true);
    const { principal, epoch } = await authenticate(c, cfg, username, password);
    setAuth(c, { principal, via: "basic" });
    return respond(c, cfg, principal, requested, field("access_type") === "offline" ? { epoch } : null, true);
  }

  if (grantType === "refresh_token") {
    const rt = field("refresh_token") ?? "";
    if (!rt) throw oci("UNSUPPORTED", "grant_type=refresh_token needs refresh_token", undefined, 400);
    const v = await verifyJwt<RefreshClaims>(rt, await signingKeysFor(c, cfg), cfg.service, "refresh");
    if (!v.ok) throw badCredentials(`invalid refresh token (${v.reason}); sign in again`, false);
    const principal = principalFromId(v.claims.sub);
    if (!principal || (principal.kind !== "user" && principal.kind !== "robot")) throw badCredentials("invalid refresh token (subject)", false);
    if (principal.kind === "user" && principal.name === "admin" && cfg.adminPassword === null) {
      throw badCredentials("sign-in as admin is disabled: the ADMIN_PASSWORD secret is not set on this deployment", false);
    }
    const sub = subjectOf(principal);
    const epoch = await storeOf(c).accountEpoch({ kind: principal.kind, name: sub.kind === "anonymous" ? "" : sub.name });
    if (epoch === null || epoch !== v.claims.ep) throw badCredentials("refresh token revoked (account deleted, expired or password changed); sign in again", false);
    setAuth(c, { principal, via: "bearer" });
    return respond(c, cfg, principal, requested, { epoch }, true);
  }

  throw oci("UNSUPPORTED", `unsupported grant_type ${JSON.stringify((grantType ?? "").slice(0, 50))}: use "password" or "refresh_token"`, undefined, 400);
});

