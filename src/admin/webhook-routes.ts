// /admin/webhooks: webhook endpoints, their delivery log and manual redelivery (docs/audit.md
// "Webhooks"). Mounted inside the admin API, so its admin gate applies. Validation is zod
// (src/webhooks/model.ts); the store is the Webhooks Durable Object. The secret is write-only.
//
//   POST   /admin/webhooks                 {url, events, repositories?, secret, enabled?, description?} → 201 endpoint
//   GET    /admin/webhooks                 {webhooks: [endpoint]}
//   GET    /admin/webhooks/:id             endpoint
//   PATCH  /admin/webhooks/:id             any of the fields above → 200 endpoint
//   DELETE /admin/webhooks/:id             204 (its delivery log goes with it)
//   GET    /admin/webhooks/:id/deliveries?limit=&cursor=   {deliveries: [...], next}
//   POST   /admin/webhooks/:id/deliveries/:delivery/redeliver   202 delivery
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { Env } from "../env";
import { OciError, withRequestId } from "../oci/errors";
import { webhooksFor } from "../stores";
import { record } from "../audit/record";
import { MAX_ENDPOINTS, endpointCreateSchema, endpointPatchSchema, type EndpointView } from "../webhooks/model";

type Ctx = Context<{ Bindings: Env }>;

/** Largest request body: an endpoint is a few short fields. */
const MAX_BODY = 16 * 1024;
const ID_RE = /^[0-9a-f-]{36}$/;

/** Admin-API error in the OCI envelope with the admin codes (BAD_REQUEST, NOT_FOUND, CONFLICT). */
class WebhookApiError extends OciError {
  constructor(readonly apiCode: string, message: string, status: number, detail?: unknown) {
    super("UNSUPPORTED", message, detail, status);
  }
  override toResponse(): Response {
    return new Response(JSON.stringify({ errors: [{ code: this.apiCode, message: this.message, detail: withRequestId(this.detail) }] }), {
      status: this.status,
      headers: { "Content-Type": "application/json; charset=utf-8" },
    });
  }
}
const bad = (message: string, detail?: unknown) => new WebhookApiError("BAD_REQUEST", message, 400, detail);
const notFound = (message: string) => new WebhookApiError("NOT_FOUND", message, 404);

async function jsonBody<T extends z.ZodType>(c: Ctx, schema: T): Promise<z.output<T>> {
  if (!(c.req.header("Content-Type") ?? "").toLowerCase().startsWith("application/json")) throw bad("send a JSON body with Content-Type: application/json");
  const text = await c.req.text();
  if (text.length > MAX_BODY) throw bad(`body too large (${MAX_BODY / 1024} KiB max)`);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw bad("body is not valid JSON");
  }
  const r = schema.safeParse(data);
  if (!r.success) {
    throw bad(
      `invalid body: ${r.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ")}`,
      r.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
    );
  }
  return r.data;
}

function idOf(c: Ctx, name = "id"): string {
  const id = c.req.param(name) ?? "";
  if (!ID_RE.test(id)) throw notFound(`no webhook ${name === "id" ? "endpoint" : "delivery"} ${id.slice(0, 64)}`);
  return id;
}

/** What the audit log keeps of an endpoint: never the secret, and only the URL's origin (paths often hold tokens). */
function auditDetails(ep: EndpointView) {
  return { id: ep.id, origin: new URL(ep.url).origin, events: ep.events, repositories: ep.repositories, enabled: ep.enabled };
}

export const webhookRoutes = new Hono<{ Bindings: Env }>();

webhookRoutes.post("/", async (c) => {
  const input = await jsonBody(c, endpointCreateSchema);
  const r = await webhooksFor(c.env).createEndpoint(input);
  if (!r.ok) throw new WebhookApiError("CONFLICT", `at most ${MAX_ENDPOINTS} webhook endpoints; delete one first`, 409);
  await record(c.env, { action: "webhook.create", outcome: { status: 201 }, details: auditDetails(r.endpoint) });
  return c.json(r.endpoint, 201);
});

webhookRoutes.get("/", async (c) => c.json({ webhooks: await webhooksFor(c.env).listEndpoints() }));

webhookRoutes.get("/:id", async (c) => {
  const ep = await webhooksFor(c.env).getEndpoint(idOf(c));
  if (!ep) throw notFound("no such webhook endpoint");
  return c.json(ep);
});

webhookRoutes.patch("/:id", async (c) => {
  const id = idOf(c);
  const patch = await jsonBody(c, endpointPatchSchema);
  const ep = await webhooksFor(c.env).updateEndpoint(id, patch);
  if (!ep) throw notFound("no such webhook endpoint");
  await record(c.env, { action: "webhook.update", details: { ...auditDetails(ep), changed: Object.keys(patch).sort() } });
  return c.json(ep);
});

webhookRoutes.delete("/:id", async (c) => {
  const id = idOf(c);
  if (!(await webhooksFor(c.env).deleteEndpoint(id))) throw notFound("no such webhook endpoint");
  await record(c.env, { action: "webhook.delete", outcome: { status: 204 }, details: { id } });
  return c.body(null, 204);
});

webhookRoutes.get("/:id/deliveries", async (c) => {
  const id = idOf(c);
  const limitText = c.req.query("limit");
  const limit = limitText === undefined ? 50 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw bad("limit must be an integer from 1 to 100");
  const cursorText = c.req.query("cursor");
  if (cursorText !== undefined && !/^\d{1,15}$/.test(cursorText)) throw bad("invalid cursor (use the `next` value of the previous page)");
  const page = await webhooksFor(c.env).deliveries(id, { limit, before: cursorText === undefined ? undefined : Number(cursorText) });
  if (!page) throw notFound("no such webhook endpoint");
  return c.json({ deliveries: page.deliveries, next: page.next === null ? null : String(page.next) });
});

webhookRoutes.post("/:id/deliveries/:delivery/redeliver", async (c) => {
  const r = await webhooksFor(c.env).redeliver(idOf(c), idOf(c, "delivery"));
  if (!r.ok && r.reason === "disabled") throw new WebhookApiError("CONFLICT", "the endpoint is disabled; enable it first (PATCH {\"enabled\":true})", 409);
  if (!r.ok) throw notFound("no such delivery for this webhook endpoint");
  return c.json(r.delivery, 202);
});
