// Admin API for proxy namespaces (docs/proxy.md), mounted behind the admin gate:
//   GET    /admin/proxies            every namespace (credentials shown only as `credentials: true`)
//   PUT    /admin/proxies            create or replace one namespace (body: see namespaceInput)
//   DELETE /admin/proxies/<prefix>   remove it (cached content stays, as an ordinary repository)
import type { Hono } from "hono";
import type { Env } from "../env";
import { body, bad, notFound } from "../auth/admin-routes";
import { record } from "../audit/record";
import { MAX_PROXY_NAMESPACES, loadNamespaces, namespaceInput, publicView, saveNamespaces } from "./config";

export function mountProxyAdminRoutes(app: Hono<any>): void {
  app.get("/proxies", async (c) => c.json({ proxies: (await loadNamespaces(c.env as Env)).map(publicView) }));

  app.put("/proxies", async (c) => {
    const env = c.env as Env;
    const input = await body(c, namespaceInput);
    const list = (await loadNamespaces(env)).filter((n) => n.prefix !== input.prefix);
    if (list.length >= MAX_PROXY_NAMESPACES) throw bad(`at most ${MAX_PROXY_NAMESPACES} proxy namespaces`);
    if (list.some((n) => n.prefix.startsWith(input.prefix + "/") || input.prefix.startsWith(n.prefix + "/"))) {
      throw bad(`prefix ${input.prefix} overlaps another proxy namespace`);
    }
    await saveNamespaces(env, [...list, input]);
    await record(env, { action: "proxy.config", target: { repository: `${input.prefix}/*` }, outcome: { status: 200 }, details: { upstream: input.upstream, tagTtlSeconds: input.tagTtlSeconds, credentials: input.username !== undefined } });
    return c.json(publicView(input));
  });

  app.delete("/proxies/:prefix{.+}", async (c) => {
    const env = c.env as Env;
    const prefix = c.req.param("prefix");
    const list = await loadNamespaces(env);
    if (!list.some((n) => n.prefix === prefix)) throw notFound(`no proxy namespace ${prefix.slice(0, 128)}`);
    await saveNamespaces(env, list.filter((n) => n.prefix !== prefix));
    await record(env, { action: "proxy.config", target: { repository: `${prefix}/*` }, outcome: { status: 204 }, details: { removed: true } });
    return c.body(null, 204);
  });
}
