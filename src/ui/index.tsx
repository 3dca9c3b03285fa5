// The web UI under /ui (docs/ui.md, docs/adr/0018-web-ui.md): server-rendered Hono JSX pages,
// htmx and one small script served by the Worker. Mounted in src/app.ts with
// `app.route("/ui", uiRoutes(app))`; the app is passed in so pages can call its API in-process.
import { Hono, type Context } from "hono";
import { secureHeaders } from "hono/secure-headers";
import { csrf } from "hono/csrf";
import { bodyLimit } from "hono/body-limit";
import { OciError } from "../oci/errors";
import { authMode } from "../auth/config";
import { evaluate } from "../auth/policy";
import { ANONYMOUS, OPEN, configOf, login, rulesFor, setAuth, subjectOf, throttled, type Principal } from "../auth/session";
import { record } from "../audit/record";
import { ASSETS } from "./assets";
import { Layout, type PageInfo } from "./layout";
import { CSRF_FIELD, CSRF_HEADER, csrfToken, csrfValid, endSession, sessionPrincipal, setFlash, startSession, takeFlash, type Flash } from "./session";
import type { Upstream } from "./api";
import { mountBrowse } from "./browse";
import { mountAdmin } from "./admin";

/** Largest form body the UI accepts (bytes); a policy rule's JSON is the biggest field. */
export const UI_FORM_MAX_BYTES = 64 * 1024;

export type UiVars = { ui: UiState };
export interface UiState {
  principal: Principal | null;
  openMode: boolean;
  isAdmin: boolean;
  csrf: string;
  form: Record<string, string>;
  flash: Flash | null;
}
export type UiCtx = Context<{ Bindings: any; Variables: UiVars }>;

/** An error page: the status a route would answer, with its message. */
export class UiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function page(c: UiCtx, info: Omit<PageInfo, "principal" | "openMode" | "isAdmin" | "csrf">, body: any, status = 200) {
  const ui = c.get("ui");
  return c.html(
    <Layout page={{ ...info, flash: info.flash ?? ui.flash, principal: ui.principal, openMode: ui.openMode, isAdmin: ui.isAdmin, csrf: ui.csrf }}>{body}</Layout>,
    status as any,
  );
}

function errorPage(c: UiCtx, status: number, message: string) {
  const ui = c.get("ui") as UiState | undefined;
  return c.html(
    <Layout page={{ title: status === 403 ? "Forbidden" : status === 404 ? "Not found" : "Error", principal: ui?.principal ?? null, openMode: ui?.openMode ?? false, isAdmin: ui?.isAdmin ?? false, csrf: ui?.csrf ?? "" }}>
      <p class="flash error" role="alert" id="error-message">
        {message}
      </p>
      <p>
        <a href="/ui">Back to the dashboard</a>
      </p>
    </Layout>,
    status as any,
  );
}

/** Only same-site relative targets under /ui are followed after sign-in (no open redirect). */
function safeNext(next: string | undefined): string {
  return next && /^\/ui(?:[/?][^\\]*)?$/.test(next) && !next.startsWith("//") ? next : "/ui";
}

/** The admin gate of the admin pages: the policy's `admin` action, as for the admin API. */
async function adminAllowed(c: UiCtx, p: Principal | null): Promise<boolean> {
  const cfg = configOf(c);
  if (!p) return false;
  if (p.kind === "open") return cfg.adminPassword === null; // as requireAdmin: open mode without ADMIN_PASSWORD
  return evaluate(await rulesFor(c), subjectOf(p), "admin", null).allowed;
}

/** Post/redirect/get: the outcome of a form is shown once on the page it returns to. */
export function redirectWithFlash(c: UiCtx, to: string, flash: Flash) {
  setFlash(c, flash);
  return c.redirect(to, 303);
}

export function requireAdminPage(c: UiCtx): void {
  if (!c.get("ui").isAdmin) throw new UiError(403, "This page needs the admin action: your account does not hold it.");
}

export function uiRoutes(up: Upstream) {
  const ui = new Hono<{ Bindings: any; Variables: UiVars }>();

  ui.onError((err, c) => {
    if (err instanceof UiError) return errorPage(c, err.status, err.message);
    if (err instanceof OciError) return errorPage(c, err.status, err.message);
    console.error("cloister ui error", err instanceof Error ? err.stack : err);
    return errorPage(c, 500, "internal error");
  });
  ui.notFound((c) => errorPage(c, 404, `no page at ${new URL(c.req.url).pathname.slice(0, 200)}`));

  ui.use(
    "*",
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'none'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'"],
        connectSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
      referrerPolicy: "same-origin",
      crossOriginResourcePolicy: "same-origin",
    }),
  );

  ui.get("/static/:file", (c) => {
    const a = ASSETS[c.req.param("file")];
    if (!a) return c.text("not found", 404);
    return c.body(a.body, 200, { "Content-Type": a.type, "Cache-Control": "public, max-age=3600" });
  });

  // Forms only: a bigger body is refused before it is read.
  ui.use(
    "*",
    bodyLimit({
      maxSize: UI_FORM_MAX_BYTES,
      onError: () => {
        throw new UiError(413, `form too large (${UI_FORM_MAX_BYTES / 1024} KiB max)`);
      },
    }),
  );
  // Origin check (hono/csrf): a form posted from another site is refused before anything runs.
  ui.use("*", async (c, next) => {
    try {
      await csrf()(c, next);
    } catch (e) {
      if (e instanceof Error && "getResponse" in e) throw new UiError(403, "cross-site request refused (Origin does not match this site)");
      throw e;
    }
  });

  // Session, admin flag and the CSRF token check for every state-changing request.
  ui.use("*", async (c, next) => {
    const openMode = authMode((c.env ?? {}) as Record<string, unknown>) === "open";
    const session = await sessionPrincipal(c);
    const principal: Principal | null = session ?? (openMode ? OPEN : null);
    // The auth state of this request: the request log names the principal, and policy rules are
    // loaded once per page (rulesFor caches on it).
    setAuth(c, { principal: principal ?? ANONYMOUS, via: session ? "session" : openMode ? "open" : "anonymous" });
    const state: UiState = { principal, openMode, isAdmin: await adminAllowed(c, principal), csrf: await csrfToken(c), form: {}, flash: null };
    c.set("ui", state);
    if (c.req.method === "GET" && c.req.header("HX-Request") !== "true") state.flash = takeFlash(c);
    const path = new URL(c.req.url).pathname;
    // Hono mounts the sub-app's "/" at "/ui" exactly (strict paths): "/ui/" is sent there.
    if (path === "/ui/" && c.req.method === "GET") return c.redirect("/ui" + new URL(c.req.url).search, 301);
    const isLogin = path === "/ui/login";
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      const type = (c.req.header("Content-Type") ?? "").toLowerCase();
      if (type.startsWith("application/x-www-form-urlencoded") || type.startsWith("multipart/form-data")) {
        const form = await c.req.parseBody();
        for (const [k, v] of Object.entries(form)) if (typeof v === "string") state.form[k] = v;
      }
      const sent = state.form[CSRF_FIELD] ?? c.req.header(CSRF_HEADER);
      if (!(await csrfValid(c, sent))) throw new UiError(403, "missing or invalid CSRF token: reload the page and submit the form again");
    }
    if (!principal && !isLogin) {
      if (c.req.method === "GET") return c.redirect(`/ui/login?next=${encodeURIComponent(path + new URL(c.req.url).search)}`, 303);
      throw new UiError(401, "sign in first");
    }
    await next();
    c.header("Cache-Control", "no-store");
  });

  ui.get("/login", (c) => loginPage(c, c.req.query("next"), null));

  ui.post("/login", async (c) => {
    const f = c.get("ui").form;
    const username = (f.username ?? "").trim();
    const password = f.password ?? "";
    const cfg = configOf(c);
    // The same accounts, checks and throttling as /token (src/auth/session.ts login()).
    const r = await login(c, cfg, username, password);
    void record(c.env, { action: "auth.signin", principal: r.ok ? r.principal.id : "anonymous", outcome: r.ok ? { status: 200 } : { status: r.status, code: r.status === 429 ? "TOOMANYREQUESTS" : "UNAUTHORIZED" }, details: { account: username.slice(0, 256), via: "ui", ...(r.ok ? {} : { reason: r.message }) } }, "background");
    if (!r.ok) {
      if (r.status === 429) {
        const t = throttled(r.retryAfter, r.message);
        c.header("Retry-After", String(r.retryAfter));
        return loginPage(c, f.next, t.message, 429);
      }
      return loginPage(c, f.next, r.message, 401);
    }
    await startSession(c, r.principal, r.epoch);
    return c.redirect(safeNext(f.next), 303);
  });

  ui.post("/logout", async (c) => {
    await endSession(c);
    return c.redirect("/ui/login", 303);
  });

  mountBrowse(ui, up);
  mountAdmin(ui, up);
  return ui;
}

function loginPage(c: UiCtx, next: string | undefined, error: string | null, status = 200) {
  const s = c.get("ui");
  return page(
    c,
    { title: "Sign in", flash: error ? { kind: "error", text: error } : null },
    <form method="post" action="/ui/login" id="login-form">
      <input type="hidden" name={CSRF_FIELD} value={s.csrf} />
      <input type="hidden" name="next" value={safeNext(next)} />
      <label for="username">User name</label>
      <input id="username" name="username" type="text" autocomplete="username" required autofocus />
      <label for="password">Password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required />
      <p>
        <button type="submit" class="primary">
          Sign in
        </button>
      </p>
      <p class="muted">Users, robots (robot$owner+name with its secret) and admin sign in with the same credentials as docker login.</p>
    </form>,
    status,
  );
}
