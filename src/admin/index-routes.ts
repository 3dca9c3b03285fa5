// Admin routes for the index (docs/adr/0008), mounted by src/auth/admin-routes.ts behind the
// admin check:
//   GET  /admin/migrations/index        progress of the schema-3 migration (one object per repository)
//   POST /admin/migrations/index        start or resume it (202); idempotent
//   GET  /admin/blobs/<digest>/holders  repositories holding a digest ("where is this blob used");
//                                       ?n= (≤ 1000, default 100) and ?last= page by name
import type { Hono } from "hono";
import type { Env } from "../env";
import { blobStoreFor, legacyTrustStore } from "../stores";
import { MAX_HOLDERS_PAGE } from "../stores/blob-store";
import { parseDigest } from "../oci/grammar";
import { nextLink, parsePage } from "../oci/pagination";

export function mountIndexAdminRoutes(app: Hono<any>): void {
  app.get("/migrations/index", async (c) => c.json(await legacyTrustStore(c.env as Env).migrationStatus()));

  app.post("/migrations/index", async (c) => c.json(await legacyTrustStore(c.env as Env).startMigration(), 202));

  app.get("/blobs/:digest/holders", async (c) => {
    const { digest } = parseDigest(c.req.param("digest"));
    const url = new URL(c.req.url);
    const { n, last } = parsePage(url, MAX_HOLDERS_PAGE);
    if (n === 0) return c.json({ digest, repositories: [] });
    const page = await blobStoreFor(c.env as Env, digest).holders(digest, n ?? 100, last);
    const headers: Record<string, string> = {};
    if (page.next !== null) headers.Link = nextLink(`/admin/blobs/${digest}/holders`, { n: String(n ?? 100), last: page.next });
    return c.json({ digest, repositories: page.repos }, 200, headers);
  });
}
