// Signature-gated pulls (docs/signatures.md): a manifest of a repository covered by a
// signature-gate rule is served only when enough distinct registered keys have verified a
// signature of it, or of an index of the repository that lists it. The attestation rows of the
// repository's TrustStore are the cache: a met gate costs the same one TrustStore call as an
// ungated lookup. An unmet one re-verifies once (signatures may have arrived since the rows were
// recorded) before it refuses with 403 DENIED. Open mode has no policy, hence no gates.
import type { Ctx } from "../app";
import { authMode } from "../auth/config";
import { authState, rulesFor } from "../auth/session";
import { gateRequirements, unmetGate, type GateRequirement } from "../auth/policy";
import { isValidName } from "../oci/grammar";
import { backfillRepo, memberManifest } from "../storage/backfill";
import { trustStoreFor } from "../stores";
import type { ManifestRecord } from "../stores/trust-store";
import { oci } from "../oci/errors";
import { record } from "../audit/record";
import { attestAndRecord } from "./attestations";

/**
 * How long a verified attestation row lets gated pulls through without re-verifying
 * (SIGNATURE_RECHECK_SECONDS, default 300, 0–86,400). Rows are kept current by events (a
 * signature pushed or deleted, a key deleted: ADR 0019 "Session 4"), so this is only a safety net
 * for what no event covers (a follow-up lost to a crash, a retention deletion). It costs one
 * verification pass per gated digest per window, not per pull. 0 re-verifies on every gated pull.
 */
export function signatureRecheckSeconds(env: { SIGNATURE_RECHECK_SECONDS?: string }): number {
  const n = Number(env.SIGNATURE_RECHECK_SECONDS ?? 300);
  return Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), 86_400) : 300;
}

/**
 * The gates covering `repo` and the repositories whose signatures count for them (`repo` and its
 * links). A Bearer token carries them from issuance (no store call; as stale as the token's access
 * claim); otherwise they come from the rules (loaded once per request, as auth already did for
 * Basic credentials). Open mode has no policy, hence no gates.
 */
async function gatesFor(c: Ctx, repo: string): Promise<{ gates: GateRequirement[]; sources: string[] }> {
  if (authMode((c.env ?? {}) as Record<string, unknown>) === "open") return { gates: [], sources: [] };
  const st = authState(c);
  if (st?.via === "bearer" && st.gates && !st.rules) {
    const claim = st.gates.find((g) => g.name === repo);
    return claim ? { gates: claim.gates, sources: [repo, ...claim.links] } : { gates: [], sources: [] };
  }
  const g = gateRequirements(await rulesFor(c), repo, isValidName);
  return g ? { gates: g.gates, sources: [repo, ...g.links] } : { gates: [], sources: [] };
}

/**
 * memberManifest, refusing (403) a manifest whose signature gates are not met. `known`: the record
 * a proxy check already looked up (used when no gate applies, saving the second lookup);
 * `pulledDay`: record a pull (a manifest GET) in the same lookup.
 */
export async function gatedMemberManifest(c: Ctx, repo: string, reference: string, isDigest: boolean, opts: { known?: ManifestRecord | null; pulledDay?: number } = {}): Promise<ManifestRecord | null> {
  const { gates, sources } = await gatesFor(c, repo);
  if (!gates.length) return opts.known ?? memberManifest(c.env, repo, reference, isDigest, opts.pulledDay);
  const trust = trustStoreFor(c.env, repo);
  const freshAfter = Date.now() - signatureRecheckSeconds(c.env) * 1000;
  let got = await trust.gatedManifest(repo, reference, isDigest, freshAfter, sources, opts.pulledDay);
  if (got.manifest === "backfill") {
    await backfillRepo(c.env, repo);
    got = await trust.gatedManifest(repo, reference, isDigest, freshAfter, sources, opts.pulledDay);
  }
  const m = got.manifest;
  if (m === null || m === "backfill") return null;
  if (unmetGate(gates, got.signers) === null || got.parents.some((p) => unmetGate(gates, p) === null)) return m;
  // Not met by the recorded rows: verify what is there now, record it, decide on that.
  const rows = await attestAndRecord(c, repo, m.digest, "pull");
  const signers = rows.filter((r) => r.verified && r.signer !== null && sources.includes(r.source)).map((r) => r.signer!);
  const unmet = unmetGate(gates, signers);
  if (unmet === null) return m;
  const { gate, found } = unmet;
  await record(c.env, { action: "gate.denied", target: { repository: repo, digest: m.digest }, outcome: { status: 403, code: "DENIED" }, details: { rule: gate.id, minimum: gate.minimum, keys: gate.keys, found } }, "background");
  throw oci(
    "DENIED",
    `${repo}@${m.digest} needs ${gate.minimum} valid signature(s) from distinct keys of {${gate.keys.join(", ")}} (signature-gate rule ${gate.id}); found ${found}`,
    { repository: repo, digest: m.digest, rule: gate.id, minimum: gate.minimum, keys: gate.keys, found },
    403,
  );
}
