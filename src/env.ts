// Bindings and variables of the Worker (see wrangler.toml and README "Configuration").
import type { BlobStore } from "./stores/blob-store";
import type { UploadSession } from "./stores/upload-session";
import type { TrustStore } from "./stores/trust-store";
import type { AccountStore } from "./stores/account-store";
import type { AuditLog } from "./stores/audit-log";
import type { Catalog } from "./stores/catalog";
import type { GcCoordinator } from "./gc/coordinator";
import type { Webhooks } from "./webhooks/store";
import { MAX_MANIFEST_REFERENCES, MAX_MANIFEST_REFERENCES_CEILING } from "./oci/limits";

export interface Env {
  BUCKET: R2Bucket;
  BLOB_STORE: DurableObjectNamespace<BlobStore>;
  UPLOAD_SESSION: DurableObjectNamespace<UploadSession>;
  TRUST_STORE: DurableObjectNamespace<TrustStore>;
  ACCOUNT_STORE: DurableObjectNamespace<AccountStore>;
  AUDIT_LOG: DurableObjectNamespace<AuditLog>;
  CATALOG: DurableObjectNamespace<Catalog>;
  GC: DurableObjectNamespace<GcCoordinator>;
  WEBHOOKS: DurableObjectNamespace<Webhooks>;
  /** Grace period of garbage collection in seconds (docs/adr/0011); default 86400, 0 allowed. */
  GC_GRACE_SECONDS?: string;
  MAX_BODY_BYTES?: string;
  CHUNK_MAX_BYTES?: string;
  MAX_MANIFEST_BYTES?: string;
  MAX_MANIFEST_REFERENCES?: string;
  UPLOAD_TTL_SECONDS?: string;
  UPLOAD_PART_BYTES?: string;
  UPLOAD_LEASE_SECONDS?: string;
  /** Optional secret (>= 32 characters) signing stateless upload ids; else derived (docs/adr/0013). */
  UPLOAD_SIGNING_KEY?: string;
  DELETE_ENABLED?: string;
  BENCH_ROUTES?: string;
  LEGACY_INDEX?: string;
  // Auth (read by src/auth/config.ts; see docs/auth.md)
  AUTH_MODE?: string;
  ADMIN_PASSWORD?: string;
  TOKEN_SIGNING_KEYS?: string;
  AUTH_REALM?: string;
  AUTH_SERVICE?: string;
  REGISTRY_HOSTS?: string;
  TOKEN_TTL_SECONDS?: string;
  REFRESH_TOKEN_TTL_SECONDS?: string;
  // Web UI (docs/ui.md)
  UI_SESSION_TTL_SECONDS?: string;
  SIGNATURE_RECHECK_SECONDS?: string;
  // Audit (docs/audit.md)
  AUDIT_RETENTION_DAYS?: string;
  AUDIT_PULLS?: string;
  AUDIT_PULL_SAMPLE?: string;
  // Webhooks (docs/audit.md "Webhooks"; read by src/webhooks/model.ts)
  WEBHOOK_TIMEOUT_MS?: string;
  WEBHOOK_BACKOFF_MS?: string;
  WEBHOOK_MAX_ATTEMPTS?: string;
  WEBHOOK_MAX_AGE_SECONDS?: string;
  /** Proxy namespaces deployed with the Worker: a JSON list (docs/proxy.md); credentials are secrets they name. */
  PROXY_NAMESPACES?: string | unknown[];
  [key: string]: unknown;
}

/** Typed, defaulted view of the string variables. */
export interface Config {
  maxBodyBytes: number; // 0 = unlimited
  chunkMaxBytes: number;
  maxManifestBytes: number;
  maxManifestReferences: number;
  uploadTtlSeconds: number;
  uploadPartBytes: number;
  /** How long an upload's write lease outlives its writer's last renewal (docs/adr/0007). */
  uploadLeaseSeconds: number;
  deleteEnabled: boolean;
  gcGraceSeconds: number;
}

const MiB = 1024 * 1024;
const num = (v: unknown, dflt: number, min = 0) => {
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) && n >= min ? Math.floor(n) : dflt;
};

export function config(env: Env): Config {
  return {
    maxBodyBytes: num(env.MAX_BODY_BYTES, 0),
    chunkMaxBytes: num(env.CHUNK_MAX_BYTES, 90 * MiB, 1),
    maxManifestBytes: num(env.MAX_MANIFEST_BYTES, 32 * MiB, 4 * MiB),
    maxManifestReferences: Math.min(num(env.MAX_MANIFEST_REFERENCES, MAX_MANIFEST_REFERENCES, 1), MAX_MANIFEST_REFERENCES_CEILING),
    uploadTtlSeconds: num(env.UPLOAD_TTL_SECONDS, 86400, 1),
    uploadPartBytes: num(env.UPLOAD_PART_BYTES, 16 * MiB, 5 * MiB),
    uploadLeaseSeconds: num(env.UPLOAD_LEASE_SECONDS, 20, 1),
    deleteEnabled: String(env.DELETE_ENABLED ?? "true").toLowerCase() !== "false",
    gcGraceSeconds: num(env.GC_GRACE_SECONDS, 86400, 0),
  };
}
