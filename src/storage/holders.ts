// Cross-repository index operations on the per-repository layout (docs/adr/0008): mounts and
// unlinks keep BlobStore's holders(digest, repo) a superset of TrustStore memberships — holder
// written before membership, removed after it — so "no holder" is a safe answer for GC.
import { draftEvent } from "../audit/record";
import type { Env } from "../env";
import { blobStoreFor, trustStoreFor } from "../stores";
import { memberBlob } from "./backfill";

/** Repositories tried for a mount without `from`. */
export const AUTO_MOUNT_CANDIDATES = 50;

/**
 * Link blob `digest` into `name` from the first of `sources` (or, when null, from the
 * repositories BlobStore lists as holders) that `mayRead` allows and that really has it as a
 * member. True when mounted; false means "not mountable", indistinguishable from "not there".
 */
export async function mountBlob(env: Env, name: string, digest: string, sources: string[] | null, mayRead: (repo: string) => Promise<boolean>): Promise<boolean> {
  const candidates = sources ?? (await blobStoreFor(env, digest).holders(digest, AUTO_MOUNT_CANDIDATES)).repos;
  for (const source of candidates) {
    if (source === name) continue;
    if (!(await mayRead(source))) continue; // not readable by this principal: nothing leaks
    const src = await memberBlob(env, source, digest);
    if (!src || src.kind !== "blob") continue;
    // A condemned digest is not held (null), and a GC fence refuses the link: either way the
    // mount fails and the client uploads the bytes (docs/adr/0011).
    const stored = await blobStoreFor(env, digest).hold(digest, name);
    if (!stored) return false;
    // A quota refusal also fails the mount: the upload that follows gets the 403.
    const event = draftEvent({ action: "blob.mount", target: { repository: name, digest }, outcome: { status: 201 }, details: { from: source, size: stored.size } });
    const linked = await trustStoreFor(env, name).link(name, { digest, kind: "blob", size: stored.size, r2Key: stored.r2Key, mediaType: null }, stored.heldSeq, null, event);
    if (!linked.ok) {
      // Give back the holder the refused mount took, unless the repository holds the digest already.
      if (!("held" in linked && linked.held)) await blobStoreFor(env, digest).abandon(digest, name, stored.touchedAt, null).catch(() => {});
      return false;
    }
    return true;
  }
  return false;
}

/** DELETE of a blob in one repository: membership first, then (if nothing else holds it there) the holder. */
export async function unlinkBlob(env: Env, name: string, digest: string): Promise<boolean> {
  const since = Date.now();
  const event = draftEvent({ action: "blob.delete", target: { repository: name, digest }, outcome: { status: 202 } });
  const r = await trustStoreFor(env, name).unlinkBlob(name, digest, event);
  if (r.removed && !r.held) await blobStoreFor(env, digest).release(digest, name, since);
  return r.removed;
}

/** DELETE of a manifest by digest: membership, tags and referrer rows, then the holder. */
export async function deleteManifest(env: Env, name: string, digest: string): Promise<boolean> {
  const since = Date.now();
  const event = draftEvent({ action: "manifest.delete", target: { repository: name, tag: null, digest }, outcome: { status: 202 } });
  const r = await trustStoreFor(env, name).deleteManifest(name, digest, event);
  if (r.removed && !r.held) await blobStoreFor(env, digest).release(digest, name, since);
  return r.removed;
}
