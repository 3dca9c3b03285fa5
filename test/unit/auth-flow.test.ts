// The auth module end to end inside workerd with the real AccountStore: token service, the /v2
// gate, Basic on /v2, refresh, throttling, robots, admin API, immutable tags, open mode.
// A small Hono app mounts the module the way src/app.ts does; /v2 handlers are stubs.
import { env } from "cloudflare:workers";
import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { Hono } from "hono";
import { decode } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { adminRoutes, assertManifestDeletable, assertTagMutable, authMiddleware, mayPull, principalOf, tokenRoutes } from "../../src/auth";
import { OciError, oci } from "../../src/oci/errors";
import type { AccountStore } from "../../src/stores/account-store";

const ADMIN_PW = "admin-password-for-tests";
const TOKEN_VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };
const BASE = "http://registry.test";
const REALM = `${BASE}/token`;

function testApp() {
  const app = new Hono();
  app.onError((err) => (err instanceof OciError ? err.toResponse() : oci("INTERNAL", String(err)).toResponse()));
  app.use("/v2/*", authMiddleware());
  app.route("/token", tokenRoutes);
  app.route("/admin", adminRoutes);
  // Stub OCI surface: reports who got through and answers the integration helpers.
  app.all("/v2/*", async (c) => {
    const from = c.req.query("from");
    const tag = c.req.query("tag");
    if (tag) {
      await assertTagMutable(c, c.req.query("repo")!, tag, c.req.query("current") || null, c.req.query("new") || null);
    }
    const deleting = c.req.query("delete");
    if (deleting) {
      // Lazily supplied tags: the lookup must only happen when a rule covers the repository.
      await assertManifestDeletable(c, c.req.query("repo")!, deleting, async () => {
        if (c.req.query("lookup") === "forbidden") throw new Error("tags looked up although no rule covers the repository");
        return (c.req.query("tags") ?? "").split(",").filter(Boolean);
      });
    }
    return c.json({ principal: principalOf(c), mayPullFrom: from ? await mayPull(c, from) : null });
  });
  app.all("/v2", (c) => c.json({}));
  return app;
}

const app = testApp();

async function call(path: string, init: RequestInit = {}, vars: Record<string, string> = TOKEN_VARS): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(BASE + path, init), { ...(env as Record<string, unknown>), ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const basic = (u: string, p: string) => ({ Authorization: `Basic ${btoa(`${u}:${p}`)}` });
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const asAdmin = basic("admin", ADMIN_PW);
const json = (body: unknown, headers: Record<string, string> = asAdmin): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: JSON.stringify(body),
});

async function errorOf(res: Response) {
  expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
  const j = (await res.json()) as { errors: { code: string; message: string; detail: unknown }[] };
  return j.errors[0];
}

async function createUser(name: string, password = `${name}-password`) {
  const r = await call("/admin/users", json({ name, password }));
  expect(r.status, await r.clone().text()).toBe(201);
  return password;
}

async function getToken(query: string, headers: Record<string, string> = {}, vars: Record<string, string> = TOKEN_VARS) {
  const r = await call(`/token?service=registry.test&${query}`, { headers }, vars);
  expect(r.status, await r.clone().text()).toBe(200);
  return (await r.json()) as { token: string; access_token: string; expires_in: number; issued_at: string; refresh_token?: string };
}

const access = (token: string) => (decode(token).payload as { access: { type: string; name: string; actions: string[] }[] }).access;

function store() {
  const ns = (env as unknown as { ACCOUNT_STORE: DurableObjectNamespace<AccountStore> }).ACCOUNT_STORE;
  return ns.get(ns.idFromName("accounts"));
}

describe("the /v2 gate in token mode", () => {
  it("GET /v2/ without credentials answers 401 with the realm challenge and no scope", async () => {
    const r = await call("/v2/");
    expect(r.status).toBe(401);
    expect(r.headers.get("WWW-Authenticate")).toBe(`Bearer realm="${REALM}",service="registry.test"`);
    expect((await errorOf(r)).code).toBe("UNAUTHORIZED");
  });

  it("names exactly the scope each request needs", async () => {
    const cases: [string, string, string][] = [
      ["GET", "/v2/alice/app/manifests/latest", "repository:alice/app:pull"],
      ["HEAD", "/v2/alice/app/blobs/sha256:" + "a".repeat(64), "repository:alice/app:pull"],
      ["GET", "/v2/alice/app/tags/list", "repository:alice/app:pull"],
      ["GET", "/v2/alice/app/referrers/sha256:" + "a".repeat(64), "repository:alice/app:pull"],
      ["POST", "/v2/alice/app/blobs/uploads/", "repository:alice/app:pull,push"],
      ["POST", "/v2/alice/app/blobs/uploads/?mount=sha256:" + "a".repeat(64) + "&from=bob/base", "repository:alice/app:pull,push"],
      ["PATCH", "/v2/alice/app/blobs/uploads/abc", "repository:alice/app:pull,push"],
      ["PUT", "/v2/alice/app/manifests/v1", "repository:alice/app:pull,push"],
      ["DELETE", "/v2/alice/app/manifests/sha256:" + "a".repeat(64), "repository:alice/app:delete"],
      ["DELETE", "/v2/alice/app/blobs/sha256:" + "a".repeat(64), "repository:alice/app:delete"],
      ["GET", "/v2/_catalog", "registry:catalog:*"],
    ];
    for (const [method, path, scope] of cases) {
      const r = await call(path, { method });
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(r.headers.get("WWW-Authenticate")).toBe(`Bearer realm="${REALM}",service="registry.test",scope="${scope}"`);
      if (method !== "HEAD") {
        const e = await errorOf(r);
        expect(e.code).toBe("UNAUTHORIZED");
        expect(e.detail).toEqual(scope.split(":")[2].split(",").map((a) => ({ Type: scope.split(":")[0], Class: "", Name: scope.split(":")[1], Action: a })));
      }
    }
  });

  it("honours AUTH_REALM and AUTH_SERVICE", async () => {
    const r = await call("/v2/", {}, { ...TOKEN_VARS, AUTH_REALM: "https://auth.example/token", AUTH_SERVICE: "reg.example" });
    expect(r.headers.get("WWW-Authenticate")).toBe('Bearer realm="https://auth.example/token",service="reg.example"');
  });

  it("a malformed TOKEN_SIGNING_KEYS fails closed with a message that names the variable, not the secret", async () => {
    const r = await call("/v2/x/y/tags/list", {}, { ...TOKEN_VARS, TOKEN_SIGNING_KEYS: '[{"kid":"a","secret":"too-short-secret"}]' });
    expect(r.status).toBe(503);
    const e = await errorOf(r);
    expect(e.message).toMatch(/TOKEN_SIGNING_KEYS/);
    expect(e.message).not.toContain("too-short-secret");
  });

  it("refuses unknown Authorization schemes", async () => {
    const r = await call("/v2/", { headers: { Authorization: "Digest x" } });
    expect(r.status).toBe(401);
  });
});

describe("token service", () => {
  it("issues narrowed tokens to users and they open exactly the granted scope", async () => {
    const pw = await createUser("alice");
    const t = await getToken("scope=repository:alice/app:pull,push&scope=repository:bob/app:pull,push&scope=registry:catalog:*", basic("alice", pw));
    expect(t.token).toBe(t.access_token);
    expect(t.expires_in).toBe(300);
    expect(Date.parse(t.issued_at)).toBeGreaterThan(Date.now() - 60_000);
    expect(t.refresh_token).toBeUndefined();
    expect(access(t.token)).toEqual([
      { type: "repository", name: "alice/app", actions: ["pull", "push"] },
      { type: "repository", name: "bob/app", actions: [] },
      { type: "registry", name: "catalog", actions: ["*"] },
    ]);
    expect(decode(t.token).payload).toMatchObject({ sub: "user:alice", aud: "registry.test", iss: "cloister" });

    const ok = await call("/v2/alice/app/blobs/uploads/", { method: "POST", headers: bearer(t.token) });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { principal: unknown }).principal).toEqual({ kind: "user", name: "alice", id: "user:alice" });

    const other = await call("/v2/bob/app/manifests/latest", { headers: bearer(t.token) });
    expect(other.status).toBe(401);
    expect(other.headers.get("WWW-Authenticate")).toBe(`Bearer realm="${REALM}",service="registry.test",scope="repository:bob/app:pull",error="insufficient_scope"`);
    expect((await errorOf(other)).code).toBe("UNAUTHORIZED");

    const del = await call("/v2/alice/app/manifests/v1", { method: "DELETE", headers: bearer(t.token) });
    expect(del.status).toBe(401); // delete was not requested, so not granted
    expect(del.headers.get("WWW-Authenticate")).toContain('scope="repository:alice/app:delete",error="insufficient_scope"');

    expect((await call("/v2/_catalog", { headers: bearer(t.token) })).status).toBe(200);
    expect((await call("/v2/", { headers: bearer(t.token) })).status).toBe(200);
  });

  it("answers a login probe (no scope) with a token", async () => {
    const pw = await createUser("probe");
    const t = await getToken("account=probe&client_id=docker&offline_token=true", basic("probe", pw));
    expect(access(t.token)).toEqual([]);
    expect(typeof t.refresh_token).toBe("string");
  });

  it("anonymous tokens carry only what anonymous may do", async () => {
    const t = await getToken("scope=repository:alice/app:pull&offline_token=true");
    expect(access(t.token)).toEqual([{ type: "repository", name: "alice/app", actions: [] }]);
    expect(decode(t.token).payload.sub).toBe("anonymous");
    expect(t.refresh_token).toBeUndefined(); // only for authenticated requests
  });

  it("401 with OCI error JSON on bad credentials, unknown users and admin without ADMIN_PASSWORD", async () => {
    await createUser("carol");
    for (const h of [basic("carol", "wrong-password"), basic("nobody-here", "whatever1"), basic("admin", "not-the-admin-pw")]) {
      const r = await call("/token?service=registry.test&scope=repository:carol/x:pull", { headers: h });
      expect(r.status).toBe(401);
      const e = await errorOf(r);
      expect(e.code).toBe("UNAUTHORIZED");
      expect(e.message).toBe("invalid username or password");
    }
    const r = await call("/token?service=registry.test", { headers: basic("admin", "anything") }, { AUTH_MODE: "token" });
    expect(r.status).toBe(401);
    expect((await errorOf(r)).message).toMatch(/ADMIN_PASSWORD secret is not set/);
    await call("/admin/locks/admin", { method: "DELETE", headers: asAdmin });
  });

  it("refuses a token request for another service", async () => {
    const r = await call("/token?service=elsewhere.test");
    expect(r.status).toBe(400);
    expect((await errorOf(r)).message).toMatch(/registry\.test/);
  });

  it("a token for another audience, an expired or a tampered one is refused on /v2", async () => {
    const pw = await createUser("dave");
    const other = await getToken("scope=repository:dave/x:pull", basic("dave", pw), { ...TOKEN_VARS, AUTH_SERVICE: "other.test" }).catch(() => null);
    expect(other).toBeNull(); // service=registry.test does not match other.test
    const r1 = await call("/token?service=other.test&scope=repository:dave/x:pull", { headers: basic("dave", pw) }, { ...TOKEN_VARS, AUTH_SERVICE: "other.test" });
    const tOther = ((await r1.json()) as { token: string }).token;
    const res = await call("/v2/dave/x/tags/list", { headers: bearer(tOther) });
    expect(res.status).toBe(401);
    expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
    expect((await errorOf(res)).message).toMatch(/wrong-audience/);

    const good = await getToken("scope=repository:dave/x:pull", basic("dave", pw));
    const [h, p, s] = good.token.split(".");
    const tampered = `${h}.${p}.${s.slice(0, 10)}${s[10] === "A" ? "B" : "A"}${s.slice(11)}`;
    const rt = await call("/v2/dave/x/tags/list", { headers: bearer(tampered) });
    expect(rt.status).toBe(401);
    expect(rt.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');

    const short = await getToken("scope=repository:dave/x:pull", basic("dave", pw), { ...TOKEN_VARS, TOKEN_TTL_SECONDS: "30" });
    expect(short.expires_in).toBe(30);
    expect((decode(short.token).payload.exp as number) - (decode(short.token).payload.iat as number)).toBe(30);
  });

  it("kid rotation with TOKEN_SIGNING_KEYS: old tokens verify until their key is removed", async () => {
    const pw = await createUser("erin");
    const k1 = { kid: "2025-a", secret: "s".repeat(40) };
    const k2 = { kid: "2025-b", secret: "t".repeat(40) };
    const v1 = { ...TOKEN_VARS, TOKEN_SIGNING_KEYS: JSON.stringify([k1]) };
    const v2 = { ...TOKEN_VARS, TOKEN_SIGNING_KEYS: JSON.stringify([k2, k1]) };
    const v3 = { ...TOKEN_VARS, TOKEN_SIGNING_KEYS: JSON.stringify([k2]) };
    const old = await getToken("scope=repository:erin/x:pull", basic("erin", pw), v1);
    expect(decode(old.token).header.kid).toBe("2025-a");
    const fresh = await getToken("scope=repository:erin/x:pull", basic("erin", pw), v2);
    expect(decode(fresh.token).header.kid).toBe("2025-b");
    expect((await call("/v2/erin/x/tags/list", { headers: bearer(old.token) }, v2)).status).toBe(200);
    expect((await call("/v2/erin/x/tags/list", { headers: bearer(fresh.token) }, v2)).status).toBe(200);
    const gone = await call("/v2/erin/x/tags/list", { headers: bearer(old.token) }, v3);
    expect(gone.status).toBe(401);
    expect((await errorOf(gone)).message).toMatch(/unknown-kid/);
    // Stored-key mode does not accept env-signed tokens either.
    expect((await call("/v2/erin/x/tags/list", { headers: bearer(fresh.token) })).status).toBe(401);
  });

  it("kid rotation with stored keys via the admin API", async () => {
    const pw = await createUser("frank");
    const before = await getToken("scope=repository:frank/x:pull", basic("frank", pw));
    const r = await call("/admin/keys/rotate", { method: "POST", headers: asAdmin });
    expect(r.status).toBe(201);
    const { kid } = (await r.json()) as { kid: string };
    const after = await getToken("scope=repository:frank/x:pull", basic("frank", pw));
    expect(decode(after.token).header.kid).toBe(kid);
    expect(decode(before.token).header.kid).not.toBe(kid);
    expect((await call("/v2/frank/x/tags/list", { headers: bearer(before.token) })).status).toBe(200);
    const oldKid = decode(before.token).header.kid!;
    expect((await call(`/admin/keys/${oldKid}`, { method: "DELETE", headers: asAdmin })).status).toBe(204);
    expect((await call("/v2/frank/x/tags/list", { headers: bearer(before.token) })).status).toBe(401);
    expect((await call("/v2/frank/x/tags/list", { headers: bearer(after.token) })).status).toBe(200);
    expect((await call(`/admin/keys/${kid}`, { method: "DELETE", headers: asAdmin })).status).toBe(409); // last key
    const keys = (await (await call("/admin/keys", { headers: asAdmin })).json()) as { source: string; keys: { kid: string; signing: boolean }[] };
    expect(keys).toMatchObject({ source: "store", keys: [{ kid, signing: true }] });
    expect(JSON.stringify(keys)).not.toMatch(/secret/);
  });

  it("OAuth2 POST: password grant with offline access, then refresh_token grant", async () => {
    const pw = await createUser("gina");
    const form = (o: Record<string, string>) => ({
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(o).toString(),
    });
    const r1 = await call("/token", form({ grant_type: "password", username: "gina", password: pw, service: "registry.test", scope: "repository:gina/app:pull,push repository:x/y:pull", client_id: "containerd", access_type: "offline" }));
    expect(r1.status).toBe(200);
    const t1 = (await r1.json()) as { access_token: string; refresh_token: string; scope: string; expires_in: number };
    expect(t1.scope).toBe("repository:gina/app:pull,push");
    expect(access(t1.access_token)).toEqual([
      { type: "repository", name: "gina/app", actions: ["pull", "push"] },
      { type: "repository", name: "x/y", actions: [] },
    ]);
    expect(t1.refresh_token).toBeTruthy();
    // A refresh token is not an access token.
    expect((await call("/v2/gina/app/tags/list", { headers: bearer(t1.refresh_token) })).status).toBe(401);

    const r2 = await call("/token", form({ grant_type: "refresh_token", refresh_token: t1.refresh_token, service: "registry.test", scope: "repository:gina/other:pull", client_id: "docker" }));
    expect(r2.status).toBe(200);
    const t2 = (await r2.json()) as { access_token: string; refresh_token: string };
    expect(access(t2.access_token)).toEqual([{ type: "repository", name: "gina/other", actions: ["pull"] }]);
    expect(decode(t2.access_token).payload.sub).toBe("user:gina");

    // Without access_type=offline there is no refresh token.
    const r3 = await call("/token", form({ grant_type: "password", username: "gina", password: pw, service: "registry.test" }));
    expect(((await r3.json()) as { refresh_token?: string }).refresh_token).toBeUndefined();

    // A password change retires earlier refresh tokens.
    const ch = await call("/admin/users/gina/password", { method: "PUT", headers: { "Content-Type": "application/json", ...asAdmin }, body: JSON.stringify({ password: "a-new-password" }) });
    expect(ch.status).toBe(204);
    const r4 = await call("/token", form({ grant_type: "refresh_token", refresh_token: t1.refresh_token, service: "registry.test" }));
    expect(r4.status).toBe(401);
    expect((await errorOf(r4)).message).toMatch(/revoked/);

    // Bad grants and bodies are 4xx with OCI JSON.
    const bad = await call("/token", form({ grant_type: "client_credentials" }));
    expect(bad.status).toBe(400);
    expect((await call("/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })).status).toBe(400);
    const wrong = await call("/token", form({ grant_type: "password", username: "gina", password: pw, service: "registry.test" }));
    expect(wrong.status).toBe(401);
    const garbage = await call("/token", form({ grant_type: "refresh_token", refresh_token: "x.y.z", service: "registry.test" }));
    expect(garbage.status).toBe(401);
  });
});

describe("Basic credentials directly on /v2", () => {
  it("are checked against policy per request", async () => {
    const pw = await createUser("hank");
    expect((await call("/v2/hank/app/blobs/uploads/", { method: "POST", headers: basic("hank", pw) })).status).toBe(200);
    const no = await call("/v2/ivy/app/blobs/uploads/", { method: "POST", headers: basic("hank", pw) });
    expect(no.status).toBe(401);
    expect(no.headers.get("WWW-Authenticate")).toContain('error="insufficient_scope"');
    const bad = await call("/v2/hank/app/tags/list", { headers: basic("hank", "wrong-password") });
    expect(bad.status).toBe(401);
    expect(bad.headers.get("WWW-Authenticate")).toContain('scope="repository:hank/app:pull"');
    expect((await call("/v2/", { headers: basic("hank", pw) })).status).toBe(200);
    expect((await call("/v2/anything/at/all/manifests/x", { method: "DELETE", headers: asAdmin })).status).toBe(200);
  });
});

describe("throttling", () => {
  it("locks an address out of an account after 5 failures in 5 minutes, with Retry-After, for every entry point", async () => {
    const pw = await createUser("jack");
    for (let i = 0; i < 5; i++) {
      expect((await call("/token?service=registry.test", { headers: basic("jack", `wrong-${i}`) })).status).toBe(401);
    }
    // Locked now, even with the right password and on /v2 and /admin.
    for (const [path, init] of [
      ["/token?service=registry.test", { headers: basic("jack", pw) }],
      ["/v2/jack/app/tags/list", { headers: basic("jack", pw) }],
      ["/admin/users", { headers: basic("jack", pw) }],
    ] as [string, RequestInit][]) {
      const r = await call(path, init);
      expect(r.status, path).toBe(429);
      expect(Number(r.headers.get("Retry-After"))).toBeGreaterThan(0);
      expect(Number(r.headers.get("Retry-After"))).toBeLessThanOrEqual(30);
      expect((await errorOf(r)).code).toBe("TOOMANYREQUESTS");
    }
    // Other accounts are unaffected.
    const pw2 = await createUser("kate");
    expect((await call("/token?service=registry.test", { headers: basic("kate", pw2) })).status).toBe(200);
    // The admin can lift the lock.
    const state = (await (await call("/admin/locks/jack", { headers: asAdmin })).json()) as { addresses: { address: string; lockouts: number }[] };
    expect(state.addresses).toMatchObject([{ address: "unknown", lockouts: 1 }]);
    expect((await call("/admin/locks/jack", { method: "DELETE", headers: asAdmin })).status).toBe(204);
    expect((await call("/token?service=registry.test", { headers: basic("jack", pw) })).status).toBe(200);
  });

  it("backs off exponentially and a success resets the count", async () => {
    const s = store();
    const acct = "backoff-user";
    const ip = "unknown";
    let n = 0;
    const fail = async () => {
      const g = `g${n++}`;
      const b = await s.loginBegin(acct, ip, g);
      expect(b.status).toBe("ok");
      return (await s.loginEnd(acct, ip, g, false)).lockedFor;
    };
    const fails = async (k: number) => {
      let last = 0;
      for (let i = 0; i < k; i++) last = await fail();
      return last;
    };
    expect(await fails(4)).toBe(0);
    await s.loginBegin(acct, ip, "right");
    await s.loginEnd(acct, ip, "right", true); // success clears
    expect(await fails(4)).toBe(0);
    expect(await fail()).toBe(30);
    expect((await s.loginBegin(acct, ip, "x")).status).toBe("locked");
    const expire = () =>
      runInDurableObject(s, (_o: AccountStore, state: DurableObjectState) => {
        state.storage.sql.exec("UPDATE login_throttle SET locked_until = ? WHERE account = ?", Math.floor(Date.now() / 1000) - 1, acct);
      });
    await expire();
    expect(await fails(5)).toBe(60);
    await expire();
    expect(await fails(5)).toBe(120);
  });

  it("caps distinct guesses in flight per account and address; the same credential in parallel is one guess", async () => {
    const s = store();
    const acct = "parallel-user";
    for (let i = 0; i < 5; i++) expect((await s.loginBegin(acct, "a1", `g${i}`)).status).toBe("ok");
    expect(await s.loginBegin(acct, "a1", "g5")).toEqual({ status: "busy", retryAfter: 1 });
    expect((await s.loginBegin(acct, "a1", "g0")).status).toBe("ok"); // same guess again
    expect((await s.loginBegin(acct, "a2", "g5")).status).toBe("ok"); // another address
    await s.loginEnd(acct, "a1", "g1", true);
    expect((await s.loginBegin(acct, "a1", "g6")).status).toBe("ok");
  });
});

describe("robots", () => {
  it("are created with a secret shown once, sign in, hold only their rules, expire and are revoked", async () => {
    await createUser("lena");
    const r = await call("/admin/robots", json({ owner: "lena", name: "ci", description: "CI pusher", access: [{ repositories: "lena/**", actions: ["pull", "push"] }] }));
    expect(r.status, await r.clone().text()).toBe(201);
    const robot = (await r.json()) as { account: string; secret: string; rules: string[]; expiresAt: number | null };
    expect(robot.account).toBe("robot$lena+ci");
    expect(robot.secret).toMatch(/^cloister_[A-Za-z0-9_-]{43}$/);
    expect(robot.rules).toEqual(["robot:lena+ci:0"]);
    // The secret is never listed again.
    const list = await (await call("/admin/robots", { headers: asAdmin })).text();
    expect(list).toContain("robot$lena+ci");
    expect(list).not.toContain(robot.secret);
    expect(list).not.toMatch(/secret/i);

    const t = await getToken("scope=repository:lena/app:pull,push,delete&scope=repository:other/app:pull&offline_token=true", basic(robot.account, robot.secret));
    expect(access(t.token)).toEqual([
      { type: "repository", name: "lena/app", actions: ["pull", "push"] },
      { type: "repository", name: "other/app", actions: [] },
    ]);
    expect(decode(t.token).payload.sub).toBe("robot:lena+ci");
    expect((await call("/v2/lena/app/manifests/v1", { method: "PUT", headers: bearer(t.token) })).status).toBe(200);
    expect((await call("/v2/lena/app/tags/list", { headers: basic(robot.account, robot.secret) })).status).toBe(200);
    expect((await call("/v2/lena/app/tags/list", { headers: basic(robot.account, robot.secret + "x") })).status).toBe(401);

    // Expiry: the same secret stops working (and refresh tokens with it).
    await runInDurableObject(store(), (_o: AccountStore, state: DurableObjectState) => {
      state.storage.sql.exec("UPDATE robots SET expires_at = ? WHERE name = ?", Math.floor(Date.now() / 1000) - 1, "lena+ci");
    });
    const expired = await call("/token?service=registry.test", { headers: basic(robot.account, robot.secret) });
    expect(expired.status).toBe(401);
    expect((await errorOf(expired)).message).toMatch(/expired/);
    const refresh = await call("/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: t.refresh_token!, service: "registry.test" }).toString(),
    });
    expect(refresh.status).toBe(401);

    // Revocation deletes the robot and its rules.
    expect((await call(`/admin/robots/${encodeURIComponent(robot.account)}`, { method: "DELETE", headers: asAdmin })).status).toBe(200);
    expect((await call("/admin/policies/robot:lena+ci:0", { headers: asAdmin })).status).toBe(404);
    expect((await call("/token?service=registry.test", { headers: basic(robot.account, robot.secret) })).status).toBe(401);
    expect((await call(`/admin/robots/${encodeURIComponent(robot.account)}`, { method: "DELETE", headers: asAdmin })).status).toBe(404);
  });

  it("deleting the owner revokes its robots", async () => {
    await createUser("mike");
    const r = (await (await call("/admin/robots", json({ owner: "mike", name: "bot", expiresInSeconds: 3600 }))).json()) as { secret: string; expiresAt: number };
    expect(r.expiresAt).toBeGreaterThan(Date.now() / 1000 + 3500);
    const del = await call("/admin/users/mike", { method: "DELETE", headers: asAdmin });
    expect(await del.json()).toEqual({ deleted: true, revokedRobots: ["robot$mike+bot"] });
    expect((await call("/token?service=registry.test", { headers: basic("robot$mike+bot", r.secret) })).status).toBe(401);
  });

  it("validates robot input", async () => {
    await createUser("nora");
    const cases: [unknown, number][] = [
      [{ owner: "ghost", name: "x" }, 400],
      [{ owner: "nora", name: "Bad Name" }, 400],
      [{ owner: "nora", name: "x", expiresInSeconds: 5 }, 400],
      [{ owner: "nora", name: "x", expiresAt: 1000 }, 400],
      [{ owner: "nora", name: "x", access: [{ repositories: "NOPE", actions: ["pull"] }] }, 400],
      [{ owner: "nora", name: "x", access: [{ repositories: "a/**", actions: ["admin"] }] }, 400],
      [{ owner: "nora", name: "x", secret: "chosen" }, 400],
    ];
    for (const [b, status] of cases) {
      const r = await call("/admin/robots", json(b));
      expect(r.status, JSON.stringify(b)).toBe(status);
      expect((await errorOf(r)).code).toBe("BAD_REQUEST");
    }
    expect((await call("/admin/robots", json({ owner: "nora", name: "x" }))).status).toBe(201);
    expect((await call("/admin/robots", json({ owner: "nora", name: "x" }))).status).toBe(409);
  });
});

describe("admin API", () => {
  it("needs credentials holding the admin action", async () => {
    const r = await call("/admin/users");
    expect(r.status).toBe(401);
    expect(r.headers.get("WWW-Authenticate")).toContain('scope="registry:admin:*"');
    const pw = await createUser("olga");
    const d = await call("/admin/users", { headers: basic("olga", pw) });
    expect(d.status).toBe(403);
    expect((await errorOf(d)).code).toBe("DENIED");
    // Granting admin by policy works, also through a Bearer token with registry:admin:*.
    expect((await call("/admin/policies", json({ id: "olga-admin", effect: "allow", subjects: ["user:olga"], actions: ["admin"] }))).status).toBe(201);
    expect((await call("/admin/users", { headers: basic("olga", pw) })).status).toBe(200);
    const t = await getToken("scope=registry:admin:*", basic("olga", pw));
    expect(access(t.token)).toEqual([{ type: "registry", name: "admin", actions: ["*"] }]);
    expect((await call("/admin/users", { headers: bearer(t.token) })).status).toBe(200);
    const t2 = await getToken("scope=repository:olga/x:pull", basic("olga", pw));
    expect((await call("/admin/users", { headers: bearer(t2.token) })).status).toBe(403);
    expect((await call("/admin/policies/olga-admin", { method: "DELETE", headers: asAdmin })).status).toBe(204);
    expect((await call("/admin/users", { headers: basic("olga", pw) })).status).toBe(403);
  });

  it("manages users with validation", async () => {
    const list = (await (await call("/admin/users", { headers: asAdmin })).json()) as { users: { name: string }[]; admin: { passwordConfigured: boolean } };
    expect(list.admin.passwordConfigured).toBe(true);
    const cases: [RequestInit, number][] = [
      [json({ name: "UPPER", password: "longenough" }), 400],
      [json({ name: "admin", password: "longenough" }), 400],
      [json({ name: "robot", password: "longenough" }), 400],
      [json({ name: "x/y", password: "longenough" }), 400],
      [json({ name: "okname", password: "short" }), 400],
      [json({ name: "okname" }), 400],
      [json({ name: "okname", password: "longenough", role: "admin" }), 400],
      [json(["not", "an", "object"]), 400],
      [{ method: "POST", headers: { "Content-Type": "application/json", ...asAdmin }, body: "{not json" }, 400],
      [{ method: "POST", headers: { "Content-Type": "text/plain", ...asAdmin }, body: "{}" }, 400],
    ];
    for (const [init, status] of cases) {
      const r = await call("/admin/users", init);
      expect(r.status, String(init.body)).toBe(status);
      expect((await errorOf(r)).code).toBe("BAD_REQUEST");
    }
    await createUser("okname");
    expect((await call("/admin/users", json({ name: "okname", password: "longenough" }))).status).toBe(409);
    expect((await call("/admin/users/okname", { headers: asAdmin })).status).toBe(200);
    expect((await call("/admin/users/nobody", { headers: asAdmin })).status).toBe(404);
    expect((await call("/admin/users/admin", { method: "DELETE", headers: asAdmin })).status).toBe(400);
    expect((await call("/admin/users/okname/password", { method: "PUT", headers: { "Content-Type": "application/json", ...asAdmin }, body: "{}" })).status).toBe(400);
    expect((await call("/admin/users/okname", { method: "DELETE", headers: asAdmin })).status).toBe(200);
    expect((await call("/admin/users/okname", { method: "DELETE", headers: asAdmin })).status).toBe(404);
    expect((await call("/admin/no/such/route", { headers: asAdmin })).status).toBe(404);
    // No route leaks a password hash.
    expect(await (await call("/admin/users", { headers: asAdmin })).text()).not.toMatch(/pbkdf2|hash/);
  });

  it("policies: CRUD with validation, built-ins protected, explain", async () => {
    const put = (id: string, body: unknown) => call(`/admin/policies/${id}`, { method: "PUT", headers: { "Content-Type": "application/json", ...asAdmin }, body: JSON.stringify(body) });
    expect((await call("/admin/policies", json({ id: "p1", effect: "allow", subjects: ["user:pat"], actions: ["pull"], repositories: ["shared/**"] }))).status).toBe(201);
    expect((await call("/admin/policies", json({ id: "p1", effect: "allow", subjects: ["user:pat"], actions: ["pull"] }))).status).toBe(409);
    for (const bad of [
      { id: "p2", effect: "allow", subjects: ["user:pat"], actions: ["steal"] },
      { id: "p2", effect: "allow", subjects: ["group:x"], actions: ["pull"] },
      { id: "p2", effect: "allow", subjects: ["*"], actions: ["catalog"], repositories: ["a/**"] },
      { id: "builtin:mine", effect: "allow", subjects: ["*"], actions: ["pull"] },
      { id: "robot:sneaky", effect: "allow", subjects: ["*"], actions: ["pull"] },
      { id: "p2", kind: "immutable-tags", repositories: "a/**" },
    ]) {
      const r = await call("/admin/policies", json(bad));
      expect(r.status, JSON.stringify(bad)).toBe(400);
      const e = await errorOf(r);
      expect(e.code).toBe("BAD_REQUEST");
    }
    const ex = async (q: string) => (await (await call(`/admin/explain?${q}`, { headers: asAdmin })).json()) as { allowed: boolean; reason: string; deciding: { id: string }[] };
    expect(await ex("subject=user:pat&action=pull&repository=shared/x")).toMatchObject({ allowed: true, deciding: [{ id: "p1" }] });
    expect(await ex("subject=user:pat&action=push&repository=shared/x")).toMatchObject({ allowed: false, reason: "no rule allows it (default deny)" });
    expect((await put("p1", { effect: "deny", subjects: ["user:pat"], actions: ["pull"], repositories: ["shared/**"] })).status).toBe(200);
    expect((await put("p1", { id: "other", effect: "deny", subjects: ["user:pat"], actions: ["pull"] })).status).toBe(400);
    expect((await put("nope", { effect: "deny", subjects: ["user:pat"], actions: ["pull"] })).status).toBe(404);
    expect((await put("builtin:admin", { effect: "deny", subjects: ["*"], actions: ["pull"] })).status).toBe(400);
    expect(await ex("subject=user:pat&action=pull&repository=shared/x")).toMatchObject({ allowed: false, reason: "denied by p1" });
    expect(await ex("subject=user:admin&action=admin")).toMatchObject({ allowed: true });
    expect(await ex("subject=anonymous&action=catalog")).toMatchObject({ allowed: false });
    for (const q of ["subject=who&action=pull&repository=a/b", "subject=user:pat&action=fly&repository=a/b", "subject=user:pat&action=pull", "subject=user:pat&action=pull&repository=BAD"]) {
      const r = await call(`/admin/explain?${q}`, { headers: asAdmin });
      expect(r.status, q).toBe(400);
    }
    expect((await call("/admin/policies/builtin:admin", { method: "DELETE", headers: asAdmin })).status).toBe(400);
    expect((await call("/admin/policies/builtin:admin", { headers: asAdmin })).status).toBe(200);
    const all = (await (await call("/admin/policies", { headers: asAdmin })).json()) as { builtin: unknown[]; rules: { id: string }[] };
    expect(all.builtin.length).toBe(3);
    expect(all.rules.map((r) => r.id)).toContain("p1");
    expect((await call("/admin/policies/p1", { method: "DELETE", headers: asAdmin })).status).toBe(204);
    expect((await call("/admin/policies/p1", { method: "DELETE", headers: asAdmin })).status).toBe(404);
  });
});

describe("public repositories, mayPull and immutable tags", () => {
  it("a policy makes a repository pullable anonymously, without a token round-trip", async () => {
    expect((await call("/v2/pub/app/manifests/latest")).status).toBe(401);
    expect((await call("/admin/policies", json({ id: "public-pub", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["pub/**"] }))).status).toBe(201);
    const r = await call("/v2/pub/app/manifests/latest");
    expect(r.status).toBe(200);
    expect(((await r.json()) as { principal: unknown }).principal).toEqual({ kind: "anonymous", name: "anonymous", id: "anonymous" });
    expect((await call("/v2/pub/app/blobs/uploads/", { method: "POST" })).status).toBe(401);
    expect((await call("/v2/", {})).status).toBe(401); // the base endpoint still challenges
    const t = await getToken("scope=repository:pub/app:pull,push");
    expect(access(t.token)).toEqual([{ type: "repository", name: "pub/app", actions: ["pull"] }]);
  });

  it("mayPull answers for the mount source by policy or token", async () => {
    const pw = await createUser("quinn");
    const t = await getToken("scope=repository:quinn/app:pull,push", basic("quinn", pw));
    const q = (from: string) => call(`/v2/quinn/app/blobs/uploads/?mount=sha256:${"a".repeat(64)}&from=${from}`, { method: "POST", headers: bearer(t.token) });
    expect(((await (await q("quinn/base")).json()) as { mayPullFrom: boolean }).mayPullFrom).toBe(true);
    expect(((await (await q("pub/app")).json()) as { mayPullFrom: boolean }).mayPullFrom).toBe(true); // public
    expect(((await (await q("rita/secret")).json()) as { mayPullFrom: boolean }).mayPullFrom).toBe(false);
  });

  it("assertTagMutable refuses moving or deleting an immutable tag with 403 DENIED", async () => {
    expect((await call("/admin/policies", json({ id: "releases", kind: "immutable-tags", repositories: ["admin-owned/**"], tags: ["v*"] }))).status).toBe(201);
    const A = "sha256:" + "a".repeat(64);
    const B = "sha256:" + "b".repeat(64);
    const tag = (q: string) => call(`/v2/admin-owned/app/manifests/x?repo=admin-owned/app&${q}`, { method: "PUT", headers: asAdmin });
    const moved = await tag(`tag=v1&current=${A}&new=${B}`);
    expect(moved.status).toBe(403);
    const e = await errorOf(moved);
    expect(e.code).toBe("DENIED");
    expect(e.message).toMatch(/tag "v1" in admin-owned\/app is immutable/);
    expect((await tag(`tag=v1&current=${A}`)).status).toBe(403); // delete by tag
    expect((await tag(`tag=v1&new=${A}`)).status).toBe(200); // new tag
    expect((await tag(`tag=v1&current=${A}&new=${A}`)).status).toBe(200); // same digest
    expect((await tag(`tag=latest&current=${A}&new=${B}`)).status).toBe(200); // not covered
    // Deleting the manifest by digest would drop the tag with it.
    const del = (q: string) => call(`/v2/admin-owned/app/manifests/x?repo=admin-owned/app&delete=${A}&${q}`, { method: "DELETE", headers: asAdmin });
    const refused = await del("tags=latest,v1");
    expect(refused.status).toBe(403);
    expect((await errorOf(refused)).message).toMatch(/tagged "v1" in admin-owned\/app, an immutable tag \(policy rule releases\)/);
    expect((await del("tags=latest,dev")).status).toBe(200);
    expect((await del("tags=")).status).toBe(200);
    // Repositories no rule covers never pay for the tag lookup.
    const other = await call(`/v2/elsewhere/app/manifests/x?repo=elsewhere/app&delete=${A}&lookup=forbidden`, { method: "DELETE", headers: asAdmin });
    expect(other.status).toBe(200);
    const lazy = await call(`/v2/elsewhere/app/manifests/x?repo=elsewhere/app&tag=v1&current=${A}&new=${B}`, { method: "PUT", headers: asAdmin });
    expect(lazy.status).toBe(200);
    // Immutability holds in open mode too.
    const open = await call(`/v2/admin-owned/app/manifests/x?repo=admin-owned/app&tag=v2&current=${A}&new=${B}`, { method: "PUT" }, { AUTH_MODE: "open" });
    expect(open.status).toBe(403);
  });
});

describe("open mode", () => {
  it("lets everything through as the open principal, ignoring credentials", async () => {
    const vars = { AUTH_MODE: "open" };
    const r = await call("/v2/anyone/anything/blobs/uploads/?mount=x&from=private/repo", { method: "POST" }, vars);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ principal: { kind: "open", name: "anonymous", id: "open" }, mayPullFrom: true });
    expect((await call("/v2/", {}, vars)).status).toBe(200);
    expect((await call("/v2/x/y/tags/list", { headers: basic("nobody", "wrong") }, vars)).status).toBe(200);
    // The admin API is open only when no ADMIN_PASSWORD is set.
    expect((await call("/admin/users", {}, vars)).status).toBe(200);
    expect((await call("/admin/users", {}, { AUTH_MODE: "open", ADMIN_PASSWORD: ADMIN_PW })).status).toBe(401);
  });

  it("tokens minted in open mode are refused in token mode", async () => {
    const t = await getToken("scope=repository:x/y:pull,push", {}, { AUTH_MODE: "open" });
    expect(decode(t.token).payload.sub).toBe("open");
    const r = await call("/v2/x/y/tags/list", { headers: bearer(t.token) });
    expect(r.status).toBe(401);
    expect(r.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
  });

  it("anything but AUTH_MODE=open is token mode", async () => {
    for (const mode of ["", "none", "Token", "disabled"]) {
      expect((await call("/v2/x/y/tags/list", {}, { AUTH_MODE: mode, ADMIN_PASSWORD: ADMIN_PW })).status).toBe(401);
    }
  });
});
