// Token format: scopes, grants, HS256 JWTs with kid in the header, expiry, tampering, audience, rotation.
import { describe, expect, it } from "vitest";
import { decode } from "hono/jwt";
import { parseSigningKeys, authConfig, authMode } from "../../src/auth/config";
import { hashPassword, verifyPassword, PBKDF2_ITERATIONS, stringsEqual } from "../../src/auth/crypto";
import { withBuiltins, parseRule } from "../../src/auth/policy";
import {
  accessCovers,
  formatScope,
  grantAccess,
  issueAccessToken,
  issueRefreshToken,
  parseScopes,
  verifyJwt,
  type AccessClaims,
} from "../../src/auth/tokens";

const K1 = { kid: "k1", secret: "0123456789abcdef0123456789abcdef-one" };
const K2 = { kid: "k2", secret: "0123456789abcdef0123456789abcdef-two" };

describe("scopes", () => {
  it("parses repository, registry and host:port names, merges duplicates", () => {
    expect(
      parseScopes([
        "repository:alice/app:pull",
        "repository:alice/app:push repository:localhost:5000/x:pull",
        "registry:catalog:*",
        "repository(plugin):p/q:pull",
        "garbage",
        "repository::pull",
      ]),
    ).toEqual([
      { type: "repository", name: "alice/app", actions: ["pull", "push"] },
      { type: "repository", name: "localhost:5000/x", actions: ["pull"] },
      { type: "registry", name: "catalog", actions: ["*"] },
      { type: "repository", name: "p/q", actions: ["pull"] },
    ]);
  });
  it("formats scopes", () => expect(formatScope({ type: "repository", name: "a/b", actions: ["pull", "push"] })).toBe("repository:a/b:pull,push"));
});

describe("grants", () => {
  const rules = withBuiltins([parseRule({ id: "pub", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["lib/**"] })]);
  it("narrows to what policy allows (even to nothing), never errors", () => {
    const g = grantAccess(rules, { kind: "user", name: "alice" }, parseScopes([
      "repository:alice/app:pull,push,delete",
      "repository:bob/app:pull,push",
      "repository:lib/x:pull,push",
      "repository:Not_Valid:pull",
      "registry:catalog:*",
      "other:thing:read",
    ]));
    expect(g).toEqual([
      { type: "repository", name: "alice/app", actions: ["pull", "push", "delete"] },
      { type: "repository", name: "bob/app", actions: [] },
      { type: "repository", name: "lib/x", actions: ["pull"] }, // public: anyone may pull, nobody push
      { type: "repository", name: "Not_Valid", actions: [] },
      { type: "registry", name: "catalog", actions: ["*"] },
      { type: "other", name: "thing", actions: [] },
    ]);
  });
  it("answers * with the actions actually held", () => {
    expect(grantAccess(rules, { kind: "user", name: "alice" }, parseScopes(["repository:alice/a:*"]))[0].actions).toEqual(["*"]);
    expect(grantAccess(rules, { kind: "anonymous" }, parseScopes(["repository:lib/a:*"]))[0].actions).toEqual(["pull"]);
  });
  it("accessCovers checks every needed action", () => {
    const access = [{ type: "repository", name: "a/b", actions: ["pull"] }];
    expect(accessCovers(access, "repository", "a/b", ["pull"])).toBe(true);
    expect(accessCovers(access, "repository", "a/b", ["pull", "push"])).toBe(false);
    expect(accessCovers(access, "repository", "a/bc", ["pull"])).toBe(false);
    expect(accessCovers([{ type: "repository", name: "a/b", actions: ["*"] }], "repository", "a/b", ["delete"])).toBe(true);
  });
});

describe("JWT", () => {
  const access = [{ type: "repository", name: "alice/app", actions: ["pull"] }];
  it("signs HS256 with the kid in the header and the spec's claims", async () => {
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "reg.test", access, ttl: 300 });
    const { header, payload } = decode(token);
    expect(header).toMatchObject({ alg: "HS256", typ: "JWT", kid: "k1" });
    expect(payload).toMatchObject({ iss: "cloister", sub: "user:alice", aud: "reg.test", access });
    for (const k of ["exp", "nbf", "iat", "jti"]) expect(payload).toHaveProperty(k);
    expect((payload.exp as number) - (payload.iat as number)).toBe(300);
    const v = await verifyJwt<AccessClaims>(token, [K1], "reg.test", "access");
    expect(v.ok && v.claims.access).toEqual(access);
  });
  it("refuses expired tokens", async () => {
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "reg.test", access, ttl: 300, now: Math.floor(Date.now() / 1000) - 1000 });
    expect(await verifyJwt(token, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "expired" });
  });
  it("refuses tokens not yet valid", async () => {
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "reg.test", access, ttl: 300, now: Math.floor(Date.now() / 1000) + 1000 });
    expect(await verifyJwt(token, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "not-yet-valid" });
  });
  it("refuses tampered payloads and signatures", async () => {
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "reg.test", access, ttl: 300 });
    const [h, p, s] = token.split(".");
    const payload = JSON.parse(atob(p.replace(/-/g, "+").replace(/_/g, "/")));
    payload.access = [{ type: "repository", name: "bob/app", actions: ["push"] }];
    const forged = `${h}.${btoa(JSON.stringify(payload)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}.${s}`;
    expect(await verifyJwt(forged, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "bad-signature" });
    const flipped = `${h}.${p}.${s.slice(0, -2)}${s.endsWith("AA") ? "BB" : "AA"}`;
    expect((await verifyJwt(flipped, [K1], "reg.test", "access")).ok).toBe(false);
    expect(await verifyJwt("not.a.jwt", [K1], "reg.test", "access")).toEqual({ ok: false, reason: "malformed" });
    // alg "none" and a foreign kid are refused
    const none = `${btoa(JSON.stringify({ alg: "none", kid: "k1" })).replace(/=+$/, "")}.${p}.`;
    expect((await verifyJwt(none, [K1], "reg.test", "access")).ok).toBe(false);
  });
  it("refuses a token signed with another secret under the same kid", async () => {
    const { token } = await issueAccessToken({ keys: [{ kid: "k1", secret: "x".repeat(40) }], subject: "user:alice", audience: "reg.test", access, ttl: 300 });
    expect(await verifyJwt(token, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "bad-signature" });
  });
  it("refuses the wrong audience", async () => {
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "other.test", access, ttl: 300 });
    expect(await verifyJwt(token, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "wrong-audience" });
  });
  it("keeps refresh and access tokens apart", async () => {
    const rt = await issueRefreshToken({ keys: [K1], subject: "user:alice", audience: "reg.test", epoch: 3, ttl: 3600 });
    expect(await verifyJwt(rt, [K1], "reg.test", "access")).toEqual({ ok: false, reason: "wrong-use" });
    const v = await verifyJwt(rt, [K1], "reg.test", "refresh");
    expect(v.ok && v.claims.ep).toBe(3);
    const { token } = await issueAccessToken({ keys: [K1], subject: "user:alice", audience: "reg.test", access, ttl: 300 });
    expect(await verifyJwt(token, [K1], "reg.test", "refresh")).toEqual({ ok: false, reason: "wrong-use" });
  });
  it("rotation: the first key signs, every listed key verifies until removed", async () => {
    const old = (await issueAccessToken({ keys: [K1], subject: "user:a", audience: "r", access, ttl: 300 })).token;
    const rotated = [K2, K1];
    const fresh = (await issueAccessToken({ keys: rotated, subject: "user:a", audience: "r", access, ttl: 300 })).token;
    expect(decode(fresh).header.kid).toBe("k2");
    expect((await verifyJwt(old, rotated, "r", "access")).ok).toBe(true);
    expect((await verifyJwt(fresh, rotated, "r", "access")).ok).toBe(true);
    expect(await verifyJwt(old, [K2], "r", "access")).toEqual({ ok: false, reason: "unknown-kid" });
  });
});

describe("configuration", () => {
  it("is closed unless AUTH_MODE=open", () => {
    expect(authMode({})).toBe("token");
    expect(authMode({ AUTH_MODE: "OPEN" })).toBe("open");
    expect(authMode({ AUTH_MODE: "off" })).toBe("token");
    expect(authMode({ AUTH_MODE: "" })).toBe("token");
  });
  it("derives realm and service from a listed or loopback host unless overridden; refuses other hosts", () => {
    expect(() => authConfig({}, "https://reg.example:8443/v2/")).toThrow(/REGISTRY_HOSTS/);
    expect(authConfig({}, "http://127.0.0.1:8787/v2/")).toMatchObject({ realm: "http://127.0.0.1:8787/token", service: "127.0.0.1:8787" });
    const c = authConfig({ REGISTRY_HOSTS: "reg.example:8443" }, "https://reg.example:8443/v2/");
    expect(c).toMatchObject({ realm: "https://reg.example:8443/token", service: "reg.example:8443", tokenTtlSeconds: 300, adminPassword: null, signingKeys: null });
    const o = authConfig({ AUTH_REALM: "https://auth.example/token", AUTH_SERVICE: "reg", TOKEN_TTL_SECONDS: "60", REFRESH_TOKEN_TTL_SECONDS: "120" }, "https://x/v2/");
    expect(o).toMatchObject({ realm: "https://auth.example/token", service: "reg", tokenTtlSeconds: 60, refreshTokenTtlSeconds: 120 });
  });
  it("validates TOKEN_SIGNING_KEYS without echoing secrets", () => {
    expect(parseSigningKeys(JSON.stringify([K2, K1]))).toEqual([K2, K1]);
    expect(parseSigningKeys(undefined)).toBeNull();
    for (const bad of ["{", "[]", JSON.stringify([{ kid: "a", secret: "short-secret-value" }]), JSON.stringify([K1, K1]), JSON.stringify([{ kid: "bad kid", secret: K1.secret }])]) {
      let msg = "";
      try {
        parseSigningKeys(bad);
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toMatch(/TOKEN_SIGNING_KEYS/);
      expect(msg).not.toContain("short-secret-value");
      expect(msg).not.toContain(K1.secret);
    }
  });
});

describe("password hashing", () => {
  it("PBKDF2-SHA256 at the Workers maximum of 100,000 iterations, salted", async () => {
    const h1 = await hashPassword("correct horse");
    const h2 = await hashPassword("correct horse");
    expect(h1).toMatch(new RegExp(`^pbkdf2-sha256\\$${PBKDF2_ITERATIONS}\\$`));
    expect(PBKDF2_ITERATIONS).toBe(100_000);
    expect(h1).not.toBe(h2);
    expect(await verifyPassword("correct horse", h1)).toBe(true);
    expect(await verifyPassword("correct horsE", h1)).toBe(false);
    expect(await verifyPassword("correct horse", null)).toBe(false);
    expect(await verifyPassword("x", "garbage")).toBe(false);
    expect(await verifyPassword("x", "pbkdf2-sha256$999999999$AAAA$AAAA")).toBe(false); // over the cap
  });
  it("compares strings in constant time", async () => {
    expect(await stringsEqual("abc", "abc")).toBe(true);
    expect(await stringsEqual("abc", "abd")).toBe(false);
    expect(await stringsEqual("abc", "abcd")).toBe(false);
  });
});
