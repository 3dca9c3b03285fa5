// The content-addressed handoff, in ARCHITECTURE order: bytes are in R2 → record the digest and
// its holder in BlobStore (one call) → record membership in the repository's TrustStore (which
// adds the catalog row on first membership). Each step is idempotent, so a crash between steps
// leaves only unreferenced bytes or an extra holder for GC, never a reference to missing bytes.
// GC (docs/adr/0011): a link refused by a GC fence commits once more (resurrecting the digest
// with the offered object, or re-holding it) and links with the new holder sequence.
import type { Env } from "../env";
import { oci } from "../oci/errors";
import { blobStoreFor, trustStoreFor } from "../stores";
import type { CommitResult } from "../stores/blob-store";
import type { LinkResult } from "../stores/trust-store";
import { quotaExceeded } from "../gc/quotas";

export interface VerifiedObject {
  digest: string;
  size: number;
  r2Key: string;
  /** SHA-256 of the bytes, whatever the claim's algorithm: the dedupe key. */
  contentSha256: string;
}

/**
 * Commit verified bytes as a blob of `repo`. Returns the key that now holds them; when the
 * bytes were already stored, the offered object is redundant and deleted here.
 */
export async function commitBlob(env: Env, repo: string, obj: VerifiedObject, kind: "blob" | "manifest" = "blob", mediaType: string | null = null) {
  const result = await blobStoreFor(env, obj.digest).commit(obj, repo);
  return finishCommit(env, repo, obj, result, kind, mediaType);
}

/**
 * The steps after BlobStore's commit: the membership link (retried once through a new commit
 * when GC fenced the digest meanwhile), then the offered object is deleted if it was redundant —
 * only then, because a retry may need it to resurrect the digest.
 */
export async function finishCommit(env: Env, repo: string, obj: VerifiedObject, first: CommitResult, kind: "blob" | "manifest" = "blob", mediaType: string | null = null): Promise<CommitResult> {
  let result = first;
  if (kind === "blob") {
    const since = Date.now();
    const trust = trustStoreFor(env, repo);
    const link = (r: CommitResult): Promise<LinkResult> => trust.link(repo, { digest: obj.digest, kind, size: r.size, r2Key: r.r2Key, mediaType }, r.heldSeq);
    let linked = await link(result);
    if (!linked.ok && "fenced" in linked) {
      result = await blobStoreFor(env, obj.digest).commit(obj, repo);
      linked = await link(result);
      if (!linked.ok && "fenced" in linked) throw gcBusy(obj.digest);
    }
    if (!linked.ok && "quota" in linked) {
      // Nothing links it here: drop this push's holder (GC collects the bytes if nobody else holds them).
      await blobStoreFor(env, obj.digest).release(obj.digest, repo, since + 1).catch(() => {});
      if (!result.adoptedOffered && result.r2Key !== obj.r2Key) await env.BUCKET.delete(obj.r2Key).catch(() => {});
      throw quotaExceeded(repo, linked.quota);
    }
  }
  if (!result.adoptedOffered && result.r2Key !== obj.r2Key) {
    await env.BUCKET.delete(obj.r2Key).catch(() => {});
  }
  return result;
}

/** Only reachable when GC fences the same digest twice within one request: the client retries. */
export function gcBusy(digest: string) {
  return oci("BLOB_UPLOAD_INVALID", `blob ${digest} was being garbage-collected while this push linked it; push it again`, { digest }, 409);
}
