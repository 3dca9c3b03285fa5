// TrustStore: what each repository may serve. Per-repository membership (repo, digest, kind)
// beside the shared content-addressed storage, tags, referrers and the catalog.
// Every read of a blob or manifest goes through a membership row here first.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { REFERRERS_PAGE_BYTES, SQL_IN_BATCH } from "../oci/limits";

export type MemberKind = "blob" | "manifest";

export interface Member {
  digest: string;
  kind: MemberKind;
  size: number;
  r2Key: string;
  mediaType: string | null;
}

export interface ManifestRecord extends Member {
  kind: "manifest";
  mediaType: string;
}

export interface ReferrerRecord {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  annotations: Record<string, string> | null;
}

export interface PutManifestInput {
  repo: string;
  manifest: { digest: string; size: number; r2Key: string; mediaType: string };
  tag: string | null;
  subject: string | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
  /** Digests that must already be members (blobs and child manifests); checked in the same transaction. */
  requiredBlobs: string[];
  requiredManifests: string[];
}

export type PutManifestResult =
  | { ok: true; previousTagDigest: string | null }
  | { ok: false; missingBlobs: string[]; missingManifests: string[] };

/** 1: tags/manifests/referrers; 2: per-repository blob membership (with backfill). */
const SCHEMA_VERSION = 2;

export interface Page<T> {
  items: T[];
  /** Present when more items follow: the `last` value to continue from. */
  next: string | null;
}

export class TrustStore extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS members (
        repo TEXT NOT NULL, digest TEXT NOT NULL, kind TEXT NOT NULL,
        size INTEGER NOT NULL, r2_key TEXT NOT NULL, media_type TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (repo, digest, kind)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS members_by_digest ON members(digest, kind);
      CREATE TABLE IF NOT EXISTS tags (
        repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (repo, tag)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS tags_by_digest ON tags(repo, digest);
      CREATE TABLE IF NOT EXISTS referrers (
        repo TEXT NOT NULL, subject TEXT NOT NULL, digest TEXT NOT NULL,
        media_type TEXT NOT NULL, size INTEGER NOT NULL, artifact_type TEXT, annotations TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (repo, subject, digest)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS referrers_by_digest ON referrers(repo, digest);
      CREATE TABLE IF NOT EXISTS repos (
        repo TEXT PRIMARY KEY, created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    `);
    this.migrate();
  }

  /**
   * Schema 2 added per-repository blob membership. Repositories stored before it (tags and
   * manifests, bytes in the shared store) are flagged for a membership backfill, so an upgrade
   * loses no access and grants none.
   */
  private migrate(): void {
    const version = Number(this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'schema'`).toArray()[0]?.value ?? 0);
    if (version >= SCHEMA_VERSION) return;
    this.ctx.storage.transactionSync(() => {
      const cols = this.sql.exec<{ name: string }>(`PRAGMA table_info(repos)`).toArray().map((r) => r.name);
      if (!cols.includes("needs_backfill")) this.sql.exec(`ALTER TABLE repos ADD COLUMN needs_backfill INTEGER NOT NULL DEFAULT 0`);
      if (version > 0 || this.sql.exec(`SELECT 1 FROM tags LIMIT 1`).toArray().length) {
        // Data from before the membership index: every repository with tags must be walked.
        this.sql.exec(`INSERT INTO repos (repo, created_at, needs_backfill) SELECT DISTINCT repo, ?, 1 FROM tags WHERE true
          ON CONFLICT (repo) DO UPDATE SET needs_backfill = 1`, Date.now());
      }
      this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)`, String(SCHEMA_VERSION));
    });
  }

  // ---- membership -------------------------------------------------------------------------

  /**
   * A blob readable through `repo` (manifests are readable through the blobs endpoint too).
   * "backfill" means: not a member yet, but the repository predates the membership index and
   * must be walked first (see backfillRoots).
   */
  blob(repo: string, digest: string): Member | null | "backfill" {
    const row = this.sql.exec<{ kind: MemberKind; size: number; r2_key: string; media_type: string | null }>(
      `SELECT kind, size, r2_key, media_type FROM members WHERE repo = ? AND digest = ? ORDER BY kind LIMIT 1`,
      repo, digest).toArray()[0];
    if (row) return { digest, kind: row.kind, size: row.size, r2Key: row.r2_key, mediaType: row.media_type };
    return this.needsBackfill(repo) ? "backfill" : null;
  }

  needsBackfill(repo: string): boolean {
    return this.sql.exec(`SELECT 1 FROM repos WHERE repo = ? AND needs_backfill = 1`, repo).toArray().length > 0;
  }

  /** Repositories still waiting for a membership backfill. */
  pendingBackfills(): string[] {
    return this.sql.exec<{ repo: string }>(`SELECT repo FROM repos WHERE needs_backfill = 1 ORDER BY repo`).toArray().map((r) => r.repo);
  }

  /** Manifest digests a backfill walks from: every tag's target and every known manifest. */
  backfillRoots(repo: string): string[] {
    return this.sql.exec<{ digest: string }>(
      `SELECT digest FROM tags WHERE repo = ? UNION SELECT digest FROM members WHERE repo = ? AND kind = 'manifest'`, repo, repo)
      .toArray().map((r) => r.digest);
  }

  finishBackfill(repo: string): void {
    this.sql.exec(`UPDATE repos SET needs_backfill = 0 WHERE repo = ?`, repo);
  }

  /** Record that `repo` holds these bytes. Idempotent. */
  link(repo: string, member: Member): void {
    this.ctx.storage.transactionSync(() => {
      this.insertMember(repo, member);
    });
  }

  /** Repositories holding blob `digest` (candidates for a mount without `from`). */
  reposWithBlob(digest: string, limit: number): string[] {
    return this.sql.exec<{ repo: string }>(`SELECT repo FROM members WHERE digest = ? AND kind = 'blob' ORDER BY repo LIMIT ?`, digest, limit)
      .toArray().map((r) => r.repo);
  }

  /** Remove a blob from one repository only; bytes stay for garbage collection. */
  unlinkBlob(repo: string, digest: string): boolean {
    return this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'blob'`, repo, digest).rowsWritten > 0;
  }

  // ---- manifests and tags -------------------------------------------------------------------

  /**
   * Which required references are not members of `repo`: the manifest route asks before it writes
   * any byte (a refused push stores nothing); putManifest asks again inside its transaction.
   */
  missingReferences(repo: string, requiredBlobs: string[], requiredManifests: string[]): { missingBlobs: string[]; missingManifests: string[] } {
    return { missingBlobs: this.missing(repo, requiredBlobs, "blob"), missingManifests: this.missing(repo, requiredManifests, "manifest") };
  }

  /**
   * Store a manifest's membership, its tag and its referrer row atomically. The caller bounds the
   * input (MAX_MANIFEST_REFERENCES, MAX_REFERRER_ANNOTATION_BYTES): no manifest bytes come here.
   */
  putManifest(input: PutManifestInput): PutManifestResult {
    return this.ctx.storage.transactionSync(() => {
      const missingBlobs = this.missing(input.repo, input.requiredBlobs, "blob");
      const missingManifests = this.missing(input.repo, input.requiredManifests, "manifest");
      if (missingBlobs.length || missingManifests.length) return { ok: false, missingBlobs, missingManifests } as const;
      const m = input.manifest;
      this.insertMember(input.repo, { digest: m.digest, kind: "manifest", size: m.size, r2Key: m.r2Key, mediaType: m.mediaType });
      let previousTagDigest: string | null = null;
      if (input.tag !== null) {
        previousTagDigest = this.sql.exec<{ digest: string }>(`SELECT digest FROM tags WHERE repo = ? AND tag = ?`, input.repo, input.tag).toArray()[0]?.digest ?? null;
        this.sql.exec(`INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?)
          ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`,
          input.repo, input.tag, m.digest, Date.now());
      }
      if (input.subject !== null) {
        this.sql.exec(`INSERT OR REPLACE INTO referrers (repo, subject, digest, media_type, size, artifact_type, annotations, created_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
          input.repo, input.subject, m.digest, m.mediaType, m.size, input.artifactType,
          input.annotations ? JSON.stringify(input.annotations) : null, Date.now());
      }
      return { ok: true, previousTagDigest } as const;
    });
  }

  /** Resolve a tag or digest to a manifest of this repository. */
  manifest(repo: string, reference: string, isDigest: boolean): ManifestRecord | null | "backfill" {
    const digest = isDigest
      ? reference
      : this.sql.exec<{ digest: string }>(`SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, reference).toArray()[0]?.digest;
    const row = digest === undefined ? undefined : this.sql.exec<{ size: number; r2_key: string; media_type: string }>(
      `SELECT size, r2_key, media_type FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, digest).toArray()[0];
    if (row) return { digest: digest!, kind: "manifest", size: row.size, r2Key: row.r2_key, mediaType: row.media_type };
    return this.needsBackfill(repo) ? "backfill" : null;
  }

  tagDigest(repo: string, tag: string): string | null {
    return this.sql.exec<{ digest: string }>(`SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, tag).toArray()[0]?.digest ?? null;
  }

  /** Delete a manifest by digest: its membership, every tag pointing at it, and its referrer rows. */
  deleteManifest(repo: string, digest: string): boolean {
    return this.ctx.storage.transactionSync(() => {
      const gone = this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, digest).rowsWritten > 0;
      if (!gone) return false;
      this.sql.exec(`DELETE FROM tags WHERE repo = ? AND digest = ?`, repo, digest);
      this.sql.exec(`DELETE FROM referrers WHERE repo = ? AND digest = ?`, repo, digest);
      return true;
    });
  }

  /** Tags of `repo` pointing at manifest `digest`. */
  tagsOf(repo: string, digest: string): string[] {
    return this.sql.exec<{ tag: string }>(`SELECT tag FROM tags WHERE repo = ? AND digest = ?`, repo, digest).toArray().map((r) => r.tag);
  }

  deleteTag(repo: string, tag: string): boolean {
    return this.sql.exec(`DELETE FROM tags WHERE repo = ? AND tag = ?`, repo, tag).rowsWritten > 0;
  }

  /** Tags of a repository, lexically sorted; null when the repository does not exist. */
  tags(repo: string, n: number | null, last: string | null): Page<string> | null {
    if (!this.repoExists(repo)) return null;
    // The spec's "lexical order" is case-insensitive alphanumeric; ties broken by bytes.
    const limit = n === null ? -1 : n + 1;
    const after = last ?? "";
    const rows = this.sql.exec<{ tag: string }>(
      `SELECT tag FROM tags WHERE repo = ? AND (lower(tag) > lower(?) OR (lower(tag) = lower(?) AND tag > ?))
       ORDER BY lower(tag), tag LIMIT ?`, repo, after, after, after, limit).toArray().map((r) => r.tag);
    return paginate(rows, n);
  }

  // ---- referrers and catalog ----------------------------------------------------------------

  /**
   * Referrers of `subject` in `repo`, ordered by digest for stable pagination, optionally
   * filtered by artifactType and by annotations (key = value, all must match). A page holds at
   * most `n` descriptors and at most `maxBytes` of them as JSON (capped at REFERRERS_PAGE_BYTES):
   * it ends early, with `next` set, when the next row would not fit. The first row always fits
   * (a row is under SQLite's 2 MB), so paging always makes progress.
   */
  referrers(repo: string, subject: string, filter: { artifactType: string | null; annotations: [string, string][] }, n: number, last: string | null, maxBytes = REFERRERS_PAGE_BYTES): Page<ReferrerRecord> {
    if (n <= 0) return { items: [], next: null };
    const budget = Math.min(maxBytes, REFERRERS_PAGE_BYTES) - PAGE_ENVELOPE_BYTES;
    let q = `SELECT digest, media_type, size, artifact_type, annotations, length(CAST(annotations AS BLOB)) AS annotation_bytes
      FROM referrers WHERE repo = ? AND subject = ? AND digest > ?`;
    const args: (string | number)[] = [repo, subject, last ?? ""];
    if (filter.artifactType !== null) {
      q += ` AND artifact_type = ?`;
      args.push(filter.artifactType);
    }
    if (filter.annotations.length) {
      // All filters travel as one JSON parameter, compared by exact key (no JSON-path syntax):
      // a row matches when no filter lacks an equal annotation.
      q += ` AND NOT EXISTS (SELECT 1 FROM json_each(?) AS f WHERE NOT EXISTS (
        SELECT 1 FROM json_each(referrers.annotations) AS a WHERE a.key = json_extract(f.value, '$[0]') AND a.value = json_extract(f.value, '$[1]')))`;
      args.push(JSON.stringify(filter.annotations));
    }
    q += ` ORDER BY digest LIMIT ?`;
    args.push(n + 1);
    const items: ReferrerRecord[] = [];
    let bytes = 0;
    let more = false;
    // Iterate the cursor: rows after the page ends are never read.
    for (const r of this.sql.exec<{ digest: string; media_type: string; size: number; artifact_type: string | null; annotations: string | null; annotation_bytes: number | null }>(q, ...args)) {
      const cost = DESCRIPTOR_OVERHEAD_BYTES + r.digest.length + r.media_type.length + (r.artifact_type?.length ?? 0) + (r.annotation_bytes ?? 0);
      if (items.length === n || (items.length > 0 && bytes + cost > budget)) {
        more = true;
        break;
      }
      bytes += cost;
      items.push({
        digest: r.digest, mediaType: r.media_type, size: r.size, artifactType: r.artifact_type,
        annotations: r.annotations ? (JSON.parse(r.annotations) as Record<string, string>) : null,
      });
    }
    return { items, next: more ? items[items.length - 1].digest : null };
  }

  catalog(n: number | null, last: string | null): Page<string> {
    const limit = n === null ? -1 : n + 1;
    const rows = this.sql.exec<{ repo: string }>(`SELECT repo FROM repos WHERE repo > ? ORDER BY repo LIMIT ?`, last ?? "", limit)
      .toArray().map((r) => r.repo);
    return paginate(rows, n);
  }

  repoExists(repo: string): boolean {
    return this.sql.exec(`SELECT 1 FROM repos WHERE repo = ?`, repo).toArray().length > 0;
  }

  // ---- internals ----------------------------------------------------------------------------

  private insertMember(repo: string, m: Member): void {
    const now = Date.now();
    this.sql.exec(`INSERT INTO members (repo, digest, kind, size, r2_key, media_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (repo, digest, kind) DO NOTHING`, repo, m.digest, m.kind, m.size, m.r2Key, m.mediaType, now);
    this.sql.exec(`INSERT INTO repos (repo, created_at) VALUES (?, ?) ON CONFLICT (repo) DO NOTHING`, repo, now);
  }

  /** Digests of `kind` that are not members of `repo`, in input order; batched `IN` lookups. */
  private missing(repo: string, digests: string[], kind: MemberKind): string[] {
    const want = [...new Set(digests)];
    const out: string[] = [];
    for (let i = 0; i < want.length; i += SQL_IN_BATCH) {
      const batch = want.slice(i, i + SQL_IN_BATCH);
      const found = new Set(this.sql.exec<{ digest: string }>(
        `SELECT digest FROM members WHERE repo = ? AND kind = ? AND digest IN (${batch.map(() => "?").join(",")})`, repo, kind, ...batch)
        .toArray().map((r) => r.digest));
      for (const d of batch) if (!found.has(d)) out.push(d);
    }
    return out;
  }
}

/** Upper bounds for the referrers response's JSON around and per descriptor (keys, quotes, size digits). */
const PAGE_ENVELOPE_BYTES = 256;
const DESCRIPTOR_OVERHEAD_BYTES = 128;

function paginate(rows: string[], n: number | null): Page<string> {
  if (n !== null && rows.length > n) {
    const items = rows.slice(0, n);
    return { items, next: items[items.length - 1] ?? null };
  }
  return { items: rows, next: null };
}
