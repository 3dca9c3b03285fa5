// The policy engine as a table: pure functions, no I/O.
import { describe, expect, it } from "vitest";
import {
  BUILTIN_RULES,
  allowedActions,
  evaluate,
  explain,
  globToRegExp,
  matchGlob,
  parseRule,
  parseSubject,
  subjectMatches,
  tagChangeAllowed,
  withBuiltins,
  type Rule,
  type Subject,
} from "../../src/auth/policy";

const alice: Subject = { kind: "user", name: "alice" };
const bob: Subject = { kind: "user", name: "bob" };
const admin: Subject = { kind: "user", name: "admin" };
const anon: Subject = { kind: "anonymous" };
const ci: Subject = { kind: "robot", name: "alice+ci" };

const rule = (r: Record<string, unknown>): Rule => parseRule(r);

describe("globs", () => {
  const table: [string, string, boolean][] = [
    ["a/cache", "a/cache", true],
    ["a/cache", "a/cache/sub", false],
    ["a/cache", "a/cachex", false],
    ["a/*", "a/x", true],
    ["a/*", "a/x/y", false],
    ["a/*", "a", false],
    ["a/**", "a/x", true],
    ["a/**", "a/x/y/z", true],
    ["a/**", "a", false],
    ["a/**", "ab/x", false],
    ["alice/**", "alice2/x", false],
    ["alice/**", "alicex", false],
    ["**", "anything/at/all", true],
    ["*", "top", true],
    ["*", "two/levels", false],
    ["**/cache", "x/y/cache", true],
    ["**/cache", "cache", false],
    ["team/*/cache", "team/app/cache", true],
    ["team/*/cache", "team/app/x/cache", false],
    ["team/*-cache", "team/app-cache", true],
    ["a.b/c", "aXb/c", false], // "." is literal
    ["lib/*", "lib/", true],
  ];
  for (const [glob, value, want] of table) {
    it(`${glob} ${want ? "matches" : "does not match"} ${value}`, () => expect(matchGlob(glob, value)).toBe(want));
  }
  it("escapes regex metacharacters", () => {
    expect(globToRegExp("a+b").test("a+b")).toBe(true);
    expect(globToRegExp("a+b").test("aab")).toBe(false);
  });
});

describe("subjects", () => {
  it("matches by kind and name", () => {
    expect(subjectMatches("user:alice", alice)).toBe(true);
    expect(subjectMatches("user:alice", bob)).toBe(false);
    expect(subjectMatches("user:*", bob)).toBe(true);
    expect(subjectMatches("user:*", ci)).toBe(false);
    expect(subjectMatches("robot:alice+ci", ci)).toBe(true);
    expect(subjectMatches("robot:robot$alice+ci", ci)).toBe(true);
    expect(subjectMatches("robot:alice+*", ci)).toBe(true);
    expect(subjectMatches("user:alice+ci", ci)).toBe(false);
    expect(subjectMatches("authenticated", ci)).toBe(true);
    expect(subjectMatches("authenticated", anon)).toBe(false);
    expect(subjectMatches("anonymous", anon)).toBe(true);
    expect(subjectMatches("anonymous", alice)).toBe(false); // in a deny rule
    expect(subjectMatches("anonymous", alice, "allow")).toBe(true); // public access is everyone's
    expect(subjectMatches("anonymous", anon, "deny")).toBe(true);
    expect(subjectMatches("*", anon)).toBe(true);
  });
  it("parses subject strings", () => {
    expect(parseSubject("user:alice")).toEqual(alice);
    expect(parseSubject("robot:robot$alice+ci")).toEqual(ci);
    expect(parseSubject("robot:alice+ci")).toEqual(ci);
    expect(parseSubject("anonymous")).toEqual(anon);
    expect(parseSubject("nobody")).toBeNull();
  });
});

describe("built-in defaults", () => {
  const rules = withBuiltins([]);
  it("admin may do everything", () => {
    for (const a of ["pull", "push", "delete"] as const) expect(evaluate(rules, admin, a, "x/y").allowed).toBe(true);
    expect(evaluate(rules, admin, "catalog", null).allowed).toBe(true);
    expect(evaluate(rules, admin, "admin", null).allowed).toBe(true);
  });
  it("users own <username>/**, nothing else", () => {
    expect(allowedActions(rules, alice, "alice/app", ["pull", "push", "delete"])).toEqual(["pull", "push", "delete"]);
    expect(allowedActions(rules, alice, "alice/a/b/c", ["pull", "push", "delete"])).toEqual(["pull", "push", "delete"]);
    expect(allowedActions(rules, alice, "bob/app", ["pull", "push", "delete"])).toEqual([]);
    expect(evaluate(rules, alice, "pull", "alice").allowed).toBe(false); // the bare name is not under alice/
    expect(evaluate(rules, alice, "pull", "alicex/app").allowed).toBe(false); // prefix names do not leak
    expect(evaluate(rules, alice, "admin", null).allowed).toBe(false);
  });
  it("robots and anonymous get nothing by default", () => {
    expect(evaluate(rules, ci, "pull", "alice/app").allowed).toBe(false);
    expect(evaluate(rules, anon, "pull", "alice/app").allowed).toBe(false);
    expect(evaluate(rules, anon, "catalog", null).allowed).toBe(false);
  });
  it("signed-in accounts may list the catalog", () => {
    expect(evaluate(rules, alice, "catalog", null).allowed).toBe(true);
    expect(evaluate(rules, ci, "catalog", null).allowed).toBe(true);
  });
  it("no match is default deny, with the reason", () => {
    const d = evaluate(rules, bob, "push", "alice/app");
    expect(d).toMatchObject({ allowed: false, deciding: [], matched: [] });
    expect(d.reason).toMatch(/default deny/);
  });
});

describe("rules", () => {
  const stored = [
    rule({ id: "public-lib", effect: "allow", subjects: ["anonymous", "authenticated"], actions: ["pull"], repositories: ["lib/**"] }),
    rule({ id: "freeze-lib", effect: "deny", subjects: "*", actions: ["push", "delete"], repositories: "lib/**" }),
    rule({ id: "team", priority: 10, effect: "allow", subjects: ["user:bob", "robot:alice+ci"], actions: ["pull", "push"], repositories: ["team/*"] }),
    rule({ id: "no-bob-secret", effect: "deny", subjects: ["user:bob"], actions: ["pull"], repositories: ["team/secret"] }),
    rule({ id: "admins", effect: "allow", subjects: ["user:carol"], actions: ["admin"] }),
    rule({ id: "deny-admin-admin", effect: "deny", subjects: ["*"], actions: ["admin"] }),
  ];
  const rules = withBuiltins(stored);

  it("public repositories are an anonymous pull rule", () => {
    expect(evaluate(rules, anon, "pull", "lib/alpine").allowed).toBe(true);
    expect(evaluate(rules, anon, "push", "lib/alpine").allowed).toBe(false);
    expect(evaluate(rules, anon, "pull", "lib").allowed).toBe(false);
  });
  it("what anonymous may pull, everyone may; denying anonymous leaves signed-in users alone", () => {
    const r = withBuiltins([
      rule({ id: "pub", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["pub/**"] }),
      rule({ id: "no-anon", effect: "deny", subjects: ["anonymous"], actions: ["pull"], repositories: ["pub/internal"] }),
    ]);
    expect(evaluate(r, anon, "pull", "pub/app").allowed).toBe(true);
    expect(evaluate(r, alice, "pull", "pub/app").allowed).toBe(true);
    expect(evaluate(r, ci, "pull", "pub/app").allowed).toBe(true);
    expect(evaluate(r, anon, "pull", "pub/internal").allowed).toBe(false);
    expect(evaluate(r, alice, "pull", "pub/internal").allowed).toBe(true);
  });
  it("deny wins over allow, even over the admin built-in", () => {
    const d = evaluate(rules, admin, "push", "lib/alpine");
    expect(d.allowed).toBe(false);
    expect(d.deciding.map((r) => r.id)).toEqual(["freeze-lib"]);
    expect(d.matched.map((r) => r.id)).toEqual(["builtin:admin", "freeze-lib"]);
  });
  it("deny wins regardless of priority", () => {
    expect(evaluate(rules, bob, "pull", "team/app").allowed).toBe(true);
    const d = evaluate(rules, bob, "pull", "team/secret");
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe("denied by no-bob-secret");
  });
  it("single-segment globs do not cross /", () => {
    expect(evaluate(rules, ci, "push", "team/app").allowed).toBe(true);
    expect(evaluate(rules, ci, "push", "team/app/sub").allowed).toBe(false);
    expect(evaluate(rules, ci, "delete", "team/app").allowed).toBe(false);
  });
  it("the admin account keeps the admin action whatever the rules say", () => {
    expect(evaluate(rules, admin, "admin", null).allowed).toBe(true);
    expect(evaluate(rules, { kind: "user", name: "carol" }, "admin", null).allowed).toBe(false); // deny wins
  });
  it("explain lists deciding and matching rules in priority order", () => {
    const d = explain(stored, bob, "pull", "team/secret");
    expect(d.matched.map((r) => r.id)).toEqual(["team", "no-bob-secret"]);
    expect(d.deciding.map((r) => r.id)).toEqual(["no-bob-secret"]);
    const a = explain(stored, alice, "push", "alice/x");
    expect(a.allowed).toBe(true);
    expect(a.deciding.map((r) => r.id)).toEqual(["builtin:user-namespace"]);
  });
  it("stored rules cannot shadow a built-in id", () => {
    const sneaky = { ...stored[0], id: "builtin:admin", subjects: ["anonymous"], actions: ["push"] } as Rule;
    expect(withBuiltins([sneaky]).filter((r) => r.id === "builtin:admin")).toEqual([BUILTIN_RULES[0]]);
  });
  it("{user} expands only for users", () => {
    const r = withBuiltins([rule({ id: "scratch", effect: "allow", subjects: ["authenticated"], actions: ["push"], repositories: ["scratch/{user}/**"] })]);
    expect(evaluate(r, alice, "push", "scratch/alice/x").allowed).toBe(true);
    expect(evaluate(r, alice, "push", "scratch/bob/x").allowed).toBe(false);
    expect(evaluate(r, ci, "push", "scratch/alice+ci/x").allowed).toBe(false);
  });
});

describe("rule validation", () => {
  const bad: [string, Record<string, unknown>][] = [
    ["no effect", { id: "x", subjects: ["*"], actions: ["pull"] }],
    ["bad effect", { id: "x", effect: "maybe", subjects: ["*"], actions: ["pull"] }],
    ["bad action", { id: "x", effect: "allow", subjects: ["*"], actions: ["fly"] }],
    ["bad subject", { id: "x", effect: "allow", subjects: ["group:x"], actions: ["pull"] }],
    ["empty subjects", { id: "x", effect: "allow", subjects: [], actions: ["pull"] }],
    ["bad glob", { id: "x", effect: "allow", subjects: ["*"], actions: ["pull"], repositories: ["A/B"] }],
    ["registry action with repositories", { id: "x", effect: "allow", subjects: ["*"], actions: ["catalog"], repositories: ["a/**"] }],
    ["bad id", { id: "has space", effect: "allow", subjects: ["*"], actions: ["pull"] }],
    ["unknown field", { id: "x", effect: "allow", subjects: ["*"], actions: ["pull"], repos: ["a"] }],
    ["immutable without tags", { id: "x", kind: "immutable-tags", repositories: "a/**" }],
    ["bad tag glob", { id: "x", kind: "immutable-tags", repositories: "a/**", tags: "v1/2" }],
    ["unknown kind", { id: "x", kind: "quota", effect: "allow", subjects: ["*"], actions: ["pull"] }],
  ];
  for (const [name, input] of bad) it(`rejects ${name}`, () => expect(() => parseRule(input)).toThrow());
  it("applies defaults and normalises single values to lists", () => {
    expect(parseRule({ id: "x", effect: "allow", subjects: "*", actions: "pull", repositories: "a/**" })).toEqual({
      id: "x",
      kind: "access",
      priority: 100,
      effect: "allow",
      subjects: ["*"],
      actions: ["pull"],
      repositories: ["a/**"],
    });
  });
});

describe("immutable tags", () => {
  const rules = withBuiltins([
    rule({ id: "releases", kind: "immutable-tags", repositories: ["prod/**"], tags: ["v*", "stable"] }),
  ]);
  const A = "sha256:" + "a".repeat(64);
  const B = "sha256:" + "b".repeat(64);
  it("refuses moving a protected tag", () => {
    const r = tagChangeAllowed(rules, "prod/app", "v1.2.3", A, B);
    expect(r.allowed).toBe(false);
    if (!r.allowed) expect(r.rule.id).toBe("releases");
  });
  it("refuses deleting a protected tag", () => expect(tagChangeAllowed(rules, "prod/app", "stable", A, null).allowed).toBe(false));
  it("allows creating it and re-pushing the same digest", () => {
    expect(tagChangeAllowed(rules, "prod/app", "v1", null, A).allowed).toBe(true);
    expect(tagChangeAllowed(rules, "prod/app", "v1", A, A).allowed).toBe(true);
  });
  it("leaves other tags and repositories mutable", () => {
    expect(tagChangeAllowed(rules, "prod/app", "latest", A, B).allowed).toBe(true);
    expect(tagChangeAllowed(rules, "dev/app", "v1", A, B).allowed).toBe(true);
    expect(tagChangeAllowed(rules, "prod", "v1", A, B).allowed).toBe(true);
  });
  it("immutable-tags rules grant nothing", () => expect(evaluate(rules, anon, "pull", "prod/app").allowed).toBe(false));
});
