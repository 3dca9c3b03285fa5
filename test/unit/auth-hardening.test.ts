// Auth hardening (issue 9 defects 7, 8, 9; issue 16 part 7): sign-in throttling that strangers
// cannot turn against an account, realm and service that the Host header cannot choose, token
// claims validated by schema, one auth check per request, and /_bench behind the admin gate.
// Everything goes through the real Worker app (src/app.ts) and the real AccountStore.
import { env, exports } from "cloudflare:workers";
import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import type { AccountStore } from "../../src/stores/account-store";

const ADMIN_PW = "admin-password-for-hardening";
const TOKEN_VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, REGISTRY_HOSTS: "registry.test" };
const BASE = "http://registry.test";

async function call(path: string, init: RequestInit & { ip?: string; base?: string } = {}, vars: Record<string, string> = TOKEN_VARS): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.ip) headers.set("CF-Connecting-IP", init.ip);
  const ctx = createExecutionContext();
  const res = await buildApp().fetch(new Request((init.base ?? BASE) + path, { ...init, headers }), { ...(env as unknown as Env), ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const basic = (u: string, p: string) => ({ Authorization: `Basic ${btoa(`${u}:${p}`)}` });
const asAdmin = basic("admin", ADMIN_PW);

async function errorOf(res: Response) {
  expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
  const j = (await res.json()) as { errors: { code: string; message: string; detail: unknown }[] };
  return j.errors[0];
}

async function createUser(name: string, password = `${name}-password`) {
  const r = await call("/admin/users", {
    method: "POST",
    ip: "192.0.2.250",
    headers: { "Content-Type": "application/json", ...asAdmin },
    body: JSON.stringify({ name, password }),
  });
  expect(r.status, await r.clone().text()).toBe(201);
  return password;
}

function store() {
  const ns = (env as unknown as { ACCOUNT_STORE: DurableObjectNamespace<AccountStore> }).ACCOUNT_STORE;
  return ns.get(ns.idFromName("accounts"));
}

const token = (ip: string, user: string, pw: string) => call("/token?service=registry.test", { ip, headers: basic(user, pw) });

describe("sign-in throttling strangers cannot turn against an account (issue 9 defect 7)", () => {
  it("five wrong admin passwords from one address refuse that address only; the admin signs in from another", async () => {
    for (let i = 0; i < 5; i++) expect((await token("203.0.113.1", "admin", `wrong-${i}`)).status).toBe(401);
    const locked = await token("203.0.113.1", "admin", ADMIN_PW);
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect((await errorOf(locked)).code).toBe("TOOMANYREQUESTS");
    // The real admin, from anywhere else, is not locked out: /admin, /token and /v2 all work.
    expect((await call("/admin/users", { ip: "198.51.100.7", headers: asAdmin })).status).toBe(200);
    expect((await token("198.51.100.8", "admin", ADMIN_PW)).status).toBe(200);
    expect((await call("/v2/", { ip: "198.51.100.9", headers: asAdmin })).status).toBe(200);
  });

  it("40 parallel wrong guesses from one address: exactly 5 are evaluated, the rest refused with 429", async () => {
    const pw = await createUser("parallel");
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => token("203.0.113.2", "parallel", `guess-${i}`)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length).toBe(5);
    expect(statuses.filter((s) => s === 429).length).toBe(35);
    const st = await store().throttleState("parallel");
    expect(st.addresses).toHaveLength(1);
    // The fifth failure locked the address (the count restarts under the lock).
    expect(st.addresses[0]).toMatchObject({ address: "203.0.113.2", lockouts: 1, inflight: 0 });
    expect(st.addresses[0].lockedUntil).toBeGreaterThan(Date.now() / 1000);
    expect(st.failures).toBe(5);
    // The owner is unaffected elsewhere.
    expect((await token("198.51.100.20", "parallel", pw)).status).toBe(200);
  });

  it("parallel requests with the same right credentials are one guess, not many", async () => {
    const pw = await createUser("samecreds");
    const results = await Promise.all(Array.from({ length: 12 }, () => call("/v2/samecreds/app/tags/list", { ip: "198.51.100.30", headers: basic("samecreds", pw) })));
    // Authenticated and authorized: the router answers (404 for a repository that does not exist).
    for (const r of results) expect(r.status).not.toBe(429);
    expect(results.every((r) => r.status === 404)).toBe(true);
  });

  it("many addresses guessing one account slow it down but never lock the owner out", async () => {
    const pw = await createUser("target");
    // Each address guesses once; past 10 failures on the account every attempt starts to wait.
    for (let i = 0; i < 12; i++) expect((await token(`203.0.113.${100 + i}`, "target", `wrong-${i}`)).status).toBe(401);
    // The account is under attack: every attempt now waits before the password is checked.
    const s = store();
    const probe = await s.loginBegin("target", "192.0.2.77", "probe-guess");
    expect(probe.status).toBe("ok");
    expect(probe.status === "ok" && probe.delayMs).toBeGreaterThan(0);
    await s.loginEnd("target", "192.0.2.77", "probe-guess", true);
    // The owner, from a fresh address, still signs in (after the delay).
    const t0 = Date.now();
    expect((await token("192.0.2.78", "target", pw)).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(probe.status === "ok" ? probe.delayMs : 0);
    // An attacking address that keeps guessing is refused on its own.
    for (let i = 0; i < 4; i++) expect((await token("203.0.113.100", "target", `again-${i}`)).status).toBe(401);
    expect((await token("203.0.113.100", "target", pw)).status).toBe(429);
    expect((await token("192.0.2.79", "target", pw)).status).toBe(200);
  });

  it("per-address locks escalate 30 s, 60 s, … and stop at 15 minutes; a success from that address resets them", async () => {
    const s = store();
    const acct = "escalate-user";
    const ip = "203.0.113.50";
    let n = 0;
    const fails = async (k: number) => {
      let last = 0;
      for (let i = 0; i < k; i++) {
        const b = await s.loginBegin(acct, ip, `g${n++}`);
        expect(b.status).toBe("ok");
        last = (await s.loginEnd(acct, ip, `g${n - 1}`, false)).lockedFor;
      }
      return last;
    };
    const expire = () =>
      runInDurableObject(s, (_o: AccountStore, state: DurableObjectState) => {
        state.storage.sql.exec("UPDATE login_throttle SET locked_until = ? WHERE account = ?", Math.floor(Date.now() / 1000) - 1, acct);
      });
    const locks: number[] = [];
    for (let i = 0; i < 7; i++) {
      locks.push(await fails(5));
      expect((await s.loginBegin(acct, ip, "while-locked")).status).toBe("locked");
      expect((await s.loginBegin(acct, "203.0.113.51", "other-address")).status).toBe("ok");
      await s.loginEnd(acct, "203.0.113.51", "other-address", false);
      await expire();
    }
    expect(locks).toEqual([30, 60, 120, 240, 480, 900, 900]);
    await s.loginBegin(acct, ip, "right");
    await s.loginEnd(acct, ip, "right", true);
    expect(await fails(5)).toBe(30);
  });

  it("the same wrong credential sent in parallel locks once and does not extend the lock", async () => {
    const s = store();
    const acct = "same-wrong";
    const ip = "203.0.113.60";
    for (let i = 0; i < 10; i++) expect((await s.loginBegin(acct, ip, "same")).status).toBe("ok");
    const ends = [];
    for (let i = 0; i < 10; i++) ends.push((await s.loginEnd(acct, ip, "same", false)).lockedFor);
    expect(ends).toEqual([0, 0, 0, 0, 30, 0, 0, 0, 0, 0]);
    await runInDurableObject(s, (_o: AccountStore, state: DurableObjectState) => {
      state.storage.sql.exec("UPDATE login_throttle SET locked_until = ? WHERE account = ?", Math.floor(Date.now() / 1000) - 1, acct);
    });
    // After the lock, the address gets its five guesses again (not a stale count of 10).
    for (let i = 0; i < 5; i++) expect((await s.loginBegin(acct, ip, `next-${i}`)).status).toBe("ok");
  });

  it("IPv6 clients are counted per /64, and the admin API shows and lifts locks per address", async () => {
    await createUser("sixer");
    for (let i = 0; i < 5; i++) expect((await token(`2001:db8:1:2::${i + 1}`, "sixer", `wrong-${i}`)).status).toBe(401);
    expect((await token("2001:db8:1:2:ffff::9", "sixer", "sixer-password")).status).toBe(429);
    expect((await token("2001:db8:1:3::1", "sixer", "sixer-password")).status).toBe(200);
    const r = await call("/admin/locks/sixer", { ip: "192.0.2.250", headers: asAdmin });
    const body = (await r.json()) as { account: string; addresses: { address: string; lockedUntil: number }[] };
    expect(body.addresses.map((a) => a.address)).toContain("2001:db8:1:2::/64");
    expect((await call("/admin/locks/sixer", { method: "DELETE", ip: "192.0.2.250", headers: asAdmin })).status).toBe(204);
    expect((await token("2001:db8:1:2::1", "sixer", "sixer-password")).status).toBe(200);
  });

  it("keeps the counters bounded: at most 1,000 address rows per account, oldest dropped first", async () => {
    const s = store();
    await runInDurableObject(s, (o: AccountStore) => {
      for (let i = 0; i < 1010; i++) {
        const ip = `10.${(i >> 8) & 255}.${i & 255}.1`;
        const b = o.loginBegin("many-addresses", ip, "g");
        expect(b.status).toBe("ok");
        o.loginEnd("many-addresses", ip, "g", false);
      }
    });
    const rows = await runInDurableObject(s, (_o: AccountStore, state: DurableObjectState) =>
      Number(state.storage.sql.exec("SELECT COUNT(*) AS n FROM login_throttle WHERE account = ?", "many-addresses").one().n),
    );
    expect(rows).toBe(1000);
    const st = await s.throttleState("many-addresses");
    expect(st.addresses.some((a) => a.address === "10.0.0.1")).toBe(false); // the oldest went first
    expect(st.addresses.some((a) => a.address === `10.3.${1009 & 255}.1`)).toBe(true);
  });
});

describe("realm and service a request cannot choose (issue 9 defect 8)", () => {
  const NO_HOSTS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };

  it("an unknown Host is refused in token mode without configuration, and never echoed as the realm", async () => {
    for (const path of ["/v2/", "/v2/a/b/tags/list", "/token?service=evil.example", "/admin/users"]) {
      const r = await call(path, { base: "http://evil.example" }, NO_HOSTS);
      expect(r.status, path).toBe(421);
      expect(r.headers.get("WWW-Authenticate") ?? "").not.toContain("evil.example");
      const e = await errorOf(r);
      expect(e.code).toBe("DENIED");
      expect(e.message).toMatch(/REGISTRY_HOSTS|AUTH_REALM/);
    }
  });

  it("local development works without configuration on loopback hosts", async () => {
    for (const base of ["http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787", "https://127.0.0.1:8443"]) {
      const r = await call("/v2/", { base }, NO_HOSTS);
      expect(r.status, base).toBe(401);
      const host = new URL(base).host;
      expect(r.headers.get("WWW-Authenticate")).toBe(`Bearer realm="${base}/token",service="${host}"`);
    }
  });

  it("REGISTRY_HOSTS admits listed hosts only", async () => {
    const vars = { ...NO_HOSTS, REGISTRY_HOSTS: "reg.example.com, mirror.example.com:8443" };
    const r = await call("/v2/", { base: "https://reg.example.com" }, vars);
    expect(r.headers.get("WWW-Authenticate")).toBe('Bearer realm="https://reg.example.com/token",service="reg.example.com"');
    const m = await call("/v2/", { base: "https://mirror.example.com:8443" }, vars);
    expect(m.headers.get("WWW-Authenticate")).toBe('Bearer realm="https://mirror.example.com:8443/token",service="mirror.example.com:8443"');
    expect((await call("/v2/", { base: "https://mirror.example.com" }, vars)).status).toBe(421);
    expect((await call("/v2/", { base: "https://evil.example" }, vars)).status).toBe(421);
  });

  it("AUTH_REALM and AUTH_SERVICE answer every Host with the configured values", async () => {
    const vars = { ...NO_HOSTS, AUTH_REALM: "https://reg.example.com/token", AUTH_SERVICE: "reg.example.com" };
    const r = await call("/v2/", { base: "http://evil.example" }, vars);
    expect(r.status).toBe(401);
    expect(r.headers.get("WWW-Authenticate")).toBe('Bearer realm="https://reg.example.com/token",service="reg.example.com"');
    // AUTH_REALM alone: the service is the realm's host, not the request's.
    const only = await call("/v2/", { base: "http://evil.example" }, { ...NO_HOSTS, AUTH_REALM: "https://reg.example.com/token" });
    expect(only.headers.get("WWW-Authenticate")).toBe('Bearer realm="https://reg.example.com/token",service="reg.example.com"');
  });

  it("open mode (development) still answers any Host", async () => {
    expect((await call("/v2/", { base: "http://evil.example" }, { AUTH_MODE: "open" })).status).toBe(200);
  });
});

describe("token claims are validated by schema (issue 9 defect 9)", () => {
  const KEY = { kid: "hardening", secret: "h".repeat(48) };
  const vars = { ...TOKEN_VARS, TOKEN_SIGNING_KEYS: JSON.stringify([KEY]) };
  const jwk = { kty: "oct", k: btoa(KEY.secret).replace(/=+$/, ""), alg: "HS256", kid: KEY.kid };
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (extra: Record<string, unknown>) => ({
    iss: "cloister",
    sub: "user:admin",
    aud: "registry.test",
    exp: now() + 300,
    nbf: now() - 5,
    iat: now(),
    jti: "j",
    ...extra,
  });
  const signed = (payload: Record<string, unknown>) => sign(payload as Parameters<typeof sign>[0], jwk, "HS256");

  it("a well-formed token still works (the key and claims above are right)", async () => {
    const t = await signed(claims({ access: [{ type: "repository", name: "a/b", actions: ["pull"] }] }));
    const r = await call("/v2/a/b/tags/list", { headers: { Authorization: `Bearer ${t}` } }, vars);
    expect(r.status).toBe(404); // through the gate; the repository does not exist
  });

  it("any malformed claim in a correctly signed token is 401 invalid_token, never 500 or a grant", async () => {
    const bad: Record<string, unknown>[] = [
      { access: [{ type: "repository", name: "a/b", actions: "*" }] }, // a string, not a list
      { access: [null] },
      { access: [{ type: "repository", name: "a/b" }] },
      { access: [{ type: "repository", name: 5, actions: ["pull"] }] },
      { access: [{ type: "repository", name: "a/b", actions: [7] }] },
      { access: [{ type: "repository", name: "a/b", actions: ["pull"], extra: {} }] },
      { access: "repository:a/b:pull" },
      { access: {} },
      { access: [{ type: "repository", name: "a/b", actions: ["pull"] }], sub: 5 },
      { access: [{ type: "repository", name: "a/b", actions: ["pull"] }], jti: ["x"] },
      { access: Array.from({ length: 65 }, () => ({ type: "repository", name: "a/b", actions: ["pull"] })) },
    ];
    for (const extra of bad) {
      const t = await signed(claims(extra));
      for (const path of ["/v2/a/b/tags/list", "/v2/"]) {
        const r = await call(path, { headers: { Authorization: `Bearer ${t}` } }, vars);
        expect(r.status, `${path} ${JSON.stringify(extra).slice(0, 120)}`).toBe(401);
        expect(r.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
        expect((await errorOf(r)).code).toBe("UNAUTHORIZED");
      }
      const admin = await call("/admin/users", { headers: { Authorization: `Bearer ${t}` } }, vars);
      expect(admin.status, JSON.stringify(extra).slice(0, 120)).toBe(401);
    }
  });

  it("a malformed refresh token is refused with 401", async () => {
    const t = await signed(claims({ use: "refresh", ep: "zero" }));
    const r = await call("/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: t, service: "registry.test" }).toString(),
    }, vars);
    expect(r.status).toBe(401);
  });
});

describe("one auth check per request (issue 16 part 7)", () => {
  /** The real AccountStore namespace, wrapped to record the sign-in calls a request makes. */
  function countingEnv(): { vars: Record<string, unknown>; calls: string[] } {
    const real = (env as unknown as Env).ACCOUNT_STORE;
    const calls: string[] = [];
    const ns = new Proxy(real, {
      get(target, prop) {
        if (prop === "get") {
          return (id: DurableObjectId) => {
            const stub = target.get(id);
            type Method = (...a: unknown[]) => unknown;
            const call = (m: string) => (...args: unknown[]) => (stub as unknown as Record<string, Method>)[m](...args);
            // A plain object forwarding the methods the auth module calls (a Proxy over an RPC stub
            // does not survive workerd's serialization).
            const methods = ["loginBegin", "loginEnd", "rules", "signingKeys", "accountEpoch", "throttleState"];
            return Object.fromEntries(
              methods.map((m) => [m, (...args: unknown[]) => (calls.push(m), call(m)(...args))]),
            );
          };
        }
        const v = (target as unknown as Record<string | symbol, unknown>)[prop];
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    return { vars: { ...TOKEN_VARS, ACCOUNT_STORE: ns }, calls };
  }

  it("GET /v2 and /v2/ with Basic credentials check the password once", async () => {
    for (const path of ["/v2", "/v2/"]) {
      const { vars, calls } = countingEnv();
      const r = await call(path, { ip: "198.51.100.60", headers: asAdmin }, vars as Record<string, string>);
      expect(r.status, path).toBe(200);
      expect(calls.filter((m) => m === "loginBegin"), path).toEqual(["loginBegin"]);
      expect(calls.filter((m) => m === "loginEnd"), path).toEqual(["loginEnd"]);
    }
  });

  it("a wrong password on GET /v2 counts one failure", async () => {
    await createUser("once");
    expect((await call("/v2", { ip: "198.51.100.61", headers: basic("once", "wrong-password") })).status).toBe(401);
    const st = await store().throttleState("once");
    expect(st.addresses.find((a) => a.address === "198.51.100.61")?.failures).toBe(1);
  });
});

describe("/_bench stays off and behind the admin gate (issue 16 part 7)", () => {
  it("is a 404 when BENCH_ROUTES is off (the test pool's default), whoever asks", async () => {
    const r = await exports.default.fetch(new Request(`${BASE}/_bench/r2/x`));
    expect(r.status).toBe(404);
    expect(await r.text()).not.toMatch(/no such object/);
    const put = await call("/_bench/r2/x", { method: "PUT", headers: asAdmin, body: "x" });
    expect(put.status).toBe(404);
  });

  it("with BENCH_ROUTES=true it needs the admin", async () => {
    const vars = { ...TOKEN_VARS, BENCH_ROUTES: "true" };
    const anon = await call("/_bench/r2/missing-object", {}, vars);
    expect(anon.status).toBe(401);
    expect((await errorOf(anon)).code).toBe("UNAUTHORIZED");
    const put = await call("/_bench/r2/bench-key", { method: "PUT", body: "data", headers: { "Content-Length": "4" } }, vars);
    expect(put.status).toBe(401);
    expect(await (env as unknown as Env).BUCKET.head("_bench/bench-key")).toBeNull();
    const pw = await createUser("benchuser");
    expect((await call("/_bench/r2/missing-object", { headers: basic("benchuser", pw) }, vars)).status).toBe(403);
    const ok = await call("/_bench/r2/missing-object", { headers: asAdmin }, vars);
    expect(ok.status).toBe(404);
    expect(await ok.text()).toMatch(/no such object/);
    // Open development mode without ADMIN_PASSWORD (how `npm run bench` starts it): reachable.
    const open = await call("/_bench/r2/missing-object", {}, { AUTH_MODE: "open", BENCH_ROUTES: "true" });
    expect(await open.text()).toMatch(/no such object/);
  });
});
