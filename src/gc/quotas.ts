// Quota refusals (issue 11): a push that would take a repository over the quota of the
// namespace glob matching it gets 403 DENIED "quota exceeded: used / limit" at blob commit and
// at manifest PUT. The check itself runs inside the repository's TrustStore transaction.
import { oci } from "../oci/errors";
import type { QuotaRefusal } from "../stores/trust-store";
import type { Env } from "../env";
import { record } from "../audit/record";

export function quotaExceeded(repo: string, q: QuotaRefusal) {
  return oci("DENIED", `quota exceeded: ${q.used} / ${q.limit} bytes used in ${repo} (quota "${q.pattern}"); this push adds ${q.adding} bytes — delete content or ask for a larger quota`,
    { repository: repo, used: q.used, limit: q.limit, adding: q.adding, quota: q.pattern }, 403);
}

/** The refusal, recorded in the audit log (in the background: a refusal must not wait for it). */
export async function quotaDenied(env: Env, repo: string, q: QuotaRefusal, digest: string | null) {
  await record(env, { action: "quota.denied", target: { repository: repo, digest }, outcome: { status: 403, code: "DENIED" },
    details: { used: q.used, limit: q.limit, adding: q.adding, quota: q.pattern } }, "background");
  return quotaExceeded(repo, q);
}
