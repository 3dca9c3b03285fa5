// The auth module's surface for the rest of the Worker (see docs/auth.md).
//   app.use("/v2/*", authMiddleware()); app.use("/v2", authMiddleware());
//   app.route("/token", tokenRoutes); app.route("/admin", adminRoutes);
import type { Context } from "hono";
import { oci } from "../oci/errors";
import { authMode } from "./config";
import { evaluate, tagChangeAllowed } from "./policy";
import { authState, rulesFor, subjectOf } from "./session";
import { principalOf } from "./middleware";
import { accessCovers } from "./tokens";

export { authMiddleware, principalOf, requiredAccess } from "./middleware";
export { tokenRoutes } from "./token-routes";
export { adminRoutes } from "./admin-routes";
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

/**
 * Refuses (403 DENIED) moving `repo:tag` from `currentDigest` to another digest, or deleting it
 * (`newDigest` null), when an immutable-tags rule covers it. Creating a tag (currentDigest null)
 * and re-pushing the same digest are always allowed. Applies in every auth mode.
 */
export async function assertTagMutable(
  c: Context<any>,
  repo: string,
  tag: string,
  currentDigest: string | null,
  newDigest: string | null,
): Promise<void> {
  if (currentDigest === null || currentDigest === newDigest) return;
  const r = tagChangeAllowed(await rulesFor(c), repo, tag, currentDigest, newDigest);
  if (r.allowed) return;
  throw oci(
    "DENIED",
    `tag "${tag}" in ${repo} is immutable (policy rule ${r.rule.id}): it cannot be ${newDigest === null ? "deleted" : "moved to another manifest"}; push a new tag instead`,
    { repository: repo, tag, rule: r.rule.id, current: currentDigest },
    403,
  );
}
