// The auth module's surface for the rest of the Worker (see docs/auth.md).
//   app.use("/v2/*", authMiddleware());   (Hono's "/v2/*" also matches "/v2": mount it once)
//   app.route("/token", tokenRoutes); app.route("/admin", adminRoutes); app.use(path, requireAdmin)
import type { Context } from "hono";
import { oci } from "../oci/errors";
import { authMode } from "./config";
import { evaluate, matchGlob, tagChangeAllowed } from "./policy";
import { authState, rulesFor, subjectOf } from "./session";
import { principalOf } from "./middleware";
import { accessCovers } from "./tokens";

export { authMiddleware, principalOf, requiredAccess } from "./middleware";
export { tokenRoutes } from "./token-routes";
export { adminRoutes, requireAdmin } from "./admin-routes";
export type { Principal, AuthVariables, AuthState } from "./session";

/**
 * Whether this request's principal may pull `repo` (catalog filtering, cross-repository mount
 * sources). Open mode: always. A Bearer token granting pull on `repo` answers without a lookup;
 * otherwise current policy decides.
 */
export async function mayPull(c: Context<any>, repo: string): Promise<boolean> {
  const st = authState(c);
  const mode = authMode((c.env ?? {}) as Record<string, unknown>);
  if (mode === "open" || st?.principal.kind === "open") return true;
  if (st?.access && accessCovers(st.access, "repository", repo, ["pull"])) return true;
  const rules = await rulesFor(c);
  return evaluate(rules, subjectOf(principalOf(c)), "pull", repo).allowed;
}

type Lazy<T> = T | (() => Promise<T>);
const resolve = <T>(v: Lazy<T>): Promise<T> => (typeof v === "function" ? (v as () => Promise<T>)() : Promise.resolve(v));

/** Whether any immutable-tags rule covers `repo` (lets callers skip looking up tags). */
async function repoHasImmutableTags(c: Context<any>, repo: string) {
  const rules = await rulesFor(c);
  return { rules, any: rules.some((r) => r.kind === "immutable-tags" && r.repositories.some((g) => matchGlob(g, repo))) };
}

/**
 * Refuses (403 DENIED) moving `repo:tag` from `currentDigest` to another digest, or deleting it
 * (`newDigest` null), when an immutable-tags rule covers it. Creating a tag (currentDigest null)
 * and re-pushing the same digest are always allowed. Applies in every auth mode.
 * `currentDigest` may be a function: it is only called when a rule covers the repository.
 */
export async function assertTagMutable(
  c: Context<any>,
  repo: string,
  tag: string,
  currentDigest: Lazy<string | null>,
  newDigest: string | null,
): Promise<void> {
  if (currentDigest === null) return;
  const { rules, any } = await repoHasImmutableTags(c, repo);
  if (!any) return;
  const current = await resolve(currentDigest);
  const r = tagChangeAllowed(rules, repo, tag, current, newDigest);
  if (r.allowed) return;
  throw oci(
    "DENIED",
    `tag "${tag}" in ${repo} is immutable (policy rule ${r.rule.id}): it cannot be ${newDigest === null ? "deleted" : "moved to another manifest"}; push a new tag instead`,
    { repository: repo, tag, rule: r.rule.id, current },
    403,
  );
}

/**
 * Refuses (403 DENIED) deleting manifest `digest` from `repo` while an immutable tag points at it
 * (DELETE by digest would remove the tag with it). `tags` are the tags of `repo` pointing at
 * `digest`; as a function it is only called when a rule covers the repository.
 */
export async function assertManifestDeletable(c: Context<any>, repo: string, digest: string, tags: Lazy<string[]>): Promise<void> {
  const { rules, any } = await repoHasImmutableTags(c, repo);
  if (!any) return;
  for (const tag of await resolve(tags)) {
    const r = tagChangeAllowed(rules, repo, tag, digest, null);
    if (r.allowed) continue;
    throw oci(
      "DENIED",
      `manifest ${digest} is tagged "${tag}" in ${repo}, an immutable tag (policy rule ${r.rule.id}): it cannot be deleted`,
      { repository: repo, tag, rule: r.rule.id, digest },
      403,
    );
  }
}
