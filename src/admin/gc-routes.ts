// Admin routes for storage lifecycle (docs/adr/0011), mounted by src/auth/admin-routes.ts behind
// the admin check:
//   POST /admin/gc   {"dryRun": bool, "reconcile": bool} → 202 {id, run}; 409 while a run holds
//                    the lease or the index migration is unfinished
//   GET  /admin/gc   {state: "idle"|"running", current, history}
import type { Hono } from "hono";
import { z } from "zod";
import type { Env } from "../env";
import { gcCoordinator } from "../stores";

const startSchema = z.object({ dryRun: z.boolean().default(false), reconcile: z.boolean().default(false) }).strict();

function apiError(code: string, message: string, status: number, detail: unknown = null): Response {
  return new Response(JSON.stringify({ errors: [{ code, message, detail }] }), { status, headers: { "Content-Type": "application/json; charset=utf-8" } });
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
}
