// Web UI security (issue 14): sessions (cookie flags, expiry, revocation on password change),
// CSRF (signed double-submit token + Origin check), the form body limit, the admin gate, the
// CSP, open mode's banner. Everything goes through the real Worker app and its stores.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { UI_FORM_MAX_BYTES } from "../../src/ui";
import { auditForwarded, makeImage, putManifest } from "./helpers";

const ADMIN_PW = "admin-password-for-ui-tests";
const TOKEN_VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, REGISTRY_HOSTS: "registry.test" };
const BASE = "http://registry.test";
const app = buildApp();

/** A browser-ish client: keeps cookies, sends same-origin Origin on POSTs unless told otherwise. */
class Browser {
  jar = new Map<string, string>();
  constructor(readonly vars: Record<string, string> = TOKEN_VARS) {}
  async fetch(path: string, init: RequestInit & { origin?: string | null } = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.jar.size) headers.set("Cookie", [...this.jar].map(([k, v]) => `${k}=${v}`).join("; "));
    if ((init.method ?? "GET") !== "GET" && init.origin !== null) headers.set("Origin", init.origin ?? BASE);
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(BASE + path, { ...init, headers, redirect: "manual" }), { ...(env as unknown as Env), ...this.vars }, ctx);
    await waitOnExecutionContext(ctx);
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(";");
      const i = pair.indexOf("=");
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (/max-age=0/i.test(sc) || value === "") this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }
  async page(path: string) {
    const res = await this.fetch(path);
    return { res, html: await res.text() };
  }
  /** The CSRF token the last page embedded in its forms. */
  static csrfOf(html: string): string {
    const m = /name="_csrf" value="([^"]+)"/.exec(html);
    if (!m) throw new Error("no CSRF field on the page");
    return m[1];
  }
  async post(path: string, fields: Record<string, string>, init: { origin?: string | null } = {}) {
    return this.fetch(path, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields).toString(), ...init });
  }
  async signIn(user: string, password: string) {
    const { html } = await this.page("/ui/login");
    return this.post("/ui/login", { _csrf: Browser.csrfOf(html), username: user, password, next: "/ui" });
  }
}

async function adminApi(method: string, path: string, body?: unknown) {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(BASE + path, { method, headers: { Authorization: `Basic ${btoa(`admin:${ADMIN_PW}`)}`, "Content-Type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) }),
    { ...(env as unknown as Env), ...TOKEN_VARS },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

describe("web UI sessions", () => {
  it("redirects to sign-in when there is no session, and serves the page after sign-in", async () => {
    const b = new Browser();
    const r = await b.fetch("/ui/repos");
    expect(r.status).toBe(303);
    expect(r.headers.get("Location")).toBe("/ui/login?next=%2Fui%2Frepos");
    const s = await b.signIn("admin", ADMIN_PW);
    expect(s.status).toBe(303);
    expect(s.headers.get("Location")).toBe("/ui");
    const cookie = s.headers.getSetCookie().find((c) => c.startsWith("cloister_session="))!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).toMatch(/Max-Age=28800/);
    expect(cookie).not.toMatch(/Secure/); // plain http here; see the https test below
    const { res, html } = await b.page("/ui");
    expect(res.status).toBe(200);
    expect(html).toContain('id="whoami">admin<');
  });

  it("uses Secure __Host- cookies over https", async () => {
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request("https://registry.test/ui/login"), { ...(env as unknown as Env), ...TOKEN_VARS }, ctx);
    await waitOnExecutionContext(ctx);
    const csrf = res.headers.getSetCookie().find((c) => c.startsWith("__Host-cloister_csrf="))!;
    expect(csrf).toMatch(/Secure/);
    expect(csrf).toMatch(/Path=\//);
    expect(csrf).toMatch(/SameSite=Strict/);
  });

  it("refuses a wrong password with the token service's message and sets no session", async () => {
    const b = new Browser();
    const r = await b.signIn("admin", "wrong");
    expect(r.status).toBe(401);
    expect(await r.text()).toContain("invalid username or password");
    expect([...b.jar.keys()]).not.toContain("cloister_session");
  });

  it("ends sessions when the user's password changes, and a tampered cookie is no session", async () => {
    expect((await adminApi("POST", "/admin/users", { name: "carol", password: "carol-password-1" })).status).toBe(201);
    const b = new Browser();
    expect((await b.signIn("carol", "carol-password-1")).status).toBe(303);
    expect((await b.fetch("/ui/repos")).status).toBe(200);
    const token = b.jar.get("cloister_session")!;
    b.jar.set("cloister_session", token.slice(0, -2) + (token.endsWith("AA") ? "BB" : "AA"));
    expect((await b.fetch("/ui/repos")).status).toBe(303);
    b.jar.set("cloister_session", token);
    expect((await adminApi("PUT", "/admin/users/carol/password", { password: "carol-password-2" })).status).toBe(204);
    const after = await b.fetch("/ui/repos");
    expect(after.status).toBe(303);
    expect(after.headers.get("Location")).toMatch(/^\/ui\/login/);
  });

  it("sign-out ends the session itself: a copy of the cookie stops working too (user and admin)", async () => {
    expect((await adminApi("POST", "/admin/users", { name: "dora", password: "dora-password-1" })).status).toBe(201);
    for (const [user, password] of [["dora", "dora-password-1"], ["admin", ADMIN_PW]]) {
      const b = new Browser();
      expect((await b.signIn(user, password)).status).toBe(303);
      const copy = new Browser();
      copy.jar = new Map(b.jar); // another tab, or a stolen cookie
      const { res, html } = await b.page("/ui/repos");
      expect(res.status).toBe(200);
      expect((await copy.fetch("/ui/repos")).status).toBe(200);
      const out = await b.post("/ui/logout", { _csrf: Browser.csrfOf(html) });
      expect(out.status).toBe(303);
      expect(b.jar.has("cloister_session")).toBe(false);
      const after = await copy.fetch("/ui/repos");
      expect(after.status, user).toBe(303);
      expect(after.headers.get("Location")).toMatch(/^\/ui\/login/);
      // Signing in again gives a new, working session.
      expect((await b.signIn(user, password)).status).toBe(303);
      expect((await b.fetch("/ui/repos")).status).toBe(200);
    }
  });

  it("a session cookie is not an access token", async () => {
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(BASE + "/admin/users", { headers: { Authorization: `Bearer ${b.jar.get("cloister_session")}` } }), { ...(env as unknown as Env), ...TOKEN_VARS }, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(401);
    expect(await res.text()).toContain("wrong-use");
  });

  it("an admin session ends when ADMIN_PASSWORD changes", async () => {
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    expect((await b.fetch("/ui/users")).status).toBe(200);
    const other = new Browser({ ...TOKEN_VARS, ADMIN_PASSWORD: "a-new-admin-password" });
    other.jar = b.jar;
    expect((await other.fetch("/ui/users")).status).toBe(303);
  });
});

describe("web UI CSRF and limits", () => {
  async function admin() {
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    const { html } = await b.page("/ui/users");
    return { b, csrf: Browser.csrfOf(html) };
  }
  const userExists = async (name: string) => (await adminApi("GET", `/admin/users/${name}`)).status === 200;

  it("creates a user with a valid token from the same origin", async () => {
    const { b, csrf } = await admin();
    const r = await b.post("/ui/users", { _csrf: csrf, name: "dave", password: "dave-password-1" });
    expect(r.status).toBe(303);
    expect(r.headers.get("Location")).toBe("/ui/users");
    expect((await b.page("/ui/users")).html).toContain("User dave created.");
    expect(await userExists("dave")).toBe(true);
  });

  it("refuses a POST without a token, with a wrong token, or from another origin — and changes nothing", async () => {
    const { b, csrf } = await admin();
    const cases: [Record<string, string>, { origin?: string | null }][] = [
      [{ name: "eve1", password: "eve-password-1" }, {}],
      [{ _csrf: csrf.slice(0, -1) + (csrf.endsWith("A") ? "B" : "A"), name: "eve2", password: "eve-password-1" }, {}],
      [{ _csrf: csrf, name: "eve3", password: "eve-password-1" }, { origin: "https://evil.example" }],
    ];
    for (const [fields, init] of cases) {
      const r = await b.post("/ui/users", fields, init);
      expect(r.status, JSON.stringify(fields)).toBe(403);
      expect(r.headers.get("Content-Type")).toMatch(/text\/html/);
    }
    for (const n of ["eve1", "eve2", "eve3"]) expect(await userExists(n)).toBe(false);
  });

  it("refuses a token copied into a request whose CSRF cookie is missing or forged", async () => {
    const { b, csrf } = await admin();
    b.jar.delete("cloister_csrf");
    expect((await b.post("/ui/users", { _csrf: csrf, name: "eve4", password: "eve-password-1" })).status).toBe(403);
    b.jar.set("cloister_csrf", `${csrf}.forgedsignature%3D`);
    expect((await b.post("/ui/users", { _csrf: csrf, name: "eve5", password: "eve-password-1" })).status).toBe(403);
    expect(await userExists("eve4")).toBe(false);
    expect(await userExists("eve5")).toBe(false);
  });

  it("refuses a form body over the limit with 413", async () => {
    const { b, csrf } = await admin();
    const r = await b.post("/ui/policies", { _csrf: csrf, rule: "x".repeat(UI_FORM_MAX_BYTES) });
    expect(r.status).toBe(413);
  });
});

describe("web UI admin gate, headers and open mode", () => {
  it("a non-admin gets 403 on every admin page, and the nav hides them", async () => {
    expect((await adminApi("POST", "/admin/users", { name: "frank", password: "frank-password-1" })).status).toBe(201);
    const b = new Browser();
    await b.signIn("frank", "frank-password-1");
    for (const p of ["/ui/policies", "/ui/users", "/ui/audit", "/ui/gc", "/ui/policies/edit?id=x", "/ui/audit/stream"]) {
      const r = await b.fetch(p);
      expect(r.status, p).toBe(403);
    }
    const { html } = await b.page("/ui");
    expect(html).not.toContain('href="/ui/users"');
    const csrf = Browser.csrfOf(html);
    const r = await b.post("/ui/users", { _csrf: csrf, name: "mallory", password: "mallory-password" });
    expect(r.status).toBe(403);
    expect((await adminApi("GET", "/admin/users/mallory")).status).toBe(404);
  });

  it("sends a strict CSP and no inline script", async () => {
    const { res, html } = await new Browser().page("/ui/login");
    const csp = res.headers.get("Content-Security-Policy")!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(res.headers.get("X-Frame-Options")).toBe("SAMEORIGIN");
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/\son[a-z]+=/);
  });

  it("serves htmx from the npm package and the UI's own files", async () => {
    const b = new Browser();
    const h = await b.fetch("/ui/static/htmx.min.js");
    expect(h.status).toBe(200);
    expect(h.headers.get("Content-Type")).toMatch(/javascript/);
    expect(await h.text()).toContain("htmx");
    expect((await b.fetch("/ui/static/app.js")).status).toBe(200);
    expect((await b.fetch("/ui/static/nope.js")).status).toBe(404);
  });

  it("open mode works without signing in and shows a banner", async () => {
    const b = new Browser({ AUTH_MODE: "open", REGISTRY_HOSTS: "registry.test" });
    const { res, html } = await b.page("/ui/repos");
    expect(res.status).toBe(200);
    expect(html).toContain('id="open-mode-banner"');
    expect(html).toContain("no authentication");
  });
});

describe("web UI bad input", () => {
  it("answers malformed paths and parameters with 4xx pages, never 5xx", async () => {
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    const paths = [
      "/ui/repos/%ZZ",
      "/ui/repos/UPPER/case",
      "/ui/repos/a/-/manifests/%ZZ",
      "/ui/repos/a/-/manifests/" + "x".repeat(300),
      "/ui/repos/a/-/manifests/sha256:nothex",
      "/ui/repos/nope/-/manifests/latest",
      "/ui/repos/nope",
      "/ui/repos/a/-/unknown",
      "/ui/repos/a/-/delete",
      "/ui/repos?last=%00&q=" + "q".repeat(1000),
      "/ui/policies/edit?id=%ZZ",
      "/ui/policies?subject=nobody&action=fly",
      "/ui/audit?outcome=maybe&cursor=garbage",
      "/ui/audit?since=x",
      "/ui/static/../index.ts",
      "/ui/nope",
    ];
    for (const p of paths) {
      const r = await b.fetch(p);
      expect(r.status, p).toBeLessThan(500);
      await r.arrayBuffer();
    }
    const { html } = await b.page("/ui/policies");
    const csrf = Browser.csrfOf(html);
    const posts: [string, Record<string, string>][] = [
      ["/ui/policies", { rule: "{not json" }],
      ["/ui/policies", { rule: "[]" }],
      ["/ui/policies/edit", { id: "missing", rule: "{}" }],
      ["/ui/policies/delete", { id: "builtin:admin" }],
      ["/ui/users", { name: "Bad Name", password: "x" }],
      ["/ui/users/password", { name: "admin", password: "short" }],
      ["/ui/robots", { owner: "nobody", name: "x", expiresDays: "-5", repositories: "%%%" }],
      ["/ui/robots/delete", { account: "garbage" }],
      ["/ui/gc", { dryRun: "on", reconcile: "yes" }],
      ["/ui/repos/a/-/delete", { ref: "../../etc" }],
    ];
    for (const [p, f] of posts) {
      const r = await b.post(p, { _csrf: csrf, ...f });
      expect(r.status, `${p} ${JSON.stringify(f)}`).toBeLessThan(500);
      await r.arrayBuffer();
    }
    // A refused change comes back as an error message on the form's page.
    const r = await b.post("/ui/users", { _csrf: csrf, name: "Bad Name", password: "x" });
    expect(r.status).toBe(303);
    expect(r.headers.get("Location")).toBe("/ui/users");
    const shown = await b.page("/ui/users");
    expect(shown.html).toMatch(/class="flash error"[^>]*>invalid body: name/);
    // Shown once; and a URL cannot carry a message into the page.
    expect((await b.page("/ui/users?error=Your+session+expired")).html).not.toMatch(/flash|session expired/);
  });
});

describe("web UI browsing and permissions", () => {
  // Images pushed through the registry (this pool's default env is open mode), viewed in token mode.
  async function push(repo: string, tags: string[]) {
    const img = await makeImage(repo, { seed: repo.length });
    for (const t of tags) expect((await putManifest(repo, t, img.manifest)).status).toBe(201);
    return img;
  }
  const rowsOf = (html: string, attr: string) => [...html.matchAll(new RegExp(`data-${attr}="([^"]+)"`, "g"))].map((m) => m[1]);
  const reposOf = (html: string) => [...html.matchAll(/<td><a href="\/ui\/repos\/([^"]+)">/g)].map((m) => m[1]);
  const nextOf = (html: string) => /<a href="([^"]+)" rel="next">/.exec(html)?.[1].replace(/&amp;/g, "&") ?? null;

  it("pages through tags and through a repository search", async () => {
    const img = await push("pg/a", ["t01", "t02", "t03", "t04", "t05"]);
    await push("pg/b", ["1"]);
    await push("pg/c", ["1"]);
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    const first = await b.page("/ui/repos/pg/a?n=2");
    expect(rowsOf(first.html, "tag")).toEqual(["t01", "t02"]);
    expect(first.html).toContain(img.digest.slice(0, 19));
    const second = await b.page(nextOf(first.html)!);
    expect(rowsOf(second.html, "tag")).toEqual(["t03", "t04"]);
    const third = await b.page(nextOf(second.html)!);
    expect(rowsOf(third.html, "tag")).toEqual(["t05"]);
    expect(nextOf(third.html)).toBeNull();

    const r1 = await b.page("/ui/repos?q=pg%2F&n=2");
    expect(reposOf(r1.html)).toEqual(["pg/a", "pg/b"]);
    const r2 = await b.page(nextOf(r1.html)!);
    expect(reposOf(r2.html)).toEqual(["pg/c"]);
    // htmx asks for the results only
    const frag = await b.fetch("/ui/repos?q=pg%2Fc", { headers: { "HX-Request": "true" } });
    const html = await frag.text();
    expect(html.startsWith('<div id="repo-results">')).toBe(true);
    expect(reposOf(html)).toEqual(["pg/c"]);
  });

  it("the dashboard shows storage, pushes and a quota at 80 % or more", async () => {
    expect((await adminApi("PUT", "/admin/quotas", { pattern: "pg/**", limitBytes: 100 })).status).toBe(200);
    expect((await adminApi("PUT", "/admin/quotas", { pattern: "nothing/**", limitBytes: 1_000_000 })).status).toBe(200);
    const b = new Browser();
    await b.signIn("admin", ADMIN_PW);
    const { html } = await b.page("/ui");
    const warnings = /<ul id="quota-warnings">([\s\S]*?)<\/ul>/.exec(html)?.[1] ?? "";
    expect(warnings).toContain("pg/**");
    expect(warnings).not.toContain("nothing/**");
    expect(/id="dedupe">([^<]+)</.exec(html)?.[1]).toMatch(/^\d+\.\d\d×$/);
    expect(/<table id="recent-pushes">[\s\S]*?<\/table>/.exec(html)?.[0]).toContain("pg/c");
    expect(await adminApi("DELETE", "/admin/quotas?pattern=pg/**").then((r) => r.status)).toBe(204);
  });

  it("a user sees and deletes only what policy allows", async () => {
    await push("gina/app", ["v1", "v2"]);
    await push("team/secret", ["v1"]);
    expect((await adminApi("POST", "/admin/users", { name: "gina", password: "gina-password-1" })).status).toBe(201);
    const b = new Browser();
    await b.signIn("gina", "gina-password-1");
    const list = await b.page("/ui/repos");
    expect(reposOf(list.html)).toContain("gina/app");
    expect(reposOf(list.html)).not.toContain("team/secret");
    expect(reposOf(list.html)).not.toContain("pg/a");
    for (const p of ["/ui/repos/team/secret", "/ui/repos/team/secret/-/manifests/v1"]) {
      const r = await b.page(p);
      expect(r.res.status, p).toBe(404);
      expect(r.html).toContain("does not exist or you may not pull it");
    }
    const own = await b.page("/ui/repos/gina/app");
    expect(rowsOf(own.html, "tag")).toEqual(["v1", "v2"]);
    expect(own.html).toContain("Delete…");
    const csrf = Browser.csrfOf(own.html);
    const refused = await b.post("/ui/repos/team/secret/-/delete", { _csrf: csrf, ref: "v1" });
    expect(refused.status).toBe(403);
    expect((await adminApi("GET", "/v2/team/secret/manifests/v1")).status).toBe(200);
    const ok = await b.post("/ui/repos/gina/app/-/delete", { _csrf: csrf, ref: "v1" });
    expect(ok.status).toBe(303);
    expect((await adminApi("GET", "/v2/gina/app/manifests/v1")).status).toBe(404);
    expect((await adminApi("GET", "/v2/gina/app/manifests/v2")).status).toBe(200);
    const after = await b.page("/ui/repos/gina/app");
    expect(after.html).toContain("Deleted v1.");
    // The deletion is audited under gina's own principal, not the UI's (forwarded from the
    // repository's outbox, ADR 0021).
    await auditForwarded("gina/app");
    const audit = await adminApi("GET", "/admin/audit?action=tag.delete&repository=gina/app");
    const ev = ((await audit.json()) as { events: { actor: { principal: string } }[] }).events;
    expect(ev.map((e) => e.actor.principal)).toEqual(["user:gina"]);
  });
});

describe("web UI policy page: signature rules", () => {
  it("renders signature-repository and signature-gate rules by kind, target and requirement, and explains them", async () => {
    const id = `ui${crypto.randomUUID().slice(0, 8)}`;
    expect((await adminApi("POST", "/admin/policies", { id: `${id}-link`, kind: "signature-repository", repositories: `${id}/*`, target: `${id}-sigs/{1}` })).status).toBe(201);
    expect((await adminApi("POST", "/admin/policies", { id: `${id}-gate`, kind: "signature-gate", repositories: `${id}/*`, keys: ["alice", "bob"], minimum: 2 })).status).toBe(201);
    const b = new Browser();
    expect((await b.signIn("admin", ADMIN_PW)).status).toBe(303);
    const { html } = await b.page("/ui/policies");
    const row = (rule: string) => new RegExp(`<tr data-rule="${rule}">([\\s\\S]*?)</tr>`).exec(html)?.[1] ?? "";
    const cells = (rule: string) => [...row(rule).matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((m) => m[1]);
    expect(cells(`${id}-link`).slice(0, 5)).toEqual([`${id}-link`, "signature repository", "", `signatures in ${id}-sigs/{1}`, `${id}/*`]);
    expect(cells(`${id}-gate`).slice(0, 5)).toEqual([`${id}-gate`, "signature gate", "", "2 of {alice, bob} must sign", `${id}/*`]);
    const explained = await b.page(`/ui/policies?subject=user:admin&action=pull&repository=${id}/app`);
    expect(explained.html).toContain(`<span id="explain-gates">${id}-gate: 2 of {alice, bob} must sign</span>`);
    expect(explained.html).toContain(`<span id="explain-links">${id}-sigs/app</span>`);
  });
});
