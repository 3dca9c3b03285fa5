// Builds the Hono app: middleware order and route mounting. Routes stay thin; see src/oci/*.
import { Hono } from "hono";
import type { Env } from "./env";
import { config } from "./env";
import { OciError, oci, storeUnavailable } from "./oci/errors";
import { parseV2Path, type V2Route } from "./oci/path";
import * as blobs from "./oci/blobs";
import * as uploads from "./oci/uploads";
import * as manifests from "./oci/manifests";
import * as listing from "./oci/listing";
import * as referrers from "./oci/referrers";
import * as attestations from "./signatures/attestations";
import { benchEnabled, benchRoutes } from "./bench";
import { drainRefusedBody } from "./storage/ingest";
import { adminRoutes, authMiddleware, requireAdmin, tokenRoutes, type AuthVariables } from "./auth";
import { requestLog } from "./http/request-log";
import { uiRoutes } from "./ui";
import { refuseProxyPush } from "./proxy/pull";

export type AppEnv = { Bindings: Env; Variables: { route: V2Route } & AuthVariables };
export type Ctx = import("hono").Context<AppEnv>;

export function buildApp() {
  const app = new Hono<AppEnv>();

  // First: request id + one JSON log line per request, timed to the last byte (src/http).
  app.use("*", requestLog());

  app.use("*", async (c, next) => {
    await next();
    c.res.headers.set("Docker-Distribution-API-Version", "registry/2.0");
  });

  app.onError(async (err, c) => {
    await drainRefusedBody(c.req.raw); // a half-read upload body would break the connection
    if (err instanceof OciError) return err.toResponse();
    const transient = storeUnavailable(err);
    if (transient) {
      console.error("index object unavailable", err instanceof Error ? err.message : err);
      return transient.toResponse();
    }
    console.error("unhandled error", err instanceof Error ? err.stack : err);
    return oci("INTERNAL", "internal server error").toResponse();
  });

  // Auth (docs/auth.md): the /v2 gate runs before dispatch (Hono's "/v2/*" also matches "/v2",
  // so it is mounted once); token service; admin API.
  app.use("/v2/*", authMiddleware());
  app.route("/token", tokenRoutes);
  app.route("/admin", adminRoutes);
  // Raw R2 routes for `npm run bench`: 404 unless BENCH_ROUTES=true, then for the admin only.
  app.use("/_bench/*", benchEnabled, requireAdmin);
  app.route("/_bench", benchRoutes);
  // Web UI (docs/ui.md): pages call this app's own API in-process, so it is handed the app.
  app.route("/ui", uiRoutes(app));

  app.all("/v2/*", async (c) => {
    // Use the raw path so encoded slashes and dots never become part of a name.
    const raw = new URL(c.req.url).pathname;
    const route = parseV2Path(raw);
    if (!route) throw oci("NAME_UNKNOWN", `no such endpoint: ${raw.slice(0, 200)}`);
    c.set("route", route);
    return dispatch(c, route);
  });
  app.all("/v2", (c) => dispatch(c, { kind: "base" }));

  app.get("/", (c) => c.text("cloister: OCI registry. API at /v2/\n"));
  app.notFound((c) => c.json({ errors: [{ code: "NOT_FOUND", message: `no route for ${c.req.method} ${new URL(c.req.url).pathname}` }] }, 404));
  return app;
}

function methodNotAllowed(c: Ctx, allowed: string): never {
  throw oci("METHOD_UNKNOWN", `${c.req.method} is not supported here (allowed: ${allowed})`, undefined, 405, { Allow: allowed });
}

async function dispatch(c: Ctx, r: V2Route): Promise<Response> {
  const m = c.req.method;
  switch (r.kind) {
    case "base":
      if (m === "GET" || m === "HEAD") return c.json({}, 200);
      return methodNotAllowed(c, "GET, HEAD");
    case "blob":
      if (m === "GET" || m === "HEAD") return blobs.get(c, r.name, r.digest, m === "HEAD");
      if (m === "DELETE") return blobs.remove(c, r.name, r.digest);
      return methodNotAllowed(c, "GET, HEAD, DELETE");
    case "uploads":
      await refuseProxyPush(c.env, r.name); // proxy namespaces are read-only caches
      if (m === "POST") return uploads.start(c, r.name);
      return methodNotAllowed(c, "POST");
    case "upload":
      if (m === "PATCH") return uploads.patch(c, r.name, r.uuid);
      if (m === "PUT") return uploads.finish(c, r.name, r.uuid);
      if (m === "GET") return uploads.status(c, r.name, r.uuid);
      if (m === "DELETE") return uploads.cancel(c, r.name, r.uuid);
      return methodNotAllowed(c, "GET, PATCH, PUT, DELETE");
    case "manifest":
      if (m === "GET" || m === "HEAD") return manifests.get(c, r.name, r.reference, m === "HEAD");
      if (m === "PUT") return refuseProxyPush(c.env, r.name).then(() => manifests.put(c, r.name, r.reference));
      if (m === "DELETE") return manifests.remove(c, r.name, r.reference);
      return methodNotAllowed(c, "GET, HEAD, PUT, DELETE");
    case "tags":
      if (m === "GET" || m === "HEAD") return listing.tags(c, r.name);
      return methodNotAllowed(c, "GET");
    case "catalog":
      if (m === "GET" || m === "HEAD") return listing.catalog(c);
      return methodNotAllowed(c, "GET");
    case "referrers":
      if (m === "GET" || m === "HEAD") return referrers.list(c, r.name, r.digest);
      return methodNotAllowed(c, "GET");
    case "attestations":
      if (m === "GET" || m === "HEAD") return attestations.list(c, r.name, r.digest);
      return methodNotAllowed(c, "GET");
  }
}

export { config };
