// The content-addressed handoff, in ARCHITECTURE order: bytes are in R2 → record the digest and
// its holder in BlobStore (one call) → record membership in the repository's TrustStore (which
// adds the catalog row on first membership). Each step is idempotent, so a crash between steps
// leaves only unreferenced bytes or an extra holder for GC, never a reference to missing bytes.
import type { Env } from "../env";
import { blobStoreFor, trustStoreFor } from "../stores";

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
  if (!result.adoptedOffered && result.r2Key !== obj.r2Key) {
    await env.BUCKET.delete(obj.r2Key).catch(() => {});
  }
  if (kind === "blob") {
    await trustStoreFor(env, repo).link(repo, { digest: obj.digest, kind, size: result.size, r2Key: result.r2Key, mediaType });
  }
  return result;
}
