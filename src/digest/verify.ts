// Verify-on-write: which hashes a write computes, and whether the computed hashes satisfy the
// digest a client claimed. The build-cache/v1 overload (a `sha256:` digest whose hex is the
// BLAKE3-256 of the body) is decided here and nowhere else.
import { Hasher, type HashAlgorithm, hashHex } from "./hasher";
import { oci } from "../oci/errors";
import { base64ToBytes, bytesToBase64 } from "../util/encoding";
import type { ParsedDigest } from "../oci/grammar";
import { runSliced, runWhole, type SliceClock, type Sliced } from "../util/slices";

export type Computed = Partial<Record<HashAlgorithm, string>>;

export interface DigestPolicy {
  /** Accept `sha256:<blake3 hex>` claims (build-cache/v1) for this repository. */
  blake3InSha256: boolean;
}

/**
 * Hashers a write runs while its bytes stream: SHA-256 always, the claim's own algorithm when it
 * is another one, and any algorithm the client declared for a chunked upload. A build-cache/v1
 * `sha256:<BLAKE3>` claim is NOT hashed in-stream: ordinary SHA-256 pushes must not pay for it
 * (measured: 10-25% of push throughput). It is checked after the SHA-256 check fails, by
 * reading the just-written object once (see missingAlgorithm).
 */
export function streamingAlgorithms(claim: ParsedDigest | null, declared: HashAlgorithm[] = []): HashAlgorithm[] {
  const algs: HashAlgorithm[] = ["sha256", ...declared];
  if (claim && claim.algorithm !== "sha256") algs.push(claim.algorithm);
  return [...new Set(algs)];
}

/** The algorithm still needed to judge `claim` after streaming, or null when `computed` decides it. */
export function missingAlgorithm(claim: ParsedDigest, computed: Computed, policy: DigestPolicy): HashAlgorithm | null {
  if (claim.algorithm !== "sha256") return computed[claim.algorithm] ? null : claim.algorithm;
  if (computed.sha256 === claim.hex || !policy.blake3InSha256 || computed.blake3) return null;
  return "blake3";
}

export function createHashers(algs: HashAlgorithm[], saved?: Record<string, string>): Hasher[] {
  return algs.map((a) => (saved && saved[a] ? Hasher.resume(a, base64ToBytes(saved[a])) : Hasher.create(a)));
}

export function saveHashers(hashers: Hasher[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of hashers) out[h.algorithm] = bytesToBase64(h.save());
  return out;
}

export function finishHashers(hashers: Hasher[]): Computed {
  const out: Computed = {};
  for (const h of hashers) out[h.algorithm] = h.digestHex();
  return out;
}

export type Verdict = { ok: true; via: HashAlgorithm } | { ok: false; message: string };

/** Does the claim match what was computed? */
export function checkClaim(claim: ParsedDigest, computed: Computed, policy: DigestPolicy): Verdict {
  if (claim.algorithm === "sha256") {
    if (computed.sha256 === claim.hex) return { ok: true, via: "sha256" };
    if (policy.blake3InSha256 && computed.blake3 === claim.hex) return { ok: true, via: "blake3" };
  } else if (computed[claim.algorithm] === claim.hex) {
    return { ok: true, via: claim.algorithm };
  }
  const seen = Object.entries(computed).map(([a, h]) => `${a}:${h}`).join(", ");
  const hint = claim.algorithm === "sha256" && policy.blake3InSha256 ? " (checked as SHA-256 and as BLAKE3 for build-cache/v1)" : "";
  return { ok: false, message: `digest ${claim.digest} does not match the uploaded content${hint}; computed ${seen}` };
}

export function assertClaim(claim: ParsedDigest, computed: Computed, policy: DigestPolicy): HashAlgorithm {
  const v = checkClaim(claim, computed, policy);
  if (!v.ok) throw oci("DIGEST_INVALID", v.message, { digest: claim.digest, computed });
  return v.via;
}

/** Hash bytes already in memory (manifests) for every algorithm the claim could be checked with. */
export function computeAll(bytes: Uint8Array, claim: ParsedDigest | null, policy: DigestPolicy): Computed {
  return runWhole(computeSteps(bytes, claim, policy));
}

/**
 * computeAll giving the thread back every HASH_SLICE_BYTES (a 15 MB manifest is ~50 ms of SHA-256
 * in one block otherwise; docs/adr/0022).
 */
export function computeAllSliced(bytes: Uint8Array, claim: ParsedDigest | null, policy: DigestPolicy, clock?: SliceClock): Promise<Computed> {
  return runSliced(computeSteps(bytes, claim, policy), clock);
}

const HASH_SLICE_BYTES = 2 * 1024 * 1024;

function* hashSteps(algorithm: HashAlgorithm, bytes: Uint8Array): Sliced<string> {
  if (bytes.length <= HASH_SLICE_BYTES) return hashHex(algorithm, bytes);
  const h = Hasher.create(algorithm);
  for (let off = 0; off < bytes.length; off += HASH_SLICE_BYTES) {
    if (off > 0) yield;
    h.update(bytes.subarray(off, off + HASH_SLICE_BYTES));
  }
  return h.digestHex();
}

function* computeSteps(bytes: Uint8Array, claim: ParsedDigest | null, policy: DigestPolicy): Sliced<Computed> {
  const out: Computed = {};
  for (const a of streamingAlgorithms(claim)) out[a] = yield* hashSteps(a, bytes);
  if (claim) {
    const more = missingAlgorithm(claim, out, policy);
    if (more) out[more] = yield* hashSteps(more, bytes);
  }
  return out;
}
