// BlobStore: the content-addressed index, digest → stored object, and who holds each digest.
// One stored object can answer to several digests of the same bytes (e.g. a SHA-256 and a
// build-cache BLAKE3 claim), found through content_sha256, so identical bytes are kept once.
// holders(digest, repo) is written before the repository's membership row (handoff order) and
// removed after it, so it is always a superset of memberships: "no holder" is safe for GC.
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

/** Most digests one holdMany call takes (keeps each RPC and transaction small). */
export const MAX_HOLD_BATCH = 500;
/** Most holders one page lists. */
export const MAX_HOLDERS_PAGE = 1000;

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
    // touched_at: when a repository last (re)linked the digest; a release older than that loses.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS holders (
      digest TEXT NOT NULL, repo TEXT NOT NULL, touched_at INTEGER NOT NULL,
      PRIMARY KEY (digest, repo)
    ) WITHOUT ROWID`);
  }

  get(digest: string): StoredBlob | null {
    const row = this.sql.exec<{ size: number; r2_key: string; content_sha256: string }>(
      `SELECT size, r2_key, content_sha256 FROM blobs WHERE digest = ?`, digest).toArray()[0];
    return row ? { digest, size: row.size, r2Key: row.r2_key, contentSha256: row.content_sha256 } : null;
  }

  /**
   * Record verified bytes under `digest`, and `holder` as holding them, in one call. Idempotent;
   * dedupes by content.
   */
  commit(blob: StoredBlob, holder: string | null = null): CommitResult {
    const existing = this.get(blob.digest);
    let result: CommitResult;
    if (existing) {
      result = { r2Key: existing.r2Key, size: existing.size, adoptedOffered: existing.r2Key === blob.r2Key };
    } else {
      const same = this.sql.exec<{ r2_key: string; size: number }>(
        `SELECT r2_key, size FROM blobs WHERE content_sha256 = ? LIMIT 1`, blob.contentSha256).toArray()[0];
      const r2Key = same ? same.r2_key : blob.r2Key;
      this.sql.exec(`INSERT INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, ?)`,
        blob.digest, blob.size, r2Key, blob.contentSha256, Date.now());
      result = { r2Key, size: blob.size, adoptedOffered: !same };
    }
    if (holder !== null) this.touch(blob.digest, holder);
    return result;
  }

  /** Record that `repo` holds `digest` (mount); null, writing nothing, when the digest is not stored. */
  hold(digest: string, repo: string): StoredBlob | null {
    const b = this.get(digest);
    if (b) this.touch(digest, repo);
    return b;
  }

  /** hold() for up to MAX_HOLD_BATCH digests (migration, backfill); returns the stored ones. */
  holdMany(repo: string, digests: string[]): StoredBlob[] {
    if (digests.length > MAX_HOLD_BATCH) throw new RangeError(`holdMany takes at most ${MAX_HOLD_BATCH} digests`);
    const out: StoredBlob[] = [];
    this.ctx.storage.transactionSync(() => {
      for (const d of new Set(digests)) {
        const b = this.hold(d, repo);
        if (b) out.push(b);
      }
    });
    return out;
  }

  /**
   * `repo` no longer holds `digest` (after its last membership row went). `since` is when the
   * caller began the unlink: a hold recorded after it (a concurrent re-push) keeps the row.
   */
  release(digest: string, repo: string, since: number): boolean {
    return this.sql.exec(`DELETE FROM holders WHERE digest = ? AND repo = ? AND touched_at < ?`, digest, repo, since).rowsWritten > 0;
  }

  /** Repositories holding `digest`, by name, after `last`; at most `limit` (≤ MAX_HOLDERS_PAGE). */
  holders(digest: string, limit: number, last: string | null = null): { repos: string[]; next: string | null } {
    const n = Math.max(1, Math.min(limit, MAX_HOLDERS_PAGE));
    const rows = this.sql.exec<{ repo: string }>(`SELECT repo FROM holders WHERE digest = ? AND repo > ? ORDER BY repo LIMIT ?`,
      digest, last ?? "", n + 1).toArray().map((r) => r.repo);
    const repos = rows.slice(0, n);
    return { repos, next: rows.length > n ? repos[repos.length - 1] : null };
  }

  private touch(digest: string, repo: string): void {
    this.sql.exec(`INSERT INTO holders (digest, repo, touched_at) VALUES (?, ?, ?)
      ON CONFLICT (digest, repo) DO UPDATE SET touched_at = excluded.touched_at`, digest, repo, Date.now());
  }
}
