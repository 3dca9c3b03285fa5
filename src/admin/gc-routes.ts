// Admin routes for storage lifecycle (docs/adr/0011), mounted by src/auth/admin-routes.ts behind
// the admin check:
//   POST /admin/gc   {"dryRun": bool, "reconcile": bool} → 202 {id, run}; 409 while a run holds
//                    the lease or the index migration is unfinished
//   GET  /admin/gc   {state: "idle"|"running", current, history}
//   GET  /admin/usage?n=&last=   registry-wide physical/logical bytes and dedupe ratio, plus a page
//                    (n ≤ 100, default 50) of repositories with their usage; Link for the next page
//   GET  /admin/usage/<repository>   logical bytes, blob/manifest/tag counts, last push
//   GET  /admin/retention             {rules: [...]}
//   PUT  /admin/retention  {"pattern", "keepLastTags", "keepTags", "untaggedOlderThanDays", "deleteOrphanReferrers", "unpulledDays"}
//   DELETE /admin/retention?pattern=…  → 204, 404 when no such rule
//   GET  /admin/quotas                {quotas: [{pattern, limitBytes, updatedAt, usedBytes, repositories}]}
//                    usedBytes: the namespace's total as its counter has it (src/gc/quotas.ts)
//   PUT  /admin/quotas   {"pattern": "team/**", "limitBytes": N}  set (upsert) a rule → 200 {quotas, seeded};
//                    a new rule first counts the repositories it matches ({counted, complete})
//   DELETE /admin/quotas?pattern=team/**   → 204, 404 when no such rule
import type { Hono } from "hono";
import { z } from "zod";
import type { Env } from "../env";
import { blobStoreShard, blobShards, catalogShard, catalogShards, gcCoordinator, quotaCounter, quotaStore, trustStoreFor } from "../stores";
import { seedQuota } from "../gc/quotas";
import { isValidName } from "../oci/grammar";
import { MAX_QUOTA_RULES, MAX_RETENTION_RULES } from "../gc/coordinator";
import { nextLink, parsePage } from "../oci/pagination";

/** Repositories per usage page (each is one call to its TrustStore). */
const USAGE_PAGE = 100;

/** Repository globs as the policy engine reads them: name characters plus "*" and "**". */
const quotaSchema = z.object({
  pattern: z.string().min(1).max(256).regex(/^[a-z0-9._\/*-]+$/, "a repository glob: lowercase name characters, '/', '*' and '**'"),
  limitBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
}).strict();

const glob = z.string().min(1).max(256).regex(/^[a-z0-9._\/*-]+$/, "a repository glob: lowercase name characters, '/', '*' and '**'");
const retentionSchema = z.object({
  pattern: glob,
  keepLastTags: z.number().int().min(0).max(1_000_000).nullable().default(null),
  keepTags: z.array(z.string().min(1).max(128).regex(/^[A-Za-z0-9_.*-]+$/, "a tag glob: tag characters and '*'")).max(50).default([]),
  untaggedOlderThanDays: z.number().min(0).max(36500).nullable().default(null),
  deleteOrphanReferrers: z.boolean().default(false),
  /** Manifests not pulled for D days go, with their tags (null: proxy namespaces' default, else keep). */
  unpulledDays: z.number().int().min(1).max(36500).nullable().default(null),
}).strict();

async function jsonBody<T extends z.ZodType>(c: { req: { text(): Promise<string> } }, schema: T, shape: string): Promise<z.output<T> | Response> {
  const text = await c.req.text();
  if (text.length > 16384) return apiError("BAD_REQUEST", "body too large (16 KiB max)", 400);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return apiError("BAD_REQUEST", `send JSON ${shape}`, 400);
  }
  const parsed = schema.safeParse(data);
  if (!parsed.success) return apiError("BAD_REQUEST", `expected ${shape}`, 400, parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })));
  return parsed.data;
}

const startSchema = z.object({ dryRun: z.boolean().default(false), reconcile: z.boolean().default(false) }).strict();

function apiError(code: string, message: string, status: number, detail: unknown = null): Response {
  return new Response(JSON.stringify({ errors: [{ code, message, detail }] }), { status, headers: { "Content-Type": "application/json; charset=utf-8" } });
}

/** The rules with each namespace's counted bytes and repositories (one call per rule, ≤ MAX_QUOTA_RULES). */
async function quotasWithUsage(env: Env) {
  const rules = await quotaStore(env).quotas();
  const used = await Promise.all(rules.map((r) => quotaCounter(env, r.pattern).quotaUsed()));
  return rules.map((r, i) => ({ ...r, ...used[i] }));
}

export function mountGcAdminRoutes(app: Hono<any>): void {
  app.post("/gc", async (c) => {
    const text = await c.req.text();
    if (text.length > 4096) return apiError("BAD_REQUEST", "body too large (4 KiB max)", 400);
    let data: unknown = {};
    if (text.trim() !== "") {
      if (!(c.req.header("Content-Type") ?? "").toLowerCase().startsWith("application/json")) {
        return apiError("BAD_REQUEST", "send a JSON body with Content-Type: application/json", 400);
      }
      try {
        data = JSON.parse(text);
      } catch {
        return apiError("BAD_REQUEST", "body is not valid JSON", 400);
      }
    }
    const parsed = startSchema.safeParse(data);
    if (!parsed.success) {
      return apiError("BAD_REQUEST", 'expected {"dryRun": boolean, "reconcile": boolean}', 400, parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })));
    }
    const r = await gcCoordinator(c.env as Env).start({ ...parsed.data, trigger: "admin" });
    if (!r.ok) return apiError("CONFLICT", r.message, 409, r.run ? { running: r.run.id } : null);
    return c.json({ id: r.run.id, run: r.run }, 202, { Location: "/admin/gc" });
  });

  app.get("/gc", async (c) => c.json(await gcCoordinator(c.env as Env).status()));

  app.get("/retention", async (c) => c.json({ rules: await gcCoordinator(c.env as Env).retentionRules() }));

  app.put("/retention", async (c) => {
    const body = await jsonBody(c, retentionSchema, '{"pattern": "<repository glob>", "keepLastTags": N, "keepTags": ["<tag glob>"], "untaggedOlderThanDays": D, "deleteOrphanReferrers": bool, "unpulledDays": D}');
    if (body instanceof Response) return body;
    const gc = gcCoordinator(c.env as Env);
    if (!(await gc.setRetention(body))) return apiError("CONFLICT", `at most ${MAX_RETENTION_RULES} retention rules`, 409);
    return c.json({ rules: await gc.retentionRules() });
  });

  app.delete("/retention", async (c) => {
    const pattern = c.req.query("pattern");
    if (!pattern) return apiError("BAD_REQUEST", "name the rule: DELETE /admin/retention?pattern=<glob>", 400);
    if (!(await gcCoordinator(c.env as Env).deleteRetention(pattern))) return apiError("NOT_FOUND", `no retention rule "${pattern.slice(0, 256)}"`, 404);
    return c.body(null, 204);
  });

  app.get("/quotas", async (c) => c.json({ quotas: await quotasWithUsage(c.env as Env) }));

  app.put("/quotas", async (c) => {
    const text = await c.req.text();
    if (text.length > 4096) return apiError("BAD_REQUEST", "body too large (4 KiB max)", 400);
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      return apiError("BAD_REQUEST", 'send JSON {"pattern": "<repository glob>", "limitBytes": <bytes>}', 400);
    }
    const parsed = quotaSchema.safeParse(data);
    if (!parsed.success) {
      return apiError("BAD_REQUEST", 'expected {"pattern": "<repository glob>", "limitBytes": <bytes>}', 400, parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })));
    }
    const env = c.env as Env;
    const { pattern, limitBytes } = parsed.data;
    const set = await quotaStore(env).setQuota(pattern, limitBytes);
    if (set === "full") return apiError("CONFLICT", `at most ${MAX_QUOTA_RULES} quota rules`, 409);
    // A new rule counts what its namespace already holds (a changed limit keeps the counts).
    let seeded: { counted: number; complete: boolean } | null = null;
    const counter = quotaCounter(env, pattern);
    if (set === "created") await counter.quotaReset();
    await counter.quotaSetLimit(limitBytes);
    if (set === "created") seeded = await seedQuota(env, pattern);
    return c.json({ quotas: await quotasWithUsage(env), seeded });
  });

  app.delete("/quotas", async (c) => {
    const pattern = c.req.query("pattern");
    if (!pattern) return apiError("BAD_REQUEST", "name the rule: DELETE /admin/quotas?pattern=<glob>", 400);
    if (!(await quotaStore(c.env as Env).deleteQuota(pattern))) return apiError("NOT_FOUND", `no quota rule "${pattern.slice(0, 256)}"`, 404);
    await quotaCounter(c.env as Env, pattern).quotaReset(true);
    return c.body(null, 204);
  });

  app.get("/usage", async (c) => {
    const env = c.env as Env;
    const url = new URL(c.req.url);
    const raw = url.searchParams.get("n");
    if (raw !== null && !/^\d+$/.test(raw)) return apiError("BAD_REQUEST", `n must be an integer from 0 to ${USAGE_PAGE}, got "${raw.slice(0, 20)}"`, 400);
    const page = parsePage(url, USAGE_PAGE);
    const n = page.n ?? 50;
    const totals = { blobs: 0, objects: 0, physicalBytes: 0, digestBytes: 0, heldBytes: 0 };
    for (const shard of blobShards()) {
      const u = await blobStoreShard(env, shard).usage();
      for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += u[k];
    }
    const names: string[] = [];
    let next: string | null = null;
    for (const shard of catalogShards()) {
      if (names.length >= n) break;
      const p = await catalogShard(env, shard).page(n - names.length, page.last);
      names.push(...p.items);
      next = p.next;
    }
    const repositories = (await Promise.all(names.map((r) => trustStoreFor(env, r).usage(r)))).filter((u) => u !== null);
    const headers: Record<string, string> = {};
    if (next !== null && names.length) headers.Link = nextLink("/admin/usage", { n: String(n), last: names[names.length - 1] });
    return c.json({
      physicalBytes: totals.physicalBytes,
      logicalBytes: totals.heldBytes,
      dedupeRatio: totals.physicalBytes > 0 ? totals.heldBytes / totals.physicalBytes : null,
      digests: totals.blobs,
      objects: totals.objects,
      repositories,
    }, 200, headers);
  });

  app.get("/usage/*", async (c) => {
    const env = c.env as Env;
    const name = decodeURIComponent(new URL(c.req.url).pathname.replace(/^.*?\/usage\//, ""));
    if (!isValidName(name)) return apiError("BAD_REQUEST", `invalid repository name "${name.slice(0, 100)}"`, 400);
    const u = await trustStoreFor(env, name).usage(name);
    if (!u) return apiError("NAME_UNKNOWN", `repository ${name} is not known to this registry`, 404);
    return c.json(u);
  });
}
