// Snapshot and restore of the index (docs/adr/0016), mounted by src/auth/admin-routes.ts behind
// the admin check. Every page is bounded, so nothing unbounded crosses a Durable Object call:
//   GET  /admin/snapshot/accounts?kind=users|rules|robots&after=&n=   (n ≤ 500; no secrets)
//   GET  /admin/snapshot/blobs?after=&n=                               (n ≤ 500; BlobStore rows)
//   GET  /admin/snapshot/repositories?last=&n=                         (n ≤ 1000; names)
//   GET  /admin/snapshot/repositories/<name>?cursor=<json>             (≤ 200 rows or ~4 MB per page)
//   GET  /admin/restore                                                 restore state
//   POST /admin/restore  {"resume": bool}   → 201 {id}; 409 unless the registry is empty
//   POST /admin/restore/<id>/records  {"records": [...]}  (≤ 1000 records, ≤ 8 MiB, ≤ 100 repositories)
//   POST /admin/restore/<id>/finish
// Blob bytes are not in a snapshot: a restore goes into a registry whose bucket holds them, and
// every blob row is checked against its R2 object before it is written.
import type { Hono } from "hono";
import { z } from "zod";
import type { Env } from "../env";
import { accountStoreFor, blobShards, blobStoreShard, catalogShard, catalogShards, groupByBlobShard, trustStoreFor } from "../stores";
import { SNAPSHOT_PAGE } from "../stores/account-store";
import { GC_SCAN_ROWS, type StoredBlob } from "../stores/blob-store";
import { RESTORE_ROWS, SNAPSHOT_TABLES, type SnapshotTable } from "../stores/trust-store";
import { isValidName } from "../oci/grammar";
import { MAX_REFERRER_ANNOTATION_BYTES } from "../oci/limits";
import { parseRule, isBuiltinId } from "../auth/policy";
import { hashPassword, randomBytes } from "../auth/crypto";
import { bytesToBase64url } from "../util/encoding";
import { RESERVED_USER_NAMES, USER_NAME_RE } from "../auth/admin-routes";
import { record } from "../audit/record";

/** Repository names per page of /admin/snapshot/repositories. */
const REPO_PAGE = 1000;
/** A restore call: at most this many records and bytes of JSON. */
export const RESTORE_MAX_RECORDS = 1000;
export const RESTORE_MAX_BYTES = 8 * 1024 * 1024;
/** Repositories per restore call: each is a TrustStore call plus its BlobStore holds (subrequests). */
export const RESTORE_MAX_REPOSITORIES = 100;
/** Concurrent R2 HEADs while checking restored blob rows. */
const HEAD_CONCURRENCY = 32;

function apiError(code: string, message: string, status: number, detail: unknown = null): Response {
  return new Response(JSON.stringify({ errors: [{ code, message, detail }] }), { status, headers: { "Content-Type": "application/json; charset=utf-8" } });
}

const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{1,256}$/;
/** Object keys the registry writes: blobs under data/, manifests under manifests/. */
const R2_KEY_RE = /^(?:data|manifests)\/[A-Za-z0-9._:\/-]{1,500}$/;

function int(v: string | undefined, name: string, max: number, dflt: number): number | Response {
  if (v === undefined || v === "") return dflt;
  if (!/^\d{1,9}$/.test(v) || Number(v) < 1) return apiError("BAD_REQUEST", `${name} must be an integer from 1 to ${max}`, 400);
  return Math.min(Number(v), max);
}

function cursorParam(v: string | undefined): string | Response {
  if (v === undefined) return "";
  if (v.length > 512) return apiError("BAD_REQUEST", "after is longer than 512 characters", 400);
  return v;
}

/** Schemas of a snapshot's records; built on mount (the user-name rules come from the module that mounts these routes). */
function recordSchemas() {
  const digest = z.string().regex(DIGEST_RE, "a digest");
  const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
  const size = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
  const short = z.string().max(1024).nullable();
  const rowSchemas: Record<SnapshotTable, z.ZodType<Record<string, string | number | null>>> = {
    repos: z.strictObject({ created_at: time, needs_backfill: z.number().int().min(0).max(1) }),
    refs: z.strictObject({ manifest: digest, digest }),
    members: z.strictObject({ digest, kind: z.enum(["blob", "manifest"]), size, r2_key: z.string().max(1024), media_type: short, created_at: time, refs_indexed: z.number().int().min(0).max(1) }),
    tags: z.strictObject({ tag: z.string().regex(/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/, "a tag"), digest, updated_at: time }),
    referrers: z.strictObject({ subject: digest, digest, media_type: z.string().max(1024), size, artifact_type: short, annotations: z.string().max(MAX_REFERRER_ANNOTATION_BYTES).nullable(), created_at: time }),
  };
  const rows = z.strictObject({
    type: z.literal("rows"),
    repository: z.string().max(255).refine(isValidName, "a repository name"),
    table: z.enum(SNAPSHOT_TABLES.map((t) => t.table) as [SnapshotTable, ...SnapshotTable[]]),
    rows: z.array(z.record(z.string(), z.unknown())).max(RESTORE_ROWS),
  });
  const user = z.strictObject({ type: z.literal("user"), name: z.string().min(2).max(64).regex(USER_NAME_RE, "a user name").refine((n) => !RESERVED_USER_NAMES.has(n), "a reserved name"), createdAt: time, updatedAt: time });
  const rule = z.strictObject({ type: z.literal("rule"), rule: z.record(z.string(), z.unknown()), robot: z.string().max(200).nullable().optional(), createdAt: time, updatedAt: time });
  const blob = z.strictObject({ type: z.literal("blob"), digest, size, r2Key: z.string().regex(R2_KEY_RE, "an object key of this registry (data/… or manifests/…)"), contentSha256: z.string().regex(/^[0-9a-f]{64}$/) });
  const body = z.strictObject({ records: z.array(z.discriminatedUnion("type", [rows, user, rule, blob])).max(RESTORE_MAX_RECORDS) });
  return { rowSchemas, body };
}

async function isEmptyRegistry(env: Env): Promise<string | null> {
  for (const shard of catalogShards()) if ((await catalogShard(env, shard).page(1, null)).items.length) return "it lists repositories";
  for (const shard of blobShards()) if (!(await blobStoreShard(env, shard).isEmpty())) return "it stores blobs";
  if (!(await accountStoreFor(env).isEmpty())) return "it has users, robots or policy rules";
  return null;
}

/** The first catalog shard keeps the restore's state (one restore per registry). */
const restoreKeeper = (env: Env) => catalogShard(env, catalogShards()[0]);

export function mountSnapshotAdminRoutes(app: Hono<any>): void {
  const schemas = recordSchemas();

  app.get("/snapshot/accounts", async (c) => {
    const kind = c.req.query("kind");
    if (kind !== "users" && kind !== "rules" && kind !== "robots") return apiError("BAD_REQUEST", 'kind must be "users", "rules" or "robots"', 400);
    const n = int(c.req.query("n"), "n", SNAPSHOT_PAGE, SNAPSHOT_PAGE);
    if (n instanceof Response) return n;
    const after = cursorParam(c.req.query("after"));
    if (after instanceof Response) return after;
    return c.json(await accountStoreFor(c.env as Env).snapshotPage(kind, after, n));
  });

  app.get("/snapshot/blobs", async (c) => {
    const n = int(c.req.query("n"), "n", GC_SCAN_ROWS, GC_SCAN_ROWS);
    if (n instanceof Response) return n;
    const after = cursorParam(c.req.query("after"));
    if (after instanceof Response) return after;
    // One shard today; with several, the cursor would name the shard too (src/stores/index.ts).
    const shards = blobShards();
    if (shards.length !== 1) return apiError("UNSUPPORTED", "snapshots of a sharded BlobStore are not implemented", 501);
    return c.json(await blobStoreShard(c.env as Env, shards[0]).snapshotBlobs(after, n));
  });

  app.get("/snapshot/repositories", async (c) => {
    const n = int(c.req.query("n"), "n", REPO_PAGE, REPO_PAGE);
    if (n instanceof Response) return n;
    const last = cursorParam(c.req.query("last"));
    if (last instanceof Response) return last;
    const items: string[] = [];
    let next: string | null = null;
    for (const shard of catalogShards()) {
      if (items.length >= n) break;
      const p = await catalogShard(c.env as Env, shard).page(n - items.length, last || null);
      items.push(...p.items);
      next = p.next;
    }
    return c.json({ items, next });
  });

  app.get("/snapshot/repositories/*", async (c) => {
    let name: string;
    try {
      name = decodeURIComponent(new URL(c.req.url).pathname.replace(/^.*?\/snapshot\/repositories\//, ""));
    } catch {
      return apiError("BAD_REQUEST", "the repository name is not valid percent-encoding", 400);
    }
    if (!isValidName(name)) return apiError("BAD_REQUEST", `invalid repository name "${name.slice(0, 100)}"`, 400);
    let cursor = { table: 0, after: null as (string | number)[] | null };
    const raw = c.req.query("cursor");
    if (raw) {
      const parsed = z.strictObject({ table: z.number().int().min(0).max(SNAPSHOT_TABLES.length - 1), after: z.array(z.union([z.string().max(512), z.number()])).max(2).nullable() })
        .safeParse((() => { try { return JSON.parse(raw); } catch { return null; } })());
      // The key values must match the table's key columns one for one (they become SQL parameters).
      if (!parsed.success || (parsed.data.after !== null && parsed.data.after.length !== SNAPSHOT_TABLES[parsed.data.table].keys.length)) {
        return apiError("BAD_REQUEST", "invalid cursor (use the `next` value of the previous page)", 400);
      }
      cursor = parsed.data;
    }
    const batch = await trustStoreFor(c.env as Env, name).snapshotRows(name, cursor);
    if (!batch) return apiError("NAME_UNKNOWN", `repository ${name} is not known to this registry`, 404);
    return c.json({ repository: name, parts: batch.parts, next: batch.next });
  });

  app.get("/restore", async (c) => c.json({ restore: await restoreKeeper(c.env as Env).restoreState() }));

  app.post("/restore", async (c) => {
    const env = c.env as Env;
    const text = await c.req.text();
    let resume = false;
    if (text.trim()) {
      const p = z.strictObject({ resume: z.boolean().default(false) }).safeParse((() => { try { return JSON.parse(text); } catch { return null; } })());
      if (!p.success) return apiError("BAD_REQUEST", 'expected {"resume": boolean}', 400);
      resume = p.data.resume;
    }
    const existing = await restoreKeeper(env).restoreState();
    if (!(resume && existing?.state === "running")) {
      const why = await isEmptyRegistry(env);
      if (why) return apiError("CONFLICT", `restore goes only into an empty registry, and this one is not: ${why}`, 409);
    }
    const r = await restoreKeeper(env).restoreBegin(crypto.randomUUID(), resume);
    if (!r.ok) {
      const msg = r.reason === "running"
        ? `restore ${r.restore!.id} is running: resume it (cloister restore --resume) or let it finish`
        : r.reason === "restored" ? "this registry was restored already; restore goes only into an empty registry" : "restore goes only into an empty registry, and this one lists repositories";
      return apiError("CONFLICT", msg, 409, r.restore);
    }
    await record(env, { action: "restore.begin", outcome: { status: 201 }, details: { restore: r.restore.id, resume } });
    return c.json(r.restore, 201);
  });

  app.post("/restore/:id/records", async (c) => {
    const env = c.env as Env;
    const state = await restoreKeeper(env).restoreState();
    if (!state || state.id !== c.req.param("id") || state.state !== "running") return apiError("NOT_FOUND", "no such running restore (start one with POST /admin/restore)", 404);
    if (!(c.req.header("Content-Type") ?? "").toLowerCase().startsWith("application/json")) return apiError("BAD_REQUEST", "send a JSON body with Content-Type: application/json", 400);
    const declared = Number(c.req.header("Content-Length") ?? "0");
    if (declared > RESTORE_MAX_BYTES) return apiError("BAD_REQUEST", `body too large (${RESTORE_MAX_BYTES} bytes max)`, 400);
    const text = await c.req.text();
    if (text.length > RESTORE_MAX_BYTES) return apiError("BAD_REQUEST", `body too large (${RESTORE_MAX_BYTES} bytes max)`, 400);
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      return apiError("BAD_REQUEST", "body is not valid JSON", 400);
    }
    const parsed = schemas.body.safeParse(data);
    if (!parsed.success) {
      return apiError("BAD_REQUEST", `invalid records: ${parsed.error.issues.slice(0, 5).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`, 400, parsed.error.issues.slice(0, 20).map((i) => ({ path: i.path.join("."), message: i.message })));
    }
    const records = parsed.data.records;
    // Validate everything before writing anything: a refused call writes nothing.
    const users: { name: string; createdAt: number; updatedAt: number }[] = [];
    const rules: { id: string; rule: string; createdAt: number; updatedAt: number }[] = [];
    const blobs: StoredBlob[] = [];
    const byRepo = new Map<string, { table: SnapshotTable; rows: Record<string, string | number | null>[] }[]>();
    let skippedRobotRules = 0;
    let rowCount = 0;
    for (const [i, r] of records.entries()) {
      if (r.type === "user") users.push({ name: r.name, createdAt: r.createdAt, updatedAt: r.updatedAt });
      else if (r.type === "rule") {
        // Robots are not restored (their secrets are not in a snapshot), nor are the rules made with them.
        if (r.robot) {
          skippedRobotRules++;
          continue;
        }
        let rule;
        try {
          rule = parseRule(r.rule);
        } catch {
          return apiError("BAD_REQUEST", `records.${i}: invalid policy rule`, 400);
        }
        if (isBuiltinId(rule.id) || rule.id.startsWith("robot:")) return apiError("BAD_REQUEST", `records.${i}: rule id ${rule.id} is reserved`, 400);
        rules.push({ id: rule.id, rule: JSON.stringify(rule), createdAt: r.createdAt, updatedAt: r.updatedAt });
      } else if (r.type === "blob") blobs.push({ digest: r.digest, size: r.size, r2Key: r.r2Key, contentSha256: r.contentSha256 });
      else {
        const rows: Record<string, string | number | null>[] = [];
        for (const [j, row] of r.rows.entries()) {
          const p = schemas.rowSchemas[r.table].safeParse(row);
          if (!p.success) return apiError("BAD_REQUEST", `records.${i}.rows.${j}: not a ${r.table} row: ${p.error.issues.slice(0, 3).map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")}`, 400);
          rows.push(p.data);
        }
        rowCount += rows.length;
        const list = byRepo.get(r.repository) ?? [];
        list.push({ table: r.table, rows });
        byRepo.set(r.repository, list);
      }
    }
    if (users.length + rules.length > SNAPSHOT_PAGE) return apiError("BAD_REQUEST", `at most ${SNAPSHOT_PAGE} users and rules per call`, 400);
    if (blobs.length > GC_SCAN_ROWS) return apiError("BAD_REQUEST", `at most ${GC_SCAN_ROWS} blob records per call`, 400);
    if (rowCount > RESTORE_ROWS) return apiError("BAD_REQUEST", `at most ${RESTORE_ROWS} repository rows per call`, 400);
    if (byRepo.size > RESTORE_MAX_REPOSITORIES) return apiError("BAD_REQUEST", `at most ${RESTORE_MAX_REPOSITORIES} repositories per call`, 400);

    const out = { users: 0, rules: 0, skippedRobotRules, blobs: 0, rows: 0, missingBytes: [] as string[], missing: [] as { repository: string; digests: string[] }[] };
    if (users.length || rules.length) {
      // One hash of a random secret nobody knows for the batch: restored users sign in once the admin sets a password.
      const hash = users.length ? await hashPassword(bytesToBase64url(randomBytes(32))) : "";
      const r = await accountStoreFor(env).restoreAccounts(users, rules, hash);
      out.users = r.users;
      out.rules = r.rules;
    }
    if (blobs.length) {
      // Only rows whose bytes are in this bucket, at the snapshot's size, are written.
      const found: StoredBlob[] = [];
      for (let i = 0; i < blobs.length; i += HEAD_CONCURRENCY) {
        const slice = blobs.slice(i, i + HEAD_CONCURRENCY);
        const heads = await Promise.all(slice.map((b) => env.BUCKET.head(b.r2Key)));
        slice.forEach((b, k) => (heads[k] && heads[k]!.size === b.size ? found.push(b) : out.missingBytes.push(b.digest)));
      }
      for (const g of groupByBlobShard(env, found.map((b) => b.digest))) {
        const set = new Set(g.digests);
        out.blobs += await g.store.restoreBlobs(found.filter((b) => set.has(b.digest)));
      }
    }
    for (const [repo, parts] of byRepo) {
      const r = await trustStoreFor(env, repo).restoreRows(repo, parts);
      out.rows += r.rows;
      if (r.missing.length) out.missing.push({ repository: repo, digests: r.missing });
    }
    return c.json(out);
  });

  app.post("/restore/:id/finish", async (c) => {
    const env = c.env as Env;
    const done = await restoreKeeper(env).restoreFinish(c.req.param("id"));
    if (!done) return apiError("NOT_FOUND", "no such restore", 404);
    await record(env, { action: "restore.finish", outcome: { status: 200 }, details: { restore: done.id } });
    return c.json(done);
  });
}
