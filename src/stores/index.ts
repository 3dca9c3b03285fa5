// The one place that maps domain keys to Durable Object instances. Today BlobStore and
// TrustStore are singletons; sharding them later is a change here only (see docs/adr/0002).
import type { Env } from "../env";

export function blobStoreFor(env: Env, _digest?: string) {
  return env.BLOB_STORE.get(env.BLOB_STORE.idFromName("blobs"));
}

export function trustStoreFor(env: Env, _repo?: string) {
  return env.TRUST_STORE.get(env.TRUST_STORE.idFromName("registry"));
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

export function accountStoreFor(env: Env) {
  return env.ACCOUNT_STORE.get(env.ACCOUNT_STORE.idFromName("accounts"));
}
