// The admin API, mounted at /admin. JSON in and out; every route needs the "admin" action
// (Basic credentials, or a Bearer token holding registry:admin:*). Bad input is a 4xx with the
// OCI-style error envelope {errors:[{code,message,detail}]}, never a 500.
import { Hono, type Context } from "hono";
import { z } from "zod";
import { OciError, oci, withRequestId } from "../oci/errors";
import { hashPassword, randomBytes, sha256Hex } from "./crypto";
import { bytesToBase64url } from "../util/encoding";
import { auditDenial, challengeHeader } from "./middleware";
import {
  ACTIONS,
  BUILTIN_RULES,
  accessRuleSchema,
  evaluate,
  isBuiltinId,
  parseSubject,
  REGISTRY_ACTIONS,
  type Action,
  type Rule,
  parseRule,
  linkedRepositories,
  signatureGatesFor,
  reverseLinkedRepositories,
} from "./policy";
import { OPEN, authState, bearerToken, configOf, login, parseBasic, principalFromId, rulesFor, setAuth, signingKeysFor, storeOf, subjectOf, throttled } from "./session";
import { accessCovers, verifyJwt, type AccessClaims } from "./tokens";
import { isValidName } from "../oci/grammar";
import { auditRoutes } from "../admin/audit-routes";
import { webhookRoutes } from "../admin/webhook-routes";
import { record } from "../audit/record";
import { mountIndexAdminRoutes } from "../admin/index-routes";
import { mountGcAdminRoutes } from "../admin/gc-routes";
import { mountSnapshotAdminRoutes } from "../admin/snapshot-routes";
import { mountProxyAdminRoutes } from "../proxy/admin-routes";
import { importPublicKeyPem } from "../signatures/verify";
import { revokeKey } from "../signatures/attestations";

type Ctx = Context<any>;

/** An admin-API error in the OCI envelope. Codes: BAD_REQUEST, NOT_FOUND, CONFLICT, plus the OCI ones. */
export class ApiError extends OciError {
  constructor(
    readonly apiCode: string,
    message: string,
    status: number,
    detail?: unknown,
  ) {
    super("UNSUPPORTED", message, detail, status);
  }
  override toResponse(extra: Record<string, string> = {}): Response {
    return new Response(JSON.stringify({ errors: [{ code: this.apiCode, message: this.message, detail: withRequestId(this.detail) }] }), {
      status: this.status,
      headers: { "Content-Type": "application/json; charset=utf-8", ...this.headers, ...extra },
    });
  }
}

export const bad = (message: string, detail?: unknown) => new ApiError("BAD_REQUEST", message, 400, detail);
export const notFound = (message: string) => new ApiError("NOT_FOUND", message, 404);
const conflict = (message: string) => new ApiError("CONFLICT", message, 409);

function zodDetail(e: z.ZodError) {
  return e.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
}

export async function body<T extends z.ZodType>(c: Ctx, schema: T): Promise<z.output<T>> {
  const type = (c.req.header("Content-Type") ?? "").toLowerCase();
  if (!type.startsWith("application/json")) throw bad("send a JSON body with Content-Type: application/json");
  const text = await c.req.text();
  if (text.length > 64 * 1024) throw bad("body too large (64 KiB max)");
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw bad("body is not valid JSON");
  }
  const r = schema.safeParse(data);
  if (!r.success) throw bad(`invalid body: ${r.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ")}`, zodDetail(r.error));
  return r.data;
}

// ---- names ------------------------------------------------------------------------------------

/** User names are one repository path component, so "<name>/**" is their namespace. */
export const USER_NAME_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
export const RESERVED_USER_NAMES = new Set(["admin", "anonymous", "authenticated", "open", "robot", "token", "v2"]);

const userName = z
  .string()
  .min(2)
  .max(64)
  .regex(USER_NAME_RE, "user names are lower-case letters and digits, separated by single . _ or -")
  .refine((n) => !RESERVED_USER_NAMES.has(n), "this name is reserved");
const robotShort = z.string().min(1).max(64).regex(USER_NAME_RE, "robot names are lower-case letters and digits, separated by single . _ or -");
const password = z.string().min(8, "passwords need at least 8 characters").max(1024);

const createUserSchema = z.strictObject({ name: userName, password });
const passwordSchema = z.strictObject({ password });
const robotAccess = z.strictObject({
  repositories: z.union([z.string(), z.array(z.string()).min(1).max(64)]),
  actions: z.array(z.enum(["pull", "push", "delete"])).min(1),
});
const createRobotSchema = z
  .strictObject({
    owner: z.string().min(1).max(64),
    name: robotShort,
    description: z.string().max(1000).optional(),
    expiresInSeconds: z.number().int().min(60).max(10 * 366 * 86400).optional(),
    expiresAt: z.number().int().positive().optional(),
    access: z.array(robotAccess).max(32).optional(),
  })
  .refine((r) => !(r.expiresAt !== undefined && r.expiresInSeconds !== undefined), { message: "give expiresAt or expiresInSeconds, not both" });

// ---- authentication ---------------------------------------------------------------------------

/** The admin gate: the admin API's, also mounted in front of /_bench (src/app.ts). */
export async function requireAdmin(c: Ctx, next: () => Promise<void>) {
  const cfg = configOf(c);
  const need = { type: "registry", name: "admin", actions: ["*"] };
  const challenge = { "WWW-Authenticate": `${challengeHeader(cfg, need)}, Basic realm="cloister admin"` };
  const header = c.req.header("Authorization");
  const token = bearerToken(header);
  const basic = parseBasic(header);
  if (token) {
    const v = await verifyJwt<AccessClaims>(token, await signingKeysFor(c, cfg), cfg.service, "access");
    if (!v.ok) throw oci("UNAUTHORIZED", `invalid token (${v.reason})`, undefined, 401, challenge);
    if (!accessCovers(v.claims.access, "registry", "admin", ["*"])) throw oci("DENIED", "the token does not grant registry:admin:*", undefined, 403);
    const p = principalFromId(v.claims.sub);
    if (!p) throw oci("UNAUTHORIZED", "invalid token (subject)", undefined, 401, challenge);
    setAuth(c, { principal: p, via: "bearer", access: v.claims.access });
    return next();
  }
  if (basic) {
    const r = await login(c, cfg, basic.username, basic.password);
    if (!r.ok) {
      if (r.status === 429) throw throttled(r.retryAfter, r.message);
      throw oci("UNAUTHORIZED", r.message, undefined, 401, challenge);
    }
    setAuth(c, { principal: r.principal, via: "basic" });
    const d = evaluate(await rulesFor(c), subjectOf(r.principal), "admin", null);
    if (!d.allowed) throw oci("DENIED", `${r.principal.name} may not use the admin API`, undefined, 403);
    return next();
  }
  if (cfg.mode === "open" && cfg.adminPassword === null) {
    // Local development without ADMIN_PASSWORD: the admin API is as open as the registry.
    setAuth(c, { principal: OPEN, via: "open" });
    return next();
  }
  throw oci("UNAUTHORIZED", "the admin API needs credentials of an account holding the admin action", undefined, 401, challenge);
}

// ---- routes -----------------------------------------------------------------------------------

export const adminRoutes = new Hono<any>();

adminRoutes.onError((err) => {
  if (err instanceof OciError) return err.toResponse();
  console.error("cloister admin API error", err instanceof Error ? err.stack : err);
  return oci("INTERNAL", "admin API error").toResponse();
});
adminRoutes.notFound((c) => notFound(`no admin route for ${c.req.method} ${new URL(c.req.url).pathname}`).toResponse());

adminRoutes.use("*", async (c, next) => {
  try {
    await requireAdmin(c, () => next());
  } catch (err) {
    auditDenial(c, err, null, "registry:admin:*");
    throw err;
  }
});

// The audit log (docs/audit.md), behind the same admin gate.
adminRoutes.route("/audit", auditRoutes);
adminRoutes.route("/webhooks", webhookRoutes); // docs/audit.md "Webhooks"

adminRoutes.get("/whoami", (c) => c.json({ principal: authState(c)?.principal ?? null }));

// users
adminRoutes.get("/users", async (c) => {
  const users = await storeOf(c).listUsers();
  return c.json({ users, admin: { passwordConfigured: configOf(c).adminPassword !== null } });
});

adminRoutes.post("/users", async (c) => {
  const b = await body(c, createUserSchema);
  const hash = await hashPassword(b.password);
  if (!(await storeOf(c).createUser(b.name, hash))) throw conflict(`user ${b.name} exists`);
  await record(c.env, { action: "user.create", outcome: { status: 201 }, details: { user: b.name } });
  return c.json({ name: b.name }, 201);
});

function userParam(c: Ctx): string {
  const name = c.req.param("name") ?? "";
  if (name === "admin") throw bad("the admin account is configured by the ADMIN_PASSWORD secret, not through this API");
  if (!USER_NAME_RE.test(name) || name.length > 64) throw bad(`invalid user name ${JSON.stringify(name.slice(0, 80))}`);
  return name;
}

adminRoutes.get("/users/:name", async (c) => {
  const u = await storeOf(c).getUser(userParam(c));
  if (!u) throw notFound("no such user");
  return c.json({ ...u, robots: await storeOf(c).listRobots(u.name) });
});

adminRoutes.delete("/users/:name", async (c) => {
  const r = await storeOf(c).deleteUser(userParam(c));
  if (!r.deleted) throw notFound("no such user");
  await record(c.env, { action: "user.delete", details: { user: c.req.param("name"), revokedRobots: r.robots } });
  return c.json({ deleted: true, revokedRobots: r.robots });
});

adminRoutes.put("/users/:name/password", async (c) => {
  const name = userParam(c);
  const b = await body(c, passwordSchema);
  if (!(await storeOf(c).setPassword(name, await hashPassword(b.password)))) throw notFound("no such user");
  await record(c.env, { action: "user.password", outcome: { status: 204 }, details: { user: name } });
  return c.body(null, 204);
});

// sign-in locks
// Per client address (the 100 most recent), plus the account-wide failure count and delay.
adminRoutes.get("/locks/:account", async (c) => c.json(await storeOf(c).throttleState(c.req.param("account"))));
adminRoutes.delete("/locks/:account", async (c) => {
  await storeOf(c).unlock(c.req.param("account"));
  await record(c.env, { action: "lock.unlock", outcome: { status: 204 }, details: { account: c.req.param("account").slice(0, 256) } });
  return c.body(null, 204);
});

// robots
adminRoutes.get("/robots", async (c) => {
  const owner = c.req.query("owner");
  return c.json({ robots: await storeOf(c).listRobots(owner || undefined) });
});

adminRoutes.post("/robots", async (c) => {
  const b = await body(c, createRobotSchema);
  if (b.owner !== "admin" && !USER_NAME_RE.test(b.owner)) throw bad("owner must be an existing user or admin");
  const short = `${b.owner}+${b.name}`;
  const subject = `robot:${short}`;
  const rules: { id: string; rule: string }[] = [];
  for (const [i, a] of (b.access ?? []).entries()) {
    const r = accessRuleSchema.safeParse({
      id: `robot:${short}:${i}`,
      effect: "allow",
      subjects: [subject],
      actions: a.actions,
      repositories: a.repositories,
      description: `created with robot$${short}`,
    });
    if (!r.success) throw bad(`invalid access[${i}]: ${r.error.issues.map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")}`, zodDetail(r.error));
    rules.push({ id: r.data.id, rule: JSON.stringify(r.data) });
  }
  const t = Math.floor(Date.now() / 1000);
  const expiresAt = b.expiresAt ?? (b.expiresInSeconds !== undefined ? t + b.expiresInSeconds : null);
  if (expiresAt !== null && expiresAt <= t) throw bad("expiresAt is in the past");
  const secret = `cloister_${bytesToBase64url(randomBytes(32))}`;
  const res = await storeOf(c).createRobot({
    name: short,
    owner: b.owner,
    secretSha256: await sha256Hex(secret),
    description: b.description ?? null,
    expiresAt,
    rules,
  });
  if (!res.ok) {
    if (res.reason === "owner-unknown") throw bad(`owner ${b.owner} is not a user`);
    if (res.reason === "exists") throw conflict(`robot$${short} exists`);
    throw conflict(`policy rule ${res.detail} exists`);
  }
  // The secret is shown here once; only its SHA-256 is stored (and never audited).
  await record(c.env, { action: "robot.create", outcome: { status: 201 }, details: { robot: `robot$${short}`, owner: b.owner, expiresAt, rules: rules.map((r) => r.id) } });
  return c.json({ ...res.robot, secret }, 201, { "Cache-Control": "no-store" });
});

adminRoutes.delete("/robots/:account", async (c) => {
  const raw = c.req.param("account");
  const short = raw.startsWith("robot$") ? raw.slice(6) : raw;
  if (!/^[a-z0-9._-]{1,64}\+[a-z0-9._-]{1,64}$/.test(short)) throw bad("robot accounts are named robot$<owner>+<name>");
  if (!(await storeOf(c).deleteRobot(short))) throw notFound("no such robot");
  await record(c.env, { action: "robot.delete", details: { robot: `robot$${short}` } });
  return c.json({ revoked: `robot$${short}` });
});

// policies
function parseRuleOrBad(input: unknown): Rule {
  try {
    return parseRule(input);
  } catch (e) {
    if (e instanceof z.ZodError) throw bad(`invalid rule: ${e.issues.map((i) => `${i.path.join(".") || "(rule)"}: ${i.message}`).join("; ")}`, zodDetail(e));
    throw bad("invalid rule");
  }
}

adminRoutes.get("/policies", async (c) => {
  const stored = await storeOf(c).listRules();
  return c.json({ builtin: BUILTIN_RULES, rules: stored.map((s) => ({ ...(JSON.parse(s.rule) as object), createdAt: s.createdAt, updatedAt: s.updatedAt, robot: s.robot ? `robot$${s.robot}` : null })) });
});

adminRoutes.get("/policies/:id", async (c) => {
  const id = c.req.param("id");
  const b = BUILTIN_RULES.find((r) => r.id === id);
  if (b) return c.json({ ...b, builtin: true });
  const s = await storeOf(c).getRule(id);
  if (!s) throw notFound("no such rule");
  return c.json({ ...(JSON.parse(s.rule) as object), createdAt: s.createdAt, updatedAt: s.updatedAt, robot: s.robot ? `robot$${s.robot}` : null });
});

adminRoutes.post("/policies", async (c) => {
  const input = await body(c, z.record(z.string(), z.unknown()));
  const rule = parseRuleOrBad(input);
  if (isBuiltinId(rule.id)) throw bad('ids starting with "builtin:" are reserved');
  if (rule.id.startsWith("robot:")) throw bad('ids starting with "robot:" are reserved for rules created with robots');
  if (!(await storeOf(c).putRule(rule.id, JSON.stringify(rule), "create"))) throw conflict(`rule ${rule.id} exists (use PUT /admin/policies/${rule.id})`);
  await record(c.env, { action: "policy.create", outcome: { status: 201 }, details: { rule } });
  return c.json(rule, 201);
});

adminRoutes.put("/policies/:id", async (c) => {
  const id = c.req.param("id");
  if (isBuiltinId(id)) throw bad("built-in rules cannot be changed; add a deny rule to narrow them");
  const input = await body(c, z.record(z.string(), z.unknown()));
  if (input.id !== undefined && input.id !== id) throw bad("the id in the body differs from the id in the path");
  const rule = parseRuleOrBad({ ...input, id });
  if (!(await storeOf(c).putRule(id, JSON.stringify(rule), "replace"))) throw notFound("no such rule (create it with POST /admin/policies)");
  await record(c.env, { action: "policy.update", details: { rule } });
  return c.json(rule);
});

adminRoutes.delete("/policies/:id", async (c) => {
  const id = c.req.param("id");
  if (isBuiltinId(id)) throw bad("built-in rules cannot be deleted; add a deny rule to narrow them");
  if (!(await storeOf(c).deleteRule(id))) throw notFound("no such rule");
  await record(c.env, { action: "policy.delete", outcome: { status: 204 }, details: { id } });
  return c.body(null, 204);
});

adminRoutes.get("/explain", async (c) => {
  const subjectText = c.req.query("subject") ?? "";
  const action = c.req.query("action") ?? "";
  const repository = c.req.query("repository") || null;
  const subject = parseSubject(subjectText);
  if (!subject) throw bad('subject must be "anonymous", "user:<name>" or "robot:<owner>+<name>"');
  if (!(ACTIONS as readonly string[]).includes(action)) throw bad(`action must be one of ${ACTIONS.join(", ")}`);
  const registryWide = REGISTRY_ACTIONS.includes(action as Action);
  if (!registryWide && repository === null) throw bad(`action ${action} needs repository=`);
  if (repository !== null && !isValidName(repository)) throw bad("repository is not a valid repository name");
  const rules = await rulesFor(c);
  const d = evaluate(rules, subject, action as Action, registryWide ? null : repository);
  return c.json({
    subject: subjectText,
    action,
    repository: registryWide ? null : repository,
    allowed: d.allowed,
    reason: d.reason,
    deciding: d.deciding,
    matched: d.matched,
    // Pulls of manifests also need these signatures (docs/signatures.md); links say where referrers are merged from.
    // signaturesCountFor: the image repositories where a signature pushed here is recorded (reverse links).
    ...(action === "pull" && repository !== null ? { signatureGates: signatureGatesFor(rules, repository), signatureRepositories: linkedRepositories(rules, repository, isValidName), signaturesCountFor: reverseLinkedRepositories(rules, repository, isValidName) } : {}),
  });
});

// token signing keys
adminRoutes.get("/keys", async (c) => {
  const cfg = configOf(c);
  if (cfg.signingKeys) return c.json({ source: "TOKEN_SIGNING_KEYS", keys: cfg.signingKeys.map((k, i) => ({ kid: k.kid, signing: i === 0 })) });
  const keys = await storeOf(c).signingKeys();
  return c.json({ source: "store", keys: keys.map((k, i) => ({ kid: k.kid, createdAt: k.createdAt, signing: i === 0 })) });
});

adminRoutes.post("/keys/rotate", async (c) => {
  if (configOf(c).signingKeys) throw conflict("keys come from TOKEN_SIGNING_KEYS: rotate by editing that secret (add the new key first)");
  const kid = await storeOf(c).rotateKey();
  await record(c.env, { action: "key.rotate", outcome: { status: 201 }, details: { kid } });
  return c.json({ kid }, 201);
});

adminRoutes.delete("/keys/:kid", async (c) => {
  if (configOf(c).signingKeys) throw conflict("keys come from TOKEN_SIGNING_KEYS: remove a key by editing that secret");
  const r = await storeOf(c).deleteKey(c.req.param("kid"));
  if (r === "unknown") throw notFound("no such key");
  if (r === "last") throw conflict("the last signing key cannot be deleted; rotate first");
  await record(c.env, { action: "key.delete", outcome: { status: 204 }, details: { kid: c.req.param("kid").slice(0, 128) } });
  return c.body(null, 204);
});

// index migration and blob holders (owned by the index, docs/adr/0008)
// ---- signature verification keys (docs/signatures.md) ----------------------------------------

/** Most registered verification keys. */
export const MAX_TRUST_KEYS = 100;
const trustKeySchema = z.strictObject({
  name: z.string().min(1).max(64).regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/, "key names are lower-case letters and digits, separated by single . _ or -"),
  publicKey: z.string().min(1).max(4096),
});

adminRoutes.get("/trust-keys", async (c) => {
  const keys = await storeOf(c).trustKeys();
  return c.json({ keys: keys.map((k) => ({ name: k.name, algorithm: k.algorithm, publicKey: k.pem, createdAt: new Date(k.createdAt).toISOString() })) });
});

adminRoutes.post("/trust-keys", async (c) => {
  const b = await body(c, trustKeySchema);
  let algorithm: string;
  try {
    algorithm = (await importPublicKeyPem(b.publicKey)).algorithm;
  } catch (e) {
    throw bad(`publicKey: ${(e as Error).message}`);
  }
  const r = await storeOf(c).addTrustKey(b.name, algorithm, b.publicKey.trim() + "\n", MAX_TRUST_KEYS);
  if (r === "exists") throw conflict(`key ${b.name} exists (delete it first to replace it)`);
  if (r === "full") throw bad(`at most ${MAX_TRUST_KEYS} keys may be registered (MAX_TRUST_KEYS)`);
  if (typeof r === "object") throw conflict(`this public key is already registered as ${r.sameKeyAs}: a key has one name`);
  await record(c.env, { action: "trustkey.create", outcome: { status: 201 }, details: { name: b.name, algorithm } });
  return c.json({ name: b.name, algorithm }, 201);
});

// Deleting a key revokes the attestation rows it verified, in every repository, before answering
// (docs/signatures.md). Repeating the DELETE finishes a sweep a crash or the per-request cap cut short.
adminRoutes.delete("/trust-keys/:name", async (c) => {
  const name = c.req.param("name").slice(0, 64);
  const gone = await storeOf(c).deleteTrustKey(name);
  const sweep = await revokeKey(c as unknown as Parameters<typeof revokeKey>[0], name);
  if (!gone && sweep.repositories === 0) throw notFound("no such key");
  if (gone) await record(c.env, { action: "trustkey.delete", outcome: { status: sweep.pending ? 202 : 204 }, details: { name, revokedIn: sweep.repositories, rows: sweep.rows } });
  if (sweep.pending) return c.json({ name, revokedIn: sweep.repositories, pending: true, message: `revoked in ${sweep.repositories} repositories; more remain: repeat this DELETE` }, 202);
  return c.body(null, 204);
});

mountIndexAdminRoutes(adminRoutes);
mountGcAdminRoutes(adminRoutes);
mountSnapshotAdminRoutes(adminRoutes);
mountProxyAdminRoutes(adminRoutes);
