// Admin API for proxy namespaces (docs/proxy.md), mounted behind the admin gate:
//   GET    /admin/proxies            every namespace, both sources (`source`), credentials shown as
//                                    the secret's name only, problems and legacy R2 credentials as `warning`
//   PUT    /admin/proxies            create or replace one namespace (body: see namespaceInput)
//   DELETE /admin/proxies/<prefix>   remove it (cached content stays, as an ordinary repository)
// Namespaces from wrangler.toml (PROXY_NAMESPACES) are read-only here: 409 naming the var.
import type { Hono } from "hono";
import type { Env } from "../env";
import { ApiError, body, bad, notFound } from "../auth/admin-routes";
import { record } from "../audit/record";
import { MAX_PROXY_NAMESPACES, apiNamespaces, loadNamespaces, namespaceInput, overlaps, publicView, readSecret, saveApiNamespaces, tomlNamespaces } from "./config";

const fromToml = (prefix: string) =>
  new ApiError("CONFLICT", `proxy namespace ${prefix} is defined in wrangler.toml (PROXY_NAMESPACES); change it there and redeploy`, 409);

export function mountProxyAdminRoutes(app: Hono<any>): void {
  app.get("/proxies", async (c) => {
    const env = c.env as Env;
    return c.json({ proxies: (await loadNamespaces(env)).map((n) => publicView(env, n)) });
  });

  app.put("/proxies", async (c) => {
    const env = c.env as Env;
    const { username: _u, password: _p, ...input } = await body(c, namespaceInput);
    if (input.credentialsSecret) {
      const s = readSecret(env, input.credentialsSecret);
      if ("problem" in s) throw bad(`credentialsSecret: ${s.problem}`);
    }
    const toml = tomlNamespaces(env);
    if (toml.some((n) => n.prefix === input.prefix)) throw fromToml(input.prefix);
    const list = (await apiNamespaces(env)).filter((n) => n.prefix !== input.prefix);
    if (list.length + toml.length >= MAX_PROXY_NAMESPACES) throw bad(`at most ${MAX_PROXY_NAMESPACES} proxy namespaces`);
    const other = [...toml, ...list].find((n) => overlaps(n.prefix, input.prefix));
    if (other) throw bad(`prefix ${input.prefix} overlaps another proxy namespace (${other.prefix})`);
    await saveApiNamespaces(env, [...list, input]);
    await record(env, { action: "proxy.config", target: { repository: `${input.prefix}/*` }, outcome: { status: 200 }, details: { upstream: input.upstream, tagTtlSeconds: input.tagTtlSeconds, credentialsSecret: input.credentialsSecret ?? null, unpulledDays: input.unpulledDays } });
    return c.json(publicView(env, { ...input, source: "api" }));
  });

  app.delete("/proxies/:prefix{.+}", async (c) => {
    const env = c.env as Env;
    const prefix = c.req.param("prefix");
    if (tomlNamespaces(env).some((n) => n.prefix === prefix)) throw fromToml(prefix);
    const list = await apiNamespaces(env);
    if (!list.some((n) => n.prefix === prefix)) throw notFound(`no proxy namespace ${prefix.slice(0, 128)}`);
    await saveApiNamespaces(env, list.filter((n) => n.prefix !== prefix));
    await record(env, { action: "proxy.config", target: { repository: `${prefix}/*` }, outcome: { status: 204 }, details: { removed: true } });
    return c.body(null, 204);
  });
}
