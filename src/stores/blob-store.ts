// BlobStore: the content-addressed index, digest → stored object, and who holds each digest.
// One stored object can answer to several digests of the same bytes (e.g. a SHA-256 and a
// build-cache BLAKE3 claim), found through content_sha256, so identical bytes are kept once.
// holders(digest, repo) is written before the repository's membership row (handoff order) and
// removed after it, so it is always a superset of memberships: "no holder" is safe for GC.
// Garbage collection (docs/adr/0011): a released holder stays as a tombstone (released_at) so GC
// knows which repositories to fence; every holder change bumps a per-store sequence (`seq`) that
// links carry, so a link whose BlobStore step predates a condemnation is refused. Condemned rows
// are never handed out (no hold, no dedupe); a commit of a condemned digest resurrects it with
// the fresh object it offers. Doomed keys are deleted from R2 by GC, then purged here.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";

export interface StoredBlob {
  digest: string;
  size: number;
  r2Key: string;
  contentSha256: string;
}

/** A hold: the stored blob plus the holder sequence the following link must carry. */
export interface Held extends StoredBlob {
  heldSeq: number;
  /** When the holder was touched (BlobStore's clock): a refused link releases up to it. */
  touchedAt: number;
}

export interface CommitResult {
  /** Holder sequence of this commit (0 without a holder); the link carries it. */
  heldSeq: number;
  /** The key that holds these bytes from now on (may differ from the one offered). */
  r2Key: string;
  size: number;
  /** False when the offered object duplicates bytes already stored; the caller deletes it. */
  adoptedOffered: boolean;
  /** When this commit touched its holder (BlobStore's clock); 0 without one. A refused push releases up to it. */
  touchedAt: number;
}

/** What abandon() undid for a refused push. */
export interface Abandoned {
  /** This push's holder was released (it was not touched again since). */
  released: boolean;
  /** The row this push created was dropped with it: the caller deletes the offered object. */
  dropped: boolean;
}

/** Most digests one holdMany call takes (keeps each RPC and transaction small). */
export const MAX_HOLD_BATCH = 500;
/** Most holders one page lists. */
export const MAX_HOLDERS_PAGE = 1000;
/** Rows one GC scan call looks at, and most digests/keys one GC call takes. */
export const GC_SCAN_ROWS = 500;
/** Tombstoned repositories listed per candidate; a digest with more is skipped (and reported). */
export const GC_MAX_TOMBS = 100;

/** Most releases one gcDryCondemn call takes. */
export const GC_DRY_RELEASES = 2000;
/** Thrown inside a dry run's transaction to roll it back. */
const ROLLBACK = Symbol("rollback");

export interface GcCandidate { digest: string; size: number; r2Key: string; repos: string[] }

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
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`);
    // Keys GC condemned: their R2 objects are deleted, then the rows purged (docs/adr/0011).
    this.sql.exec(`CREATE TABLE IF NOT EXISTS doomed (r2_key TEXT PRIMARY KEY, size INTEGER NOT NULL, condemned_at INTEGER NOT NULL) WITHOUT ROWID`);
    const cols = (t: string) => this.sql.exec<{ name: string }>(`PRAGMA table_info(${t})`).toArray().map((r) => r.name);
    if (!cols("blobs").includes("seq")) {
      this.ctx.storage.transactionSync(() => {
        this.sql.exec(`ALTER TABLE blobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0`);
        this.sql.exec(`ALTER TABLE blobs ADD COLUMN condemned_at INTEGER`);
        this.sql.exec(`ALTER TABLE holders ADD COLUMN released_at INTEGER`);
      });
    }
    this.sql.exec(`CREATE INDEX IF NOT EXISTS blobs_by_key ON blobs(r2_key)`);
  }

  /** The stored blob, or null when unknown or condemned by GC (its bytes may be going). */
  get(digest: string): StoredBlob | null {
    const row = this.sql.exec<{ size: number; r2_key: string; content_sha256: string }>(
      `SELECT size, r2_key, content_sha256 FROM blobs WHERE digest = ? AND condemned_at IS NULL`, digest).toArray()[0];
    return row ? { digest, size: row.size, r2Key: row.r2_key, contentSha256: row.content_sha256 } : null;
  }

  /**
   * Record verified bytes under `digest`, and `holder` as holding them, in one call. Idempotent;
   * dedupes by content.
   */
  commit(blob: StoredBlob, holder: string | null = null): CommitResult {
    return this.ctx.storage.transactionSync(() => {
      const existing = this.get(blob.digest);
      let result: Omit<CommitResult, "heldSeq" | "touchedAt">;
      if (existing) {
        result = { r2Key: existing.r2Key, size: existing.size, adoptedOffered: existing.r2Key === blob.r2Key };
      } else {
        // Dedupe only onto live rows: a condemned row's object may be being deleted.
        const same = this.sql.exec<{ r2_key: string; size: number }>(
          `SELECT r2_key, size FROM blobs WHERE content_sha256 = ? AND condemned_at IS NULL LIMIT 1`, blob.contentSha256).toArray()[0];
        const r2Key = same ? same.r2_key : blob.r2Key;
        // A condemned row is resurrected with the offered (fresh, uniquely keyed) object; its old
        // key stays doomed, so GC's delete of it cannot touch these bytes.
        this.sql.exec(`INSERT INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, ?)
          ON CONFLICT (digest) DO UPDATE SET size = excluded.size, r2_key = excluded.r2_key,
            content_sha256 = excluded.content_sha256, created_at = excluded.created_at, condemned_at = NULL`,
          blob.digest, blob.size, r2Key, blob.contentSha256, Date.now());
        result = { r2Key, size: blob.size, adoptedOffered: !same };
      }
      const touchedAt = Date.now();
      const heldSeq = holder !== null ? this.touch(blob.digest, holder, touchedAt) : 0;
      return { ...result, heldSeq, touchedAt: holder !== null ? touchedAt : 0 };
    });
  }

  /**
   * Undo a refused push's commit (its TrustStore step wrote nothing, and `repo` holds no member
   * of `digest`), in one transaction: release `repo`'s holder unless it was touched after
   * `touchedAt` (a concurrent push of the same digest keeps it); then, when `offeredKey` is the
   * key this push's commit adopted and the digest is held by nobody and no other row shares the
   * key, drop the row and its tombstones, so the refused push leaves nothing behind once the
   * caller deletes the object. A crash before that delete leaves an object no row names, which
   * GC's reconcile removes.
   */
  abandon(digest: string, repo: string, touchedAt: number, offeredKey: string | null): Abandoned {
    return this.ctx.storage.transactionSync((): Abandoned => {
      const released = this.release(digest, repo, touchedAt + 1);
      if (offeredKey === null || this.held(digest)) return { released, dropped: false };
      const row = this.sql.exec<{ r2_key: string }>(`SELECT r2_key FROM blobs WHERE digest = ? AND condemned_at IS NULL`, digest).toArray()[0];
      if (!row || row.r2_key !== offeredKey) return { released, dropped: false };
      if (this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM blobs WHERE r2_key = ?`, offeredKey).one().n !== 1) return { released, dropped: false };
      this.sql.exec(`DELETE FROM holders WHERE digest = ?`, digest);
      this.sql.exec(`DELETE FROM blobs WHERE digest = ?`, digest);
      return { released, dropped: true };
    });
  }

  /** Record that `repo` holds `digest` (mount); null, writing nothing, when the digest is not stored or condemned. */
  hold(digest: string, repo: string): Held | null {
    const b = this.get(digest);
    if (!b) return null;
    const touchedAt = Date.now();
    return { ...b, heldSeq: this.touch(digest, repo, touchedAt), touchedAt };
  }

  /** hold() for up to MAX_HOLD_BATCH digests (migration, backfill); returns the stored ones. */
  holdMany(repo: string, digests: string[]): Held[] {
    if (digests.length > MAX_HOLD_BATCH) throw new RangeError(`holdMany takes at most ${MAX_HOLD_BATCH} digests`);
    const out: Held[] = [];
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
    return this.ctx.storage.transactionSync(() => {
      const gone = this.sql.exec(`UPDATE holders SET released_at = ? WHERE digest = ? AND repo = ? AND touched_at < ? AND released_at IS NULL`,
        Date.now(), digest, repo, since).rowsWritten > 0;
      if (gone) this.bump(digest);
      return gone;
    });
  }

  /** release() for up to GC_SCAN_ROWS digests of one repository (GC phase 1). */
  releaseMany(repo: string, digests: string[], since: number): number {
    if (digests.length > GC_SCAN_ROWS) throw new RangeError(`releaseMany takes at most ${GC_SCAN_ROWS} digests`);
    let n = 0;
    this.ctx.storage.transactionSync(() => {
      for (const d of new Set(digests)) if (this.release(d, repo, since)) n++;
    });
    return n;
  }

  /** Repositories holding `digest`, by name, after `last`; at most `limit` (≤ MAX_HOLDERS_PAGE). */
  holders(digest: string, limit: number, last: string | null = null): { repos: string[]; next: string | null } {
    const n = Math.max(1, Math.min(limit, MAX_HOLDERS_PAGE));
    const rows = this.sql.exec<{ repo: string }>(`SELECT repo FROM holders WHERE digest = ? AND repo > ? AND released_at IS NULL ORDER BY repo LIMIT ?`,
      digest, last ?? "", n + 1).toArray().map((r) => r.repo);
    const repos = rows.slice(0, n);
    return { repos, next: rows.length > n ? repos[repos.length - 1] : null };
  }

  // ---- snapshot and restore (src/admin/snapshot-routes.ts) -------------------------------------

  /** Live rows after `after`, by digest, at most GC_SCAN_ROWS (holders are not exported: restore re-holds). */
  snapshotBlobs(after: string, n: number): { items: StoredBlob[]; next: string | null } {
    const limit = Math.max(1, Math.min(n, GC_SCAN_ROWS));
    const rows = this.sql.exec<{ digest: string; size: number; r2_key: string; content_sha256: string }>(
      `SELECT digest, size, r2_key, content_sha256 FROM blobs WHERE digest > ? AND condemned_at IS NULL ORDER BY digest LIMIT ?`, after, limit + 1).toArray();
    const items = rows.slice(0, limit).map((r) => ({ digest: r.digest, size: r.size, r2Key: r.r2_key, contentSha256: r.content_sha256 }));
    return { items, next: rows.length > limit ? items[items.length - 1].digest : null };
  }

  isEmpty(): boolean {
    return this.sql.exec(`SELECT 1 FROM blobs LIMIT 1`).toArray().length === 0;
  }

  /**
   * Restore rows whose R2 objects the Worker found. created_at is now, not the snapshot's time:
   * the rows have no holder until their repositories are restored, and GC's grace period must
   * cover that gap. Existing digests are left alone (a retried batch is harmless).
   */
  restoreBlobs(rows: StoredBlob[]): number {
    if (rows.length > GC_SCAN_ROWS) throw new RangeError(`restoreBlobs takes at most ${GC_SCAN_ROWS} rows`);
    let n = 0;
    this.ctx.storage.transactionSync(() => {
      for (const b of rows) {
        n += this.sql.exec(`INSERT INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING RETURNING 1`,
          b.digest, b.size, b.r2Key, b.contentSha256, Date.now()).toArray().length;
      }
    });
    return n;
  }

  // ---- garbage collection (docs/adr/0011) ---------------------------------------------------

  /**
   * Phase 1b, selection: up to GC_SCAN_ROWS live rows after `after` are scanned; those with no
   * holder and created before `cutoff` are candidates, with the repositories that last held them
   * (to fence). `seq` is the holder sequence now: gcCondemn condemns only digests untouched since.
   */
  gcCandidates(cutoff: number, after: string | null): { seq: number; items: GcCandidate[]; skipped: string[]; scanned: number; next: string | null } {
    const seq = this.seqNow();
    const rows = this.sql.exec<{ digest: string; size: number; r2_key: string; created_at: number }>(
      `SELECT digest, size, r2_key, created_at FROM blobs WHERE digest > ? AND condemned_at IS NULL ORDER BY digest LIMIT ?`,
      after ?? "", GC_SCAN_ROWS).toArray();
    const items: GcCandidate[] = [];
    const skipped: string[] = [];
    for (const r of rows) {
      if (r.created_at >= cutoff || this.held(r.digest)) continue;
      const repos = this.sql.exec<{ repo: string }>(`SELECT repo FROM holders WHERE digest = ? ORDER BY repo LIMIT ?`, r.digest, GC_MAX_TOMBS + 1)
        .toArray().map((x) => x.repo);
      if (repos.length > GC_MAX_TOMBS) skipped.push(r.digest);
      else items.push({ digest: r.digest, size: r.size, r2Key: r.r2_key, repos });
    }
    return { seq, items, skipped, scanned: rows.length, next: rows.length === GC_SCAN_ROWS ? rows[rows.length - 1].digest : null };
  }

  /**
   * Phase 1b, condemnation, in one transaction: each digest that still has no holder, was not
   * touched or released after `seq`, and whose object no live holder-carrying row shares, is
   * condemned with every row of the same object; the object's key becomes doomed.
   */
  gcCondemn(digests: string[], seq: number, cutoff: number): { condemned: { digest: string; size: number }[]; doomedKeys: number; doomedBytes: number } {
    if (digests.length > GC_SCAN_ROWS) throw new RangeError(`gcCondemn takes at most ${GC_SCAN_ROWS} digests`);
    return this.ctx.storage.transactionSync(() => this.condemnTx(digests, seq, cutoff));
  }

  /**
   * A dry run's condemnation of one page, exactly as the real run would do it after its phase 1:
   * the holders the run's drops would release (`released`, digests after `after`) are released,
   * candidates selected and condemned — in one transaction that is then rolled back. `complete`:
   * `released` lists every release after `after`; otherwise only those up to its last digest,
   * and the page stops there.
   */
  gcDryCondemn(cutoff: number, after: string | null, released: { digest: string; repo: string }[], complete: boolean): { scanned: number; skipped: number; condemned: number; doomedBytes: number; next: string | null } {
    if (released.length > GC_DRY_RELEASES) throw new RangeError(`gcDryCondemn takes at most ${GC_DRY_RELEASES} releases`);
    const upTo = complete || !released.length ? null : released[released.length - 1].digest;
    let out = { scanned: 0, skipped: 0, condemned: 0, doomedBytes: 0, next: null as string | null };
    try {
      this.ctx.storage.transactionSync(() => {
        const now = Date.now();
        for (const r of released) this.sql.exec(`UPDATE holders SET released_at = ? WHERE digest = ? AND repo = ? AND released_at IS NULL`, now, r.digest, r.repo);
        const rows = this.sql.exec<{ digest: string; created_at: number }>(
          `SELECT digest, created_at FROM blobs WHERE digest > ? AND condemned_at IS NULL AND digest <= ? ORDER BY digest LIMIT ?`,
          after ?? "", upTo ?? "\uffff", GC_SCAN_ROWS).toArray();
        const doomed: string[] = [];
        for (const r of rows) {
          if (r.created_at >= cutoff || this.held(r.digest)) continue;
          const tombs = this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM holders WHERE digest = ?`, r.digest).one().n;
          if (tombs > GC_MAX_TOMBS) out.skipped++;
          else doomed.push(r.digest);
        }
        const c = this.condemnTx(doomed, Number.MAX_SAFE_INTEGER, cutoff);
        const next = rows.length === GC_SCAN_ROWS ? rows[rows.length - 1].digest : upTo;
        out = { scanned: rows.length, skipped: out.skipped, condemned: c.condemned.length, doomedBytes: c.doomedBytes, next };
        throw ROLLBACK;
      });
    } catch (err) {
      if (err !== ROLLBACK) throw err;
    }
    return out;
  }

  private condemnTx(digests: string[], seq: number, cutoff: number): { condemned: { digest: string; size: number }[]; doomedKeys: number; doomedBytes: number } {
    {
      const condemned: { digest: string; size: number }[] = [];
      let doomedKeys = 0;
      let doomedBytes = 0;
      const now = Date.now();
      for (const d of new Set(digests)) {
        const row = this.sql.exec<{ r2_key: string; size: number }>(`SELECT r2_key, size FROM blobs WHERE digest = ? AND condemned_at IS NULL`, d).toArray()[0];
        if (!row) continue;
        const sharers = this.sql.exec<{ digest: string; size: number; seq: number; created_at: number }>(
          `SELECT digest, size, seq, created_at FROM blobs WHERE r2_key = ? AND condemned_at IS NULL`, row.r2_key).toArray();
        if (!sharers.every((x) => x.seq <= seq && x.created_at < cutoff && !this.held(x.digest))) continue;
        for (const x of sharers) {
          this.sql.exec(`UPDATE blobs SET condemned_at = ? WHERE digest = ?`, now, x.digest);
          condemned.push({ digest: x.digest, size: x.size });
        }
        if (this.sql.exec(`INSERT INTO doomed (r2_key, size, condemned_at) VALUES (?, ?, ?) ON CONFLICT (r2_key) DO NOTHING`, row.r2_key, row.size, now).rowsWritten > 0) {
          doomedKeys++;
          doomedBytes += row.size;
        }
      }
      return { condemned, doomedKeys, doomedBytes };
    }
  }

  /** Phase 2: doomed keys to delete from R2 (at most GC_SCAN_ROWS). */
  gcDoomed(limit = GC_SCAN_ROWS): { key: string; size: number }[] {
    return this.sql.exec<{ r2_key: string; size: number }>(`SELECT r2_key, size FROM doomed ORDER BY r2_key LIMIT ?`, Math.min(limit, GC_SCAN_ROWS))
      .toArray().map((r) => ({ key: r.r2_key, size: r.size }));
  }

  /** Phase 2, after the objects are gone: drop the doomed keys and the rows still condemned on them. */
  gcPurge(keys: string[]): number {
    if (keys.length > GC_SCAN_ROWS) throw new RangeError(`gcPurge takes at most ${GC_SCAN_ROWS} keys`);
    let rows = 0;
    this.ctx.storage.transactionSync(() => {
      for (const k of keys) {
        const ds = this.sql.exec<{ digest: string }>(`SELECT digest FROM blobs WHERE r2_key = ? AND condemned_at IS NOT NULL`, k).toArray();
        for (const { digest } of ds) {
          this.sql.exec(`DELETE FROM holders WHERE digest = ? AND released_at IS NOT NULL`, digest);
          rows += this.sql.exec(`DELETE FROM blobs WHERE digest = ?`, digest).rowsWritten;
        }
        this.sql.exec(`DELETE FROM doomed WHERE r2_key = ?`, k);
      }
    });
    return rows;
  }

  /** Reconcile: which of these R2 keys a row or a doomed entry names (≤ GC_SCAN_ROWS keys). */
  gcKnownKeys(keys: string[]): string[] {
    if (keys.length > GC_SCAN_ROWS) throw new RangeError(`gcKnownKeys takes at most ${GC_SCAN_ROWS} keys`);
    return keys.filter((k) => this.sql.exec(`SELECT 1 FROM blobs WHERE r2_key = ? LIMIT 1`, k).toArray().length > 0
      || this.sql.exec(`SELECT 1 FROM doomed WHERE r2_key = ?`, k).toArray().length > 0);
  }

  /** Reconcile: live rows after `after` (digest order), to check their objects exist. */
  gcRows(after: string | null, limit: number): { digest: string; r2Key: string; size: number }[] {
    return this.sql.exec<{ digest: string; r2_key: string; size: number }>(
      `SELECT digest, r2_key, size FROM blobs WHERE digest > ? AND condemned_at IS NULL ORDER BY digest LIMIT ?`, after ?? "", Math.min(limit, GC_SCAN_ROWS))
      .toArray().map((r) => ({ digest: r.digest, r2Key: r.r2_key, size: r.size }));
  }

  /** Bench only (/_bench/gc/seed): rows as deleted pushes leave them — no holder, created long ago. */
  benchSeedUnheld(rows: StoredBlob[]): void {
    if (rows.length > GC_SCAN_ROWS) throw new RangeError(`benchSeedUnheld takes at most ${GC_SCAN_ROWS} rows`);
    this.ctx.storage.transactionSync(() => {
      for (const r of rows) {
        this.sql.exec(`INSERT OR IGNORE INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, 0)`, r.digest, r.size, r.r2Key, r.contentSha256);
      }
    });
  }

  /**
   * Usage: physical bytes (distinct live objects), bytes per digest, and held bytes — each
   * digest's size counted once per repository holding it, the registry's logical size.
   */
  usage(): { blobs: number; objects: number; physicalBytes: number; digestBytes: number; heldBytes: number } {
    const a = this.sql.exec<{ n: number; b: number }>(`SELECT count(*) AS n, coalesce(sum(size), 0) AS b FROM blobs WHERE condemned_at IS NULL`).one();
    const o = this.sql.exec<{ n: number; b: number }>(`SELECT count(*) AS n, coalesce(sum(size), 0) AS b FROM (SELECT r2_key, max(size) AS size FROM blobs WHERE condemned_at IS NULL GROUP BY r2_key)`).one();
    const h = this.sql.exec<{ b: number }>(`SELECT coalesce(sum(b.size), 0) AS b FROM holders h JOIN blobs b ON b.digest = h.digest
      WHERE h.released_at IS NULL AND b.condemned_at IS NULL`).one();
    return { blobs: a.n, objects: o.n, physicalBytes: o.b, digestBytes: a.b, heldBytes: h.b };
  }

  private held(digest: string): boolean {
    return this.sql.exec(`SELECT 1 FROM holders WHERE digest = ? AND released_at IS NULL LIMIT 1`, digest).toArray().length > 0;
  }

  private seqNow(): number {
    return Number(this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'seq'`).toArray()[0]?.value ?? 0);
  }

  /** Next holder sequence, stamped on the digest's row: any holder change after a GC selection is seen. */
  private bump(digest: string): number {
    const seq = this.seqNow() + 1;
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)`, String(seq));
    this.sql.exec(`UPDATE blobs SET seq = ? WHERE digest = ?`, seq, digest);
    return seq;
  }

  private touch(digest: string, repo: string, now = Date.now()): number {
    this.sql.exec(`INSERT INTO holders (digest, repo, touched_at) VALUES (?, ?, ?)
      ON CONFLICT (digest, repo) DO UPDATE SET touched_at = excluded.touched_at, released_at = NULL`, digest, repo, now);
    return this.bump(digest);
  }
}
