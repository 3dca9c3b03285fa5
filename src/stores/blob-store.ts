// BlobStore: the content-addressed index, digest → stored object. One stored object can
// answer to several digests of the same bytes (e.g. a SHA-256 and a build-cache BLAKE3 claim),
// found through content_sha256, so identical bytes are kept once.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";

export interface StoredBlob {
  digest: string;
  size: number;
  r2Key: string;
  contentSha256: string;
}

export interface CommitResult {
  /** The key that holds these bytes from now on (may differ from the one offered). */
  r2Key: string;
  size: number;
  /** False when the offered object duplicates bytes already stored; the caller deletes it. */
  adoptedOffered: boolean;
}

export class BlobStore extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS blobs (
      digest TEXT PRIMARY KEY,
      size INTEGER NOT NULL,
      r2_key TEXT NOT NULL,
      content_sha256 TEXT NOT NULL,
      created_at INTEGER NOT NULL
    ) WITHOUT ROWID`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS blobs_by_content ON blobs(content_sha256)`);
  }

  get(digest: string): StoredBlob | null {
    const row = this.sql.exec<{ size: number; r2_key: string; content_sha256: string }>(
      `SELECT size, r2_key, content_sha256 FROM blobs WHERE digest = ?`, digest).toArray()[0];
    return row ? { digest, size: row.size, r2Key: row.r2_key, contentSha256: row.content_sha256 } : null;
  }

  /** Look up several digests at once. */
  getMany(digests: string[]): StoredBlob[] {
    const out: StoredBlob[] = [];
    for (const d of digests) {
      const b = this.get(d);
      if (b) out.push(b);
    }
    return out;
  }

  /** Record verified bytes under `digest`. Idempotent; dedupes by content. */
  commit(blob: StoredBlob): CommitResult {
    const existing = this.get(blob.digest);
    if (existing) return { r2Key: existing.r2Key, size: existing.size, adoptedOffered: existing.r2Key === blob.r2Key };
    const same = this.sql.exec<{ r2_key: string; size: number }>(
      `SELECT r2_key, size FROM blobs WHERE content_sha256 = ? LIMIT 1`, blob.contentSha256).toArray()[0];
    const r2Key = same ? same.r2_key : blob.r2Key;
    this.sql.exec(`INSERT INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, ?)`,
      blob.digest, blob.size, r2Key, blob.contentSha256, Date.now());
    return { r2Key, size: blob.size, adoptedOffered: !same };
  }
}
