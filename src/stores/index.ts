// The one place that maps domain keys to Durable Object instances (docs/adr/0008). Sharding a
// store is a change to the naming function here, nothing else.
import type { Env } from "../env";

/**
 * BlobStore shard holding `digest`. One shard today: a single object takes a few thousand
 * commits/s (docs/capacity.md). To shard, return e.g. "blobs:" + hex.slice(0, 2) here; every
 * caller already goes through blobStoreFor or groupByBlobShard.
 */
export function blobShardOf(_digest: string): string {
  return "blobs";
}

/** Every BlobStore shard (GC walks them all); must list every name blobShardOf can return. */
export function blobShards(): string[] {
  return ["blobs"];
}

/** The registry-wide GC coordinator: one object, whose run table is the GC lease (docs/adr/0011). */
export function gcCoordinator(env: Env) {
  return env.GC.get(env.GC.idFromName("gc"));
}

/**
 * Quota rules: a second GcCoordinator instance that holds only the rules. TrustStores read it on
 * pushes; it never calls another object, so no call cycle (coordinator ⇄ TrustStore) can form.
 */
export function quotaStore(env: Env) {
  return env.GC.get(env.GC.idFromName("quotas"));
}

/**
 * The usage counter of one quota rule (docs/adr/0011 "Quotas"): a GcCoordinator instance per
 * pattern, called by the TrustStores of the repositories the pattern matches; it calls no object.
 */
export function quotaCounter(env: Env, pattern: string) {
  return env.GC.get(env.GC.idFromName("quota:" + pattern));
}

export function blobStoreFor(env: Env, digest: string) {
  return blobStoreShard(env, blobShardOf(digest));
}

/** A BlobStore object by shard name (groupByBlobShard; the bench uses its own "_bench/…" shard). */
export function blobStoreShard(env: Env, shard: string) {
  return env.BLOB_STORE.get(env.BLOB_STORE.idFromName(shard));
}

/** Digests grouped by the BlobStore shard that holds them (for batched calls). */
export function groupByBlobShard(env: Env, digests: Iterable<string>) {
  const groups = new Map<string, { store: ReturnType<typeof blobStoreFor>; digests: string[] }>();
  for (const d of digests) {
    const shard = blobShardOf(d);
    let g = groups.get(shard);
    if (!g) groups.set(shard, (g = { store: blobStoreShard(env, shard), digests: [] }));
    g.digests.push(d);
  }
  return [...groups.values()];
}

/**
 * One TrustStore per repository. The "repo:" prefix keeps room for other object kinds in the
 * namespace and can never equal LEGACY_TRUST_STORE.
 */
export function trustStoreFor(env: Env, repo: string) {
  return env.TRUST_STORE.get(env.TRUST_STORE.idFromName("repo:" + repo));
}

/** The single TrustStore of cloister before schema 3 (all repositories); read only by the migration. */
export const LEGACY_TRUST_STORE = "registry";
export function legacyTrustStore(env: Env) {
  return env.TRUST_STORE.get(env.TRUST_STORE.idFromName(LEGACY_TRUST_STORE));
}

/**
 * LEGACY_INDEX=off: there is no pre-schema-3 data (a fresh install, or the migration reported
 * done), so new objects skip their one call to the legacy object.
 */
export function legacyIndexEnabled(env: Env): boolean {
  return String(env.LEGACY_INDEX ?? "auto").trim().toLowerCase() !== "off";
}

/**
 * Catalog shard for a repository name. One shard today (see ADR 0008 for the numbers); to shard
 * by prefix, map the name's first path component to one of catalogShards() here.
 */
export function catalogShardOf(_repo: string): string {
  return "catalog";
}

/** Every catalog shard, in name order (the catalog is read by walking them in order). */
export function catalogShards(): string[] {
  return ["catalog"];
}

export function catalogFor(env: Env, repo: string) {
  return catalogShard(env, catalogShardOf(repo));
}

export function catalogShard(env: Env, shard: string) {
  return env.CATALOG.get(env.CATALOG.idFromName(shard));
}

export function uploadSessionFor(env: Env, uploadId: string) {
  return env.UPLOAD_SESSION.get(env.UPLOAD_SESSION.idFromName(uploadId));
}

/** One AuditLog object per UTC day ("YYYY-MM-DD"), see docs/adr/0012. */
export function auditLogFor(env: Env, partition: string) {
  return env.AUDIT_LOG.get(env.AUDIT_LOG.idFromName(`day:${partition}`));
}

/** The AuditLog object that lists the days and runs retention. */
export function auditIndexFor(env: Env) {
  return env.AUDIT_LOG.get(env.AUDIT_LOG.idFromName("index"));
}

/** Webhook endpoints and their delivery queue: one object (docs/adr/0014). */
export function webhooksFor(env: Env) {
  return env.WEBHOOKS.get(env.WEBHOOKS.idFromName("webhooks"));
}

export function accountStoreFor(env: Env) {
  return env.ACCOUNT_STORE.get(env.ACCOUNT_STORE.idFromName("accounts"));
}
