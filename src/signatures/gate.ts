// Signature-gated pulls (docs/signatures.md): a manifest of a repository covered by a
// signature-gate rule is served only when enough distinct registered keys have verified a
// signature of it, or of an index of the repository that lists it. The attestation rows of the
// repository's TrustStore are the cache: a met gate costs the same one TrustStore call as an
// ungated lookup. An unmet one re-verifies once (signatures may have arrived since the rows were
// recorded) before it refuses with 403 DENIED. Open mode has no policy, hence no gates.
import type { Ctx } from "../app";
import { authMode } from "../auth/config";
import { rulesFor } from "../auth/session";
import { signatureGatesFor, unmetGate, type SignatureGateRule } from "../auth/policy";
import { backfillRepo, memberManifest } from "../storage/backfill";
import { trustStoreFor } from "../stores";
import type { ManifestRecord } from "../stores/trust-store";
import { oci } from "../oci/errors";
import { record } from "../audit/record";
import { attestAndRecord } from "./attestations";

async function gatesFor(c: Ctx, repo: string): Promise<SignatureGateRule[]> {
  if (authMode((c.env ?? {}) as Record<string, unknown>) === "open") return [];
  return signatureGatesFor(await rulesFor(c), repo);
}

/** memberManifest, refusing (403) a manifest whose signature gates are not met. */
export async function gatedMemberManifest(c: Ctx, repo: string, reference: string, isDigest: boolean): Promise<ManifestRecord | null> {
  const gates = await gatesFor(c, repo);
  if (!gates.length) return memberManifest(c.env, repo, reference, isDigest);
  const trust = trustStoreFor(c.env, repo);
  let got = await trust.gatedManifest(repo, reference, isDigest);
  if (got.manifest === "backfill") {
    await backfillRepo(c.env, repo);
    got = await trust.gatedManifest(repo, reference, isDigest);
  }
  const m = got.manifest;
  if (m === null || m === "backfill") return null;
  if (unmetGate(gates, got.signers) === null || got.parents.some((p) => unmetGate(gates, p) === null)) return m;
  // Not met by the recorded rows: verify what is there now, record it, decide on that.
  const rows = await attestAndRecord(c, repo, m.digest);
  const signers = rows.filter((r) => r.verified && r.signer !== null).map((r) => r.signer!);
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
