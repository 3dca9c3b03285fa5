// TrustStore: what ONE repository may serve (one object per repository, docs/adr/0008):
// membership (digest, kind) beside the shared content-addressed storage, tags and referrers.
// Every read of a blob or manifest goes through a membership row here first. Rows keep their
// `repo` column (the pre-schema-3 layout, copied verbatim by the migration) and every method
// still filters by it; ready() makes sure an object only ever answers for its own repository.
// The object named LEGACY_TRUST_STORE holds the single-object layout of schema ≤ 2: it serves
// only the migration (exports, progress, the alarm that drives it), never reads or writes.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { catalogFor, groupByBlobShard, legacyIndexEnabled, legacyTrustStore, trustStoreFor } from "./index";
import { QuotaMeter, type QuotaHold, type QuotaRefusal } from "../gc/quotas";
import { MAX_HOLD_BATCH } from "./blob-store";
import { globToRegExp } from "../auth/policy";
import { REFERRERS_PAGE_BYTES, SQL_IN_BATCH } from "../oci/limits";
import { SliceClock, yieldThread } from "../util/slices";

export type MemberKind = "blob" | "manifest";

/**
 * References per slice of a heavy manifest put (docs/adr/0022): past this many, putManifest checks
 * and writes them in slices of this size, each a few ms, giving the thread back in between.
 */
export const PUT_SLICE_REFS = 2_000;

/** Most tags one tagTimes call answers for (a UI page shows 20). */
export const TAG_TIMES_MAX = 100;

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

/** One signature's verification result for a subject (docs/signatures.md). */
export interface AttestationRecord {
  /** Repository holding the signature manifest. */
  source: string;
  signature: string;
  /** The payload layer's digest ("" when the signature has no cosign payload). */
  payload: string;
  kind: string;
  signer: string | null;
  verified: boolean;
  reason: string | null;
  verifiedAt: number;
  /** Generation (registration time, ms) of the key that verified it; 0 when none did. */
  signerGen?: number;
}

/** Most attestation rows kept per subject. */
export const ATTESTATIONS_MAX = 200;

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
  /**
   * "refuse": store nothing when `tag` exists and points at another digest (answer `tagIsAt`), so
   * an immutable tag is checked in the same transaction that would move it. Default "allow".
   */
  ifTagMoves?: "refuse" | "allow";
  /** BlobStore holder sequence of the manifest's commit; a GC fence newer than it refuses the write. */
  heldSeq?: number;
  /** What the manifest references (GC liveness); default requiredBlobs + requiredManifests. */
  refs?: string[];
}

/**
 * How the object spent a putManifest (bench /_bench/manifest-phases, docs/capacity.md): its
 * synchronous slices — the spans other requests on this thread wait behind — count, longest, sum (ms).
 */
export interface SliceStats { n: number; maxMs: number; totalMs: number }

export type PutManifestResult =
  | { ok: true; previousTagDigest: string | null; slices?: SliceStats }
  | {
    ok: false; slices?: SliceStats; missingBlobs: string[]; missingManifests: string[]; tagIsAt: string | null; fenced?: boolean; quota?: QuotaRefusal;
    /** The digest is a member of the repository already (in any kind): its BlobStore holder must stay. */
    held: boolean;
  };

export type { QuotaRefusal } from "../gc/quotas";

/**
 * `held` on a refusal: the digest is a member of the repository already (in any kind), so the
 * refused push must not release its BlobStore holder. `ended`: the link closed a signed upload
 * that had already ended (docs/adr/0013).
 */
export type LinkResult = { ok: true } | { ok: false; fenced: true } | { ok: false; quota: QuotaRefusal; held: boolean } | { ok: false; ended: true; held: boolean };

/** A signed upload id (docs/adr/0013) that a link or a cancel ends; remembered until `expiresAt`. */
export interface UploadEnd { id: string; expiresAt: number }

/**
 * Ended signed upload ids kept per repository (docs/adr/0013). Rows past their id's expiry are
 * pruned as new ones come; beyond this many the oldest go first (such an id then reads as a fresh
 * upload again, which only lets its own principal start over).
 */
export const MAX_ENDED_UPLOADS = 100_000;
/** Expired ended-upload rows pruned per write (keeps each write's work bounded). */
const ENDED_PRUNE_BATCH = 20;


/** The UTC day number of a time (pull tracking: a manifest's last pull is known to the day). */
export const pullDay = (ms = Date.now()): number => Math.floor(ms / 86_400_000);

export interface RetentionSpec {
  /** Keep the newest N tags by push time; null: no tag limit. */
  keepLastTags: number | null;
  /** Tag globs always kept. */
  keepTags: string[];
  /** Tag globs of immutable-tag policy rules for this repository: never removed. */
  immutableTags: string[];
  /** Untagged manifests created before this time (ms) go; null: keep them. */
  untaggedBefore: number | null;
  deleteOrphanReferrers: boolean;
  /**
   * Manifests neither pulled nor stored since this time (ms) go, with their tags; null: keep.
   * A pull on day D counts until the end of D (the stamp is a day), so the drop comes N to N+1 days on.
   */
  unpulledBefore?: number | null;
}

export interface RetentionResult {
  tags: { tag: string; digest: string; why?: "unpulled" }[];
  manifests: { digest: string; size: number; why: "untagged" | "orphan-referrer" | "unpulled"; held: boolean }[];
  more: boolean;
}

/** Tag globs read like the policy engine's (tags have no "/", so "*" spans the whole tag). */
const globRe = globToRegExp;

/** Most removals of each kind one gcPlan call lists (a dry run's plan per repository). */
export const GC_PLAN_MAX = 10_000;

/** What a real GC run would remove in one repository (gcPlan). */
export interface GcPlan {
  tags: RetentionResult["tags"];
  manifests: RetentionResult["manifests"];
  dropped: GcDropResult["dropped"];
  /** The repository would be left with no members and no tags (it would leave the catalog). */
  empty: boolean;
  truncated: boolean;
}

/** Thrown inside gcPlan's transaction to roll it back. */
const ROLLBACK = Symbol("rollback");

/** Most refs one gcRecordRefs call takes. */
export const GC_REFS_BATCH = 2000;

export interface GcDropResult {
  /** Memberships dropped (or, in a dry run, that would be). */
  dropped: { digest: string; size: number; held: boolean }[];
  /** True when more unlive memberships may remain (call again). */
  more: boolean;
  /** Manifests whose references are not indexed yet: nothing is dropped until they are. */
  unindexed: { digest: string; r2Key: string; mediaType: string }[];
  needsBackfill: boolean;
  /** The repository has no members and no tags left (it leaves the catalog). */
  empty: boolean;
}

/** 1: tags/manifests/referrers; 2: per-repository blob membership (with backfill); 3: one object per repository. */
const SCHEMA_VERSION = 3;

/** Rows per export batch of the migration, and a soft byte budget per batch (well under the RPC cap). */
const EXPORT_ROWS = 200;
const EXPORT_BYTES = 4 * 1024 * 1024;
/** Repositories the migration alarm moves per run before it re-arms itself. */
const MIGRATE_PER_ALARM = 20;

type Table = "repos" | "members" | "tags" | "referrers";
/** Tables a repository's rows live in, in export order, with their key columns after `repo`. */
const EXPORT_TABLES: { table: Table; keys: string[] }[] = [
  { table: "repos", keys: [] },
  { table: "members", keys: ["digest", "kind"] },
  { table: "tags", keys: ["tag"] },
  { table: "referrers", keys: ["subject", "digest"] },
];
type Row = Record<string, string | number | null>;
/**
 * What a snapshot holds of a repository, in restore order: refs before members, so a restored blob
 * membership is never briefly unreferenced (GC phase 1 would drop it). Columns exclude `repo`.
 */
export type SnapshotTable = "repos" | "refs" | "members" | "tags" | "referrers";
export const SNAPSHOT_TABLES: { table: SnapshotTable; keys: string[]; cols: string[] }[] = [
  { table: "repos", keys: [], cols: ["created_at", "needs_backfill"] },
  { table: "refs", keys: ["manifest", "digest"], cols: ["manifest", "digest"] },
  { table: "members", keys: ["digest", "kind"], cols: ["digest", "kind", "size", "r2_key", "media_type", "created_at", "refs_indexed"] },
  { table: "tags", keys: ["tag"], cols: ["tag", "digest", "updated_at"] },
  { table: "referrers", keys: ["subject", "digest"], cols: ["subject", "digest", "media_type", "size", "artifact_type", "annotations", "created_at"] },
];
/** Most rows one restoreRows call takes. */
export const RESTORE_ROWS = 1000;
export interface ExportCursor { table: number; after: (string | number)[] | null }
export interface ExportBatch { parts: { table: Table; rows: Row[] }[]; next: ExportCursor | null }

export interface MigrationStatus {
  /** False when there is no pre-schema-3 data: nothing to migrate. */
  legacy: boolean;
  state: "none" | "idle" | "running" | "done";
  repositories: number;
  migrated: number;
  startedAt: number | null;
  finishedAt: number | null;
  lastError: string | null;
}

export interface Page<T> {
  items: T[];
  /** Present when more items follow: the `last` value to continue from. */
  next: string | null;
}

export class TrustStore extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** "legacy": the pre-schema-3 single object (migration only); "repo": one repository's object. */
  private role: "repo" | "legacy" = "repo";
  /** The repository this object answers for (set on first use). */
  private owner: string | null = null;
  /** True once this object has taken over its repository's rows from the legacy object (or had none). */
  private imported = false;
  private cataloged = false;
  /** Namespace quotas: this repository's reservations and reports to its rules' counters (src/gc/quotas.ts). */
  private readonly meter: QuotaMeter;
  /**
   * Whether this object has its schema. A repository's object creates it on its first write (or
   * import), so reads of repositories that do not exist leave no stored object behind.
   */
  private stored = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.meter = new QuotaMeter(env, (repo) => (this.stored ? this.bytes(repo) : 0));
    if (this.sql.exec(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'members'`).toArray().length) this.init();
    // A sliced manifest put that a crash interrupted left its pending row: undo it before anything else runs.
    if (this.stored && this.sql.exec(`SELECT 1 FROM pending_puts LIMIT 1`).toArray().length) {
      void ctx.blockConcurrencyWhile(async () => { await this.sweepPending(); });
    }
  }

  /** Create or upgrade the schema and load this object's role (tests call it after writing old state). */
  init(): void {
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
      CREATE TABLE IF NOT EXISTS refs (
        repo TEXT NOT NULL, manifest TEXT NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (repo, manifest, digest)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS refs_by_digest ON refs(repo, digest);
      CREATE TABLE IF NOT EXISTS fences (digest TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS attestations (
        repo TEXT NOT NULL, subject TEXT NOT NULL, source TEXT NOT NULL, signature TEXT NOT NULL, payload TEXT NOT NULL,
        kind TEXT NOT NULL, signer TEXT, verified INTEGER NOT NULL, reason TEXT, verified_at INTEGER NOT NULL,
        PRIMARY KEY (repo, subject, source, signature, payload)
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS pending_puts (
        id TEXT PRIMARY KEY, repo TEXT NOT NULL, manifest TEXT NOT NULL, started_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS upload_ends (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, expires_at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS upload_ends_by_expiry ON upload_ends(expires_at);
      CREATE INDEX IF NOT EXISTS attestations_by_signature ON attestations(repo, source, signature);
      CREATE TABLE IF NOT EXISTS revoked_signers (signer TEXT PRIMARY KEY, gen INTEGER NOT NULL) WITHOUT ROWID;
    `);
    // Attestation rows name the generation of the key that verified them (its registration time), so
    // a deleted key's rows can be revoked without touching a re-registered key of the same name.
    if (!this.sql.exec<{ name: string }>(`PRAGMA table_info(attestations)`).toArray().some((r) => r.name === "signer_gen")) {
      this.sql.exec(`ALTER TABLE attestations ADD COLUMN signer_gen INTEGER NOT NULL DEFAULT 0`);
    }
    // GC (docs/adr/0011): a manifest's references are indexed when it is stored; rows from
    // before that have refs_indexed = 0 and are indexed by GC before anything is dropped.
    const memberCols = this.sql.exec<{ name: string }>(`PRAGMA table_info(members)`).toArray().map((r) => r.name);
    if (!memberCols.includes("refs_indexed")) {
      this.sql.exec(`ALTER TABLE members ADD COLUMN refs_indexed INTEGER NOT NULL DEFAULT 0`);
    }
    // Pull tracking (docs/proxy.md "Retention"): the UTC day a manifest was last pulled. Rows from
    // before it count as pulled on the day the column arrives, so an upgrade drops nothing at once.
    if (!memberCols.includes("pulled_day")) {
      this.sql.exec(`ALTER TABLE members ADD COLUMN pulled_day INTEGER`);
      this.sql.exec(`UPDATE members SET pulled_day = ? WHERE kind = 'manifest'`, pullDay());
    }
    this.stored = true;
    this.migrate();
    this.role = this.meta("role") === "legacy" ? "legacy" : "repo";
    this.owner = this.meta("repo");
    this.imported = this.meta("import") === "done";
    this.cataloged = this.meta("cataloged") === "1";
  }

  /**
   * Schema 2 added per-repository blob membership. Repositories stored before it (tags and
   * manifests, bytes in the shared store) are flagged for a membership backfill, so an upgrade
   * loses no access and grants none. Schema 3 (one object per repository): an object that holds
   * rows but no owner is the old single index and becomes the legacy object, read by the migration.
   */
  private migrate(): void {
    const version = Number(this.meta("schema") ?? 0);
    if (version >= SCHEMA_VERSION) return;
    this.ctx.storage.transactionSync(() => {
      const cols = this.sql.exec<{ name: string }>(`PRAGMA table_info(repos)`).toArray().map((r) => r.name);
      if (!cols.includes("needs_backfill")) this.sql.exec(`ALTER TABLE repos ADD COLUMN needs_backfill INTEGER NOT NULL DEFAULT 0`);
      if (!cols.includes("migrated_at")) this.sql.exec(`ALTER TABLE repos ADD COLUMN migrated_at INTEGER`);
      if (version < 2 && (version > 0 || this.sql.exec(`SELECT 1 FROM tags LIMIT 1`).toArray().length)) {
        // Data from before the membership index: every repository with tags must be walked.
        this.sql.exec(`INSERT INTO repos (repo, created_at, needs_backfill) SELECT DISTINCT repo, ?, 1 FROM tags WHERE true
          ON CONFLICT (repo) DO UPDATE SET needs_backfill = 1`, Date.now());
      }
      if (this.meta("role") === null) {
        const hasRows = ["repos", "tags", "members"].some((t) => this.sql.exec(`SELECT 1 FROM ${t} LIMIT 1`).toArray().length > 0);
        this.setMeta("role", hasRows && this.meta("repo") === null ? "legacy" : "repo");
      }
      this.setMeta("schema", String(SCHEMA_VERSION));
    });
  }

  /**
   * Every repository method starts here: this object answers for one repository only, and on its
   * first use it takes over that repository's rows from the legacy object (in bounded batches,
   * with other requests held back), so reads during the migration see the old data.
   */
  private async ready(repo: string, write = false): Promise<boolean> {
    if (this.role === "legacy") throw new Error("the pre-schema-3 TrustStore serves only the index migration");
    if (this.owner !== null && this.owner !== repo) throw new Error(`the TrustStore of ${this.owner} was asked about ${repo}`);
    if (this.imported && (this.stored || !write)) return this.stored;
    await this.ctx.blockConcurrencyWhile(async () => {
      this.owner = repo;
      if (this.stored && this.meta("repo") === null) this.setMeta("repo", repo);
      if (!this.imported) await this.importFromLegacy(repo);
      if (write && !this.stored) this.createSchema(repo);
    });
    return this.stored;
  }

  /** First write (or import) of a repository's object: schema, owner and import state. */
  private createSchema(repo: string): void {
    const imported = this.imported;
    this.init();
    this.setMeta("repo", repo);
    this.owner = repo;
    if (imported) this.setMeta("import", "done");
    this.imported = imported;
  }

  private async importFromLegacy(repo: string): Promise<void> {
    const legacy = legacyTrustStore(this.env);
    const saved = this.meta("import");
    let cursor: ExportCursor | null = saved ? (JSON.parse(saved) as ExportCursor) : { table: 0, after: null };
    let any = false;
    if (!legacyIndexEnabled(this.env)) cursor = null;
    while (cursor) {
      const batch: ExportBatch | null = await legacy.exportRows(repo, cursor);
      if (!batch) break; // no legacy data for this repository
      any = true;
      if (!this.stored) this.createSchema(repo);
      // Handoff order: holders before membership.
      const digests = [...new Set(batch.parts.filter((p) => p.table === "members").flatMap((p) => p.rows.map((r) => String(r.digest))))];
      for (const g of groupByBlobShard(this.env, digests)) {
        for (let i = 0; i < g.digests.length; i += MAX_HOLD_BATCH) await g.store.holdMany(repo, g.digests.slice(i, i + MAX_HOLD_BATCH));
      }
      const next: ExportCursor | null = batch.next;
      this.ctx.storage.transactionSync(() => {
        for (const part of batch.parts) {
          for (const row of part.rows) {
            const cols = Object.keys(row).filter((c) => c !== "migrated_at");
            this.sql.exec(`INSERT OR IGNORE INTO ${part.table} (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`, ...cols.map((c) => row[c]));
          }
        }
        this.setMeta("import", next ? JSON.stringify(next) : "done");
      });
      cursor = next;
    }
    if (any) await legacy.markMigrated(repo);
    this.imported = true;
    if (!this.stored) return; // nothing here and nothing to take over: stay unstored
    this.setMeta("import", "done");
    await this.registerInCatalog(repo);
  }

  /** Handoff's last step: the catalog row, once, after the repository's first membership. */
  private async registerInCatalog(repo: string): Promise<void> {
    if (this.cataloged || !this.stored) return;
    const row = this.sql.exec<{ created_at: number }>(`SELECT created_at FROM repos WHERE repo = ?`, repo).toArray()[0];
    if (!row) return;
    try {
      await catalogFor(this.env, repo).add(repo, row.created_at);
      this.setMeta("cataloged", "1");
      this.cataloged = true;
    } catch (err) {
      // Retried on the next write; the repository is readable meanwhile, only not listed.
      console.error(`catalog registration of ${repo} failed`, err);
    }
  }

  /** Take over this repository's legacy rows now (the migration task); idempotent. */
  async adopt(repo: string): Promise<void> {
    await this.ready(repo);
  }

  // ---- membership -------------------------------------------------------------------------

  /**
   * A blob readable through `repo` (manifests are readable through the blobs endpoint too).
   * "backfill" means: not a member yet, but the repository predates the membership index and
   * must be walked first (see backfillRoots).
   */
  async blob(repo: string, digest: string): Promise<Member | null | "backfill"> {
    if (!(await this.ready(repo))) return null;
    const row = this.sql.exec<{ kind: MemberKind; size: number; r2_key: string; media_type: string | null }>(
      `SELECT kind, size, r2_key, media_type FROM members WHERE repo = ? AND digest = ? ORDER BY kind LIMIT 1`,
      repo, digest).toArray()[0];
    if (row) return { digest, kind: row.kind, size: row.size, r2Key: row.r2_key, mediaType: row.media_type };
    return this.flagged(repo) ? "backfill" : null;
  }

  async needsBackfill(repo: string): Promise<boolean> {
    if (!(await this.ready(repo))) return false;
    return this.flagged(repo);
  }

  /** Manifest digests a backfill walks from: every tag's target and every known manifest. */
  async backfillRoots(repo: string): Promise<string[]> {
    if (!(await this.ready(repo))) return [];
    return this.sql.exec<{ digest: string }>(
      `SELECT digest FROM tags WHERE repo = ? UNION SELECT digest FROM members WHERE repo = ? AND kind = 'manifest'`, repo, repo)
      .toArray().map((r) => r.digest);
  }

  async finishBackfill(repo: string): Promise<void> {
    if (!(await this.ready(repo))) return;
    this.sql.exec(`UPDATE repos SET needs_backfill = 0 WHERE repo = ?`, repo);
  }

  /**
   * Record that `repo` holds these bytes (after BlobStore recorded the holder). Idempotent.
   * False, writing nothing, when GC fenced the digest after the BlobStore step (`heldSeq`): the
   * caller commits again (resurrecting or re-holding) and retries, or makes the client re-upload.
   */
  async link(repo: string, member: Member, heldSeq = 0, end: UploadEnd | null = null): Promise<LinkResult> {
    await this.ready(repo, true);
    const hold = await this.meter.reserve(repo, this.holdsAs(repo, member.digest, member.kind) ? 0 : member.size);
    if (hold.refusal) return { ok: false, quota: hold.refusal, held: this.holds(repo, member.digest) };
    let added = false;
    const r = await this.settled(hold, () => added, () => this.ctx.storage.transactionSync((): LinkResult => {
      if (this.fenced(member.digest, heldSeq)) return { ok: false, fenced: true };
      // The close of a signed upload ends its id in the link's own transaction (no extra call).
      if (end && this.uploadEndedNow(end.id)) return { ok: false, ended: true, held: this.holds(repo, member.digest) };
      added = !this.holdsAs(repo, member.digest, member.kind);
      this.insertMember(repo, member);
      if (end) this.endUploadNow(end);
      return { ok: true };
    }));
    if (r.ok) await this.registerInCatalog(repo);
    return r;
  }

  // ---- signed upload ids (docs/adr/0013) ----------------------------------------------------

  /**
   * End a signed upload id (cancel, a failed close, or a session's close): false when it had
   * ended already. Bounded: expired rows are pruned and at most MAX_ENDED_UPLOADS are kept.
   */
  async endUpload(repo: string, end: UploadEnd): Promise<boolean> {
    await this.ready(repo, true);
    return this.ctx.storage.transactionSync(() => {
      if (this.uploadEndedNow(end.id)) return false;
      this.endUploadNow(end);
      return true;
    });
  }

  /** Whether a signed upload id of this repository has ended (read only: creates nothing). */
  async uploadEnded(repo: string, id: string): Promise<boolean> {
    if (!(await this.ready(repo))) return false;
    return this.uploadEndedNow(id);
  }

  private uploadEndedNow(id: string): boolean {
    return this.sql.exec(`SELECT 1 FROM upload_ends WHERE id = ?`, id).toArray().length > 0;
  }

  private endUploadNow(end: UploadEnd): void {
    this.sql.exec(`DELETE FROM upload_ends WHERE seq IN (SELECT seq FROM upload_ends WHERE expires_at <= ? LIMIT ?)`, Date.now(), ENDED_PRUNE_BATCH);
    this.sql.exec(`INSERT INTO upload_ends (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, end.id, end.expiresAt);
    this.sql.exec(`DELETE FROM upload_ends WHERE seq <= (SELECT max(seq) FROM upload_ends) - ?`, MAX_ENDED_UPLOADS);
  }

  /** A write's transaction, then its quota reservation settled (also when the transaction throws). */
  private async settled<T>(hold: QuotaHold, added: () => boolean, write: () => T | Promise<T>): Promise<T> {
    try {
      return await write();
    } finally {
      await hold.settle(added());
    }
  }

  /** Report this repository's bytes to its quota counters (a new rule's seeding; GC after a sweep). */
  async quotaReport(repo: string): Promise<void> {
    if (!(await this.ready(repo))) return;
    await this.meter.report(repo, await this.meter.rules(repo, true));
  }

  /**
   * Remove a blob from one repository only; bytes stay for garbage collection. `held` says
   * whether the digest is still a member in another kind (the BlobStore holder must then stay).
   */
  async unlinkBlob(repo: string, digest: string): Promise<{ removed: boolean; held: boolean }> {
    if (!(await this.ready(repo))) return { removed: false, held: false };
    const removed = this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'blob'`, repo, digest).rowsWritten > 0;
    const held = this.holds(repo, digest);
    if (removed) await this.meter.report(repo);
    return { removed, held };
  }

  // ---- manifests and tags -------------------------------------------------------------------

  /**
   * Store a manifest's membership, its tag and its referrer row atomically. The caller bounds the
   * input (MAX_MANIFEST_REFERENCES, MAX_REFERRER_ANNOTATION_BYTES): no manifest bytes come here.
   * Up to PUT_SLICE_REFS references this is one transaction; a larger manifest is checked and its
   * references written in slices (putManifestSliced, docs/adr/0022), with the same outcome.
   */
  async putManifest(input: PutManifestInput): Promise<PutManifestResult> {
    // A refused first push leaves no stored object behind either.
    if (!(await this.ready(input.repo)) && (input.requiredBlobs.length || input.requiredManifests.length)) {
      return { ok: false, missingBlobs: [...new Set(input.requiredBlobs)], missingManifests: [...new Set(input.requiredManifests)], tagIsAt: null, held: false };
    }
    await this.ready(input.repo, true);
    const m0 = input.manifest;
    const hold = await this.meter.reserve(input.repo, this.holdsAs(input.repo, m0.digest, "manifest") ? 0 : m0.size);
    if (hold.refusal) return { ok: false, missingBlobs: [], missingManifests: [], tagIsAt: null, quota: hold.refusal, held: this.holds(input.repo, m0.digest) };
    const refs = [...new Set(input.refs ?? [...input.requiredBlobs, ...input.requiredManifests])];
    const clock = new SliceClock();
    let added = false;
    const setAdded = (a: boolean) => { added = a; };
    const sliced = Math.max(refs.length, input.requiredBlobs.length + input.requiredManifests.length) > PUT_SLICE_REFS;
    const result = await this.settled(hold, () => added, () => sliced
      // The object's other requests wait (as they waited for the one transaction); other objects and
      // the rest of the thread run between the slices.
      ? this.ctx.blockConcurrencyWhile(() => this.putManifestSliced(input, refs, clock, setAdded).then((r) => ({ r }), (err: unknown) => ({ err })))
        // An error thrown inside blockConcurrencyWhile would reset the object: it is rethrown out here.
        .then((o) => { if ("err" in o) throw o.err; return o.r; })
      : clock.run(() => this.ctx.storage.transactionSync((): PutManifestResult => {
        const missingBlobs = this.missing(input.repo, input.requiredBlobs, "blob");
        const missingManifests = this.missing(input.repo, input.requiredManifests, "manifest");
        if (missingBlobs.length || missingManifests.length) return { ok: false, missingBlobs, missingManifests, tagIsAt: null, held: this.holds(input.repo, m0.digest) };
        return this.putManifestRefusal(input) ?? this.writeManifestRows(input, refs, setAdded);
      })));
    result.slices = clock.stats();
    if (result.ok) await this.registerInCatalog(input.repo);
    return result;
  }

  /**
   * A heavy manifest (docs/adr/0022), inside blockConcurrencyWhile: nothing else of this object
   * runs until it returns, so what the slices checked still holds at the end. (1) Membership checks,
   * PUT_SLICE_REFS per slice; (2) the fence and tag checks; (3) a pending_puts row, then the GC
   * references in slices — written early, they only keep blobs alive; (4) one short transaction that
   * makes the manifest visible (membership, tag, referrer) and deletes the pending row. A refusal in
   * (1)–(2) has written nothing; a failure after (3) removes what it wrote (sweepPending), and a
   * crash leaves the pending row, which the object sweeps when it starts again.
   */
  private async putManifestSliced(input: PutManifestInput, refs: string[], clock: SliceClock, setAdded: (a: boolean) => void): Promise<PutManifestResult> {
    const { repo, manifest: m } = input;
    const missingBlobs = await this.missingSliced(repo, input.requiredBlobs, "blob", clock);
    const missingManifests = await this.missingSliced(repo, input.requiredManifests, "manifest", clock);
    if (missingBlobs.length || missingManifests.length) return { ok: false, missingBlobs, missingManifests, tagIsAt: null, held: this.holds(repo, m.digest) };
    const refused = clock.run(() => this.putManifestRefusal(input));
    if (refused) return refused;
    const id = crypto.randomUUID();
    this.sql.exec(`INSERT INTO pending_puts (id, repo, manifest, started_at) VALUES (?, ?, ?, ?)`, id, repo, m.digest, Date.now());
    try {
      for (let i = 0; i < refs.length; i += PUT_SLICE_REFS) {
        await yieldThread();
        clock.run(() => this.ctx.storage.transactionSync(() => {
          for (const d of refs.slice(i, i + PUT_SLICE_REFS)) this.sql.exec(`INSERT OR IGNORE INTO refs (repo, manifest, digest) VALUES (?, ?, ?)`, repo, m.digest, d);
        }));
      }
      await yieldThread();
      const result = clock.run(() => this.ctx.storage.transactionSync((): PutManifestResult => {
        // Cannot change while this object is blocked; checked again because it costs nothing.
        const late = this.putManifestRefusal(input);
        if (late) return late;
        this.sql.exec(`DELETE FROM pending_puts WHERE id = ?`, id);
        return this.writeManifestRows(input, null, setAdded);
      }));
      if (!result.ok) await this.sweepPending(id);
      return result;
    } catch (err) {
      await this.sweepPending(id);
      throw err;
    }
  }

  /** The fence and tag checks of a manifest write (inside its transaction): a refusal, or null. */
  private putManifestRefusal(input: PutManifestInput): PutManifestResult | null {
    const m = input.manifest;
    if (this.fenced(m.digest, input.heldSeq ?? 0)) return { ok: false, missingBlobs: [], missingManifests: [], tagIsAt: null, fenced: true, held: this.holds(input.repo, m.digest) };
    const previous = input.tag === null ? null : this.tagTarget(input.repo, input.tag);
    if (input.ifTagMoves === "refuse" && previous !== null && previous !== m.digest) {
      return { ok: false, missingBlobs: [], missingManifests: [], tagIsAt: previous, held: this.holds(input.repo, m.digest) };
    }
    return null;
  }

  /** A checked manifest's rows (inside its transaction): membership, `refs` (null: written already), tag, referrer. */
  private writeManifestRows(input: PutManifestInput, refs: string[] | null, setAdded: (a: boolean) => void): PutManifestResult {
    const m = input.manifest;
    const previousTagDigest = input.tag === null ? null : this.tagTarget(input.repo, input.tag);
    setAdded(!this.holdsAs(input.repo, m.digest, "manifest"));
    this.insertMember(input.repo, { digest: m.digest, kind: "manifest", size: m.size, r2Key: m.r2Key, mediaType: m.mediaType });
    for (const d of refs ?? []) {
      this.sql.exec(`INSERT OR IGNORE INTO refs (repo, manifest, digest) VALUES (?, ?, ?)`, input.repo, m.digest, d);
    }
    this.sql.exec(`UPDATE members SET refs_indexed = 1 WHERE repo = ? AND digest = ? AND kind = 'manifest'`, input.repo, m.digest);
    if (input.tag !== null) {
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
    return { ok: true, previousTagDigest };
  }

  /**
   * Undo unfinished sliced puts (docs/adr/0022): the pending row `id`, or every pending row (when
   * the object starts after a crash). A manifest that is not a member loses the GC references the
   * put wrote, in slices; one that is a member keeps them (the same digest, the same references).
   */
  async sweepPending(id?: string): Promise<number> {
    if (!this.stored) return 0;
    const rows = this.sql.exec<{ id: string; repo: string; manifest: string }>(
      `SELECT id, repo, manifest FROM pending_puts ${id === undefined ? "" : "WHERE id = ?"}`, ...(id === undefined ? [] : [id])).toArray();
    for (const p of rows) {
      if (!this.holdsAs(p.repo, p.manifest, "manifest")) {
        while (this.sql.exec(`DELETE FROM refs WHERE repo = ? AND manifest = ? AND digest IN
            (SELECT digest FROM refs WHERE repo = ? AND manifest = ? LIMIT ?)`, p.repo, p.manifest, p.repo, p.manifest, PUT_SLICE_REFS).rowsWritten > 0) {
          await yieldThread();
        }
      }
      this.sql.exec(`DELETE FROM pending_puts WHERE id = ?`, p.id);
    }
    return rows.length;
  }

  /** missing(), PUT_SLICE_REFS digests per slice with the thread given back between. */
  private async missingSliced(repo: string, digests: string[], kind: MemberKind, clock: SliceClock): Promise<string[]> {
    const want = [...new Set(digests)];
    const out: string[] = [];
    for (let i = 0; i < want.length; i += PUT_SLICE_REFS) {
      if (i > 0) await yieldThread();
      out.push(...clock.run(() => this.missing(repo, want.slice(i, i + PUT_SLICE_REFS), kind)));
    }
    return out;
  }

  /** Resolve a tag or digest to a manifest of this repository. */
  /**
   * A manifest by tag or digest. `pulledDay` (a manifest GET, see pullDay): the lookup records the
   * pull — one row write when the stored day is older, so at most one write per manifest per day.
   */
  async manifest(repo: string, reference: string, isDigest: boolean, pulledDay?: number): Promise<ManifestRecord | null | "backfill"> {
    if (!(await this.ready(repo))) return null;
    const digest = isDigest ? reference : this.tagTarget(repo, reference);
    const row = digest === null ? undefined : this.sql.exec<{ size: number; r2_key: string; media_type: string; pulled_day: number | null }>(
      `SELECT size, r2_key, media_type, pulled_day FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, digest).toArray()[0];
    if (row) {
      if (pulledDay !== undefined && (row.pulled_day ?? -1) < pulledDay) {
        this.sql.exec(`UPDATE members SET pulled_day = ? WHERE repo = ? AND digest = ? AND kind = 'manifest'`, pulledDay, repo, digest);
      }
      return { digest: digest!, kind: "manifest", size: row.size, r2Key: row.r2_key, mediaType: row.media_type };
    }
    return this.flagged(repo) ? "backfill" : null;
  }

  /** Days (UTC, see pullDay) the repository's manifests were last pulled; null: never since tracking began. */
  async pulledDays(repo: string, digests: string[]): Promise<Record<string, number | null>> {
    if (!(await this.ready(repo))) return {};
    const out: Record<string, number | null> = {};
    for (const d of digests.slice(0, 100)) {
      out[d] = this.sql.exec<{ p: number | null }>(`SELECT pulled_day AS p FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, d).toArray()[0]?.p ?? null;
    }
    return out;
  }

  async tagDigest(repo: string, tag: string): Promise<string | null> {
    if (!(await this.ready(repo))) return null;
    return this.tagTarget(repo, tag);
  }

  /**
   * Delete a manifest by digest: its membership, every tag pointing at it, and its referrer rows.
   * `held`: the digest is still a member as a blob (the BlobStore holder must stay).
   */
  async deleteManifest(repo: string, digest: string): Promise<{ removed: boolean; held: boolean }> {
    if (!(await this.ready(repo))) return { removed: false, held: false };
    const r = this.ctx.storage.transactionSync(() => {
      const gone = this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, digest).rowsWritten > 0;
      if (!gone) return { removed: false, held: this.holds(repo, digest) };
      this.sql.exec(`DELETE FROM tags WHERE repo = ? AND digest = ?`, repo, digest);
      this.sql.exec(`DELETE FROM referrers WHERE repo = ? AND digest = ?`, repo, digest);
      this.sql.exec(`DELETE FROM refs WHERE repo = ? AND manifest = ?`, repo, digest);
      // A deleted signature no longer attests (docs/signatures.md: rows of linked repositories' signatures are refreshed on refusal).
      this.sql.exec(`DELETE FROM attestations WHERE repo = ? AND source = ? AND signature = ?`, repo, repo, digest);
      return { removed: true, held: this.holds(repo, digest) };
    });
    if (r.removed) await this.meter.report(repo);
    return r;
  }

  /** Tags of `repo` pointing at manifest `digest`. */
  async tagsOf(repo: string, digest: string): Promise<string[]> {
    if (!(await this.ready(repo))) return [];
    return this.sql.exec<{ tag: string }>(`SELECT tag FROM tags WHERE repo = ? AND digest = ?`, repo, digest).toArray().map((r) => r.tag);
  }

  async deleteTag(repo: string, tag: string): Promise<boolean> {
    if (!(await this.ready(repo))) return false;
    return this.sql.exec(`DELETE FROM tags WHERE repo = ? AND tag = ?`, repo, tag).rowsWritten > 0;
  }

  /** Tags of a repository, lexically sorted; null when the repository does not exist. */
  async tags(repo: string, n: number | null, last: string | null): Promise<Page<string> | null> {
    if (!(await this.ready(repo))) return null;
    if (!this.repoExists(repo)) return null;
    // The spec's "lexical order" is case-insensitive alphanumeric; ties broken by bytes.
    const limit = n === null ? -1 : n + 1;
    const after = last ?? "";
    const rows = this.sql.exec<{ tag: string }>(
      `SELECT tag FROM tags WHERE repo = ? AND (lower(tag) > lower(?) OR (lower(tag) = lower(?) AND tag > ?))
       ORDER BY lower(tag), tag LIMIT ?`, repo, after, after, after, limit).toArray().map((r) => r.tag);
    return paginate(rows, n);
  }

  /**
   * When each of `tags` was last pointed at a manifest (ms since the epoch), for the web UI's tag
   * table. At most TAG_TIMES_MAX tags per call, passed as one JSON parameter.
   */
  async tagTimes(repo: string, tags: string[]): Promise<Record<string, number>> {
    if (!(await this.ready(repo)) || tags.length === 0) return {};
    const rows = this.sql.exec<{ tag: string; t: number }>(
      `SELECT tag, updated_at AS t FROM tags WHERE repo = ? AND tag IN (SELECT value FROM json_each(?))`,
      repo, JSON.stringify(tags.slice(0, TAG_TIMES_MAX))).toArray();
    return Object.fromEntries(rows.map((r) => [r.tag, Number(r.t)]));
  }

  // ---- referrers ----------------------------------------------------------------------------

  /**
   * Referrers of `subject` in `repo`, ordered by digest for stable pagination, optionally
   * filtered by artifactType and by annotations (key = value, all must match). A page holds at
   * most `n` descriptors and at most `maxBytes` of them as JSON (capped at REFERRERS_PAGE_BYTES):
   * it ends early, with `next` set, when the next row would not fit. The first row always fits
   * (a row is under SQLite's 2 MB), so paging always makes progress.
   */
  async referrers(repo: string, subject: string, filter: { artifactType: string | null; annotations: [string, string][] }, n: number, last: string | null, maxBytes = REFERRERS_PAGE_BYTES): Promise<Page<ReferrerRecord>> {
    if (!(await this.ready(repo)) || n <= 0) return { items: [], next: null };
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

  /**
   * One page of referrers plus the cosign tag-convention signature of `subject` (the manifest
   * tagged `sha256-<hex>.sig`, null when none), in one call: what a merged referrers listing
   * needs from each repository (docs/signatures.md).
   */
  async referrersAndSignatureTag(repo: string, subject: string, filter: { artifactType: string | null; annotations: [string, string][] }, n: number, last: string | null, maxBytes = REFERRERS_PAGE_BYTES): Promise<{ page: Page<ReferrerRecord>; signatureTag: { tag: string; digest: string; mediaType: string; size: number } | null }> {
    const page = await this.referrers(repo, subject, filter, n, last, maxBytes);
    const m = /^sha256:([0-9a-f]{64})$/.exec(subject);
    if (!m || !(await this.ready(repo))) return { page, signatureTag: null };
    const tag = `sha256-${m[1]}.sig`;
    const row = this.sql.exec<{ digest: string; size: number; media_type: string }>(
      `SELECT m.digest, m.size, m.media_type FROM tags t JOIN members m ON m.repo = t.repo AND m.digest = t.digest AND m.kind = 'manifest'
       WHERE t.repo = ? AND t.tag = ?`, repo, tag).toArray()[0];
    return { page, signatureTag: row ? { tag, digest: row.digest, mediaType: row.media_type, size: row.size } : null };
  }

  // ---- attestations (docs/signatures.md) ------------------------------------------------------

  /**
   * Replaces the attestation rows of `subject` with `rows` (the result of one verification pass,
   * at most ATTESTATIONS_MAX) in one transaction; `stored` false, storing nothing, when the
   * repository does not exist (a listing never creates state); `changed`: the verified signatures differ.
   */
  async recordAttestations(repo: string, subject: string, rows: AttestationRecord[]): Promise<{ stored: boolean; changed: boolean }> {
    if (!(await this.ready(repo)) || !this.repoExists(repo)) return { stored: false, changed: false };
    if (rows.length > ATTESTATIONS_MAX) throw new RangeError(`recordAttestations takes at most ${ATTESTATIONS_MAX} rows`);
    const key = (rs: { source: string; signature: string; signer: string | null }[]) => rs.map((r) => `${r.source} ${r.signature} ${r.signer}`).sort().join("\n");
    return this.ctx.storage.transactionSync(() => {
      const before = key(this.sql.exec<{ source: string; signature: string; signer: string | null }>(`SELECT source, signature, signer FROM attestations WHERE repo = ? AND subject = ? AND verified = 1`, repo, subject).toArray());
      this.sql.exec(`DELETE FROM attestations WHERE repo = ? AND subject = ?`, repo, subject);
      // A key revoked here after this pass read it does not count (a pass racing a key delete).
      const revoked = new Map(this.sql.exec<{ signer: string; gen: number }>(`SELECT signer, gen FROM revoked_signers`).toArray().map((r) => [r.signer, Number(r.gen)]));
      const kept = rows.map((r) => (r.verified && r.signer !== null && (revoked.get(r.signer) ?? -1) >= (r.signerGen ?? 0) ? { ...r, verified: false, reason: `key ${r.signer} was deleted` } : r));
      for (const r of kept) {
        this.sql.exec(`INSERT OR REPLACE INTO attestations (repo, subject, source, signature, payload, kind, signer, verified, reason, verified_at, signer_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          repo, subject, r.source, r.signature, r.payload, r.kind, r.signer, r.verified ? 1 : 0, r.reason, r.verifiedAt, r.signerGen ?? 0);
      }
      return { stored: true, changed: before !== key(kept.filter((r) => r.verified)) };
    });
  }

  /**
   * A manifest (as `manifest`) with the keys that verified signatures of it and of each index of
   * this repository that lists it, from the attestation rows: what a gated pull needs, in one call.
   */
  async gatedManifest(repo: string, reference: string, isDigest: boolean, freshAfter = 0, sources: string[] | null = null, pulledDay?: number): Promise<{ manifest: ManifestRecord | null | "backfill"; signers: string[]; parents: string[][] }> {
    const manifest = await this.manifest(repo, reference, isDigest, pulledDay);
    if (manifest === null || manifest === "backfill") return { manifest, signers: [], parents: [] };
    // Rows verified before `freshAfter` do not count (the safety net: the caller re-verifies), nor
    // rows from a repository that is no longer linked (`sources`: this one and its current links,
    // at most MAX_SIGNATURE_LINKS + 1 names; null = any).
    const src = sources === null ? null : JSON.stringify(sources.slice(0, 16));
    const signers = this.sql.exec<{ signer: string }>(`SELECT DISTINCT signer FROM attestations WHERE repo = ? AND subject = ? AND verified = 1 AND signer IS NOT NULL AND verified_at >= ?
      AND (? IS NULL OR source IN (SELECT value FROM json_each(?))) LIMIT ?`, repo, manifest.digest, freshAfter, src, src, ATTESTATIONS_MAX).toArray().map((r) => r.signer);
    const byParent = new Map<string, string[]>();
    for (const r of this.sql.exec<{ parent: string; signer: string }>(
      `SELECT DISTINCT f.manifest AS parent, a.signer FROM refs f JOIN attestations a ON a.repo = f.repo AND a.subject = f.manifest AND a.verified = 1 AND a.signer IS NOT NULL AND a.verified_at >= ?
         AND (? IS NULL OR a.source IN (SELECT value FROM json_each(?)))
       WHERE f.repo = ? AND f.digest = ? LIMIT ?`, freshAfter, src, src, repo, manifest.digest, ATTESTATIONS_MAX)) {
      byParent.set(r.parent, [...(byParent.get(r.parent) ?? []), r.signer]);
    }
    return { manifest, signers, parents: [...byParent.values()] };
  }

  /** The recorded attestations of `subject`, by source and signature digest. */
  async attestations(repo: string, subject: string): Promise<AttestationRecord[]> {
    if (!(await this.ready(repo))) return [];
    return this.sql.exec<{ source: string; signature: string; payload: string; kind: string; signer: string | null; verified: number; reason: string | null; verified_at: number }>(
      `SELECT * FROM attestations WHERE repo = ? AND subject = ? ORDER BY source, signature, payload LIMIT ?`, repo, subject, ATTESTATIONS_MAX).toArray()
      .map((r) => ({ source: r.source, signature: r.signature, payload: r.payload, kind: r.kind, signer: r.signer, verified: r.verified === 1, reason: r.reason, verifiedAt: Number(r.verified_at) }));
  }

  /**
   * Drops the rows that signature manifest `signature` of repository `source` gave (all subjects, or
   * only `subject`): it was deleted, or its `sha256-<hex>.sig` tag was. Answers the subjects whose
   * verified rows went, so the caller can audit the revocation. Nothing else is read or written.
   */
  async dropAttestationsFrom(repo: string, source: string, signature: string, subject: string | null = null): Promise<{ subjects: string[] }> {
    if (!(await this.ready(repo))) return { subjects: [] };
    return this.ctx.storage.transactionSync(() => {
      const subjects = this.sql.exec<{ subject: string }>(`SELECT DISTINCT subject FROM attestations WHERE repo = ? AND source = ? AND signature = ? AND verified = 1 AND (? IS NULL OR subject = ?) LIMIT ?`,
        repo, source, signature, subject, subject, ATTESTATIONS_MAX).toArray().map((r) => r.subject);
      this.sql.exec(`DELETE FROM attestations WHERE repo = ? AND source = ? AND signature = ? AND (? IS NULL OR subject = ?)`, repo, source, signature, subject, subject);
      return { subjects };
    });
  }

  /**
   * dropAttestationsFrom for many signatures of `source` at once (a retention step's deletions), at
   * most SQL_IN_BATCH, passed as one JSON parameter. Answers how many verified rows went.
   */
  async dropAttestationsFromMany(repo: string, source: string, signatures: string[]): Promise<{ dropped: number }> {
    if (!(await this.ready(repo)) || !signatures.length) return { dropped: 0 };
    if (signatures.length > SQL_IN_BATCH) throw new RangeError(`dropAttestationsFromMany takes at most ${SQL_IN_BATCH} signatures`);
    return this.ctx.storage.transactionSync(() => {
      const list = JSON.stringify(signatures);
      const dropped = this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM attestations WHERE repo = ? AND source = ? AND verified = 1 AND signature IN (SELECT value FROM json_each(?))`, repo, source, list).one().n;
      this.sql.exec(`DELETE FROM attestations WHERE repo = ? AND source = ? AND signature IN (SELECT value FROM json_each(?))`, repo, source, list);
      return { dropped: Number(dropped) };
    });
  }

  /**
   * A trust key was deleted: its rows of generation ≤ `gen` stop counting at once (kept, marked
   * unverified, so the listing says why), and a pass that read the key before the delete cannot
   * record it afterwards (revoked_signers, checked by recordAttestations). Answers how many
   * verified rows it turned.
   */
  async revokeSigner(repo: string, signer: string, gen: number): Promise<{ revoked: number }> {
    if (!(await this.ready(repo))) return { revoked: 0 };
    return this.ctx.storage.transactionSync(() => {
      this.sql.exec(`INSERT INTO revoked_signers (signer, gen) VALUES (?, ?) ON CONFLICT (signer) DO UPDATE SET gen = max(gen, excluded.gen)`, signer, gen);
      const revoked = this.sql.exec(`UPDATE attestations SET verified = 0, reason = ? WHERE repo = ? AND signer = ? AND signer_gen <= ? AND verified = 1`,
        `key ${signer} was deleted`, repo, signer, gen).rowsWritten;
      return { revoked };
    });
  }

  // ---- garbage collection (docs/adr/0011) ---------------------------------------------------

  /**
   * Phase 1 for this repository: blob memberships that no manifest of the repository references
   * and that are older than `cutoff` are dropped (at most `limit`, one transaction; none in a dry
   * run). Nothing is dropped while a manifest's references are unindexed or a backfill is due.
   */
  async gcDrop(repo: string, cutoff: number, limit: number, dryRun: boolean): Promise<GcDropResult> {
    if (!(await this.ready(repo))) return { dropped: [], more: false, unindexed: [], needsBackfill: false, empty: false };
    const n = Math.max(1, Math.min(limit, 500));
    const unindexed = this.unindexedManifests(repo);
    const needsBackfill = this.flagged(repo);
    if (unindexed.length || needsBackfill) return { dropped: [], more: false, unindexed, needsBackfill, empty: false };
    const result = this.ctx.storage.transactionSync(() => {
      const { dropped, more } = this.dropTx(repo, cutoff, n, dryRun);
      const empty = !dryRun && this.isEmpty(repo);
      if (empty) {
        this.sql.exec(`DELETE FROM repos WHERE repo = ?`, repo);
        this.setMeta("cataloged", "0");
        this.cataloged = false;
      }
      return { dropped, more, unindexed: [], needsBackfill: false, empty };
    });
    if (result.dropped.length && !dryRun) await this.meter.report(repo);
    if (result.empty) {
      await catalogFor(this.env, repo).remove(repo);
      // A push that landed meanwhile registers again.
      if (this.repoExists(repo)) await this.registerInCatalog(repo);
    }
    return result;
  }

  /** Phase 1's drop, inside the caller's transaction: up to `n` unlive blob memberships. */
  private dropTx(repo: string, cutoff: number, n: number, dryRun: boolean): { dropped: GcDropResult["dropped"]; more: boolean } {
    const rows = this.sql.exec<{ digest: string; size: number }>(
      `SELECT m.digest, m.size FROM members m WHERE m.repo = ? AND m.kind = 'blob' AND m.created_at < ?
         AND NOT EXISTS (SELECT 1 FROM refs r WHERE r.repo = m.repo AND r.digest = m.digest) ORDER BY m.digest LIMIT ?`,
      repo, cutoff, n + (dryRun ? 0 : 1)).toArray();
    const dropped = rows.slice(0, n).map((r) => {
      if (!dryRun) this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'blob'`, repo, r.digest);
      // Still a member as a manifest: the BlobStore holder stays.
      return { digest: r.digest, size: r.size, held: this.holdsAs(repo, r.digest, "manifest") };
    });
    return { dropped, more: rows.length > n && !dryRun };
  }

  private isEmpty(repo: string): boolean {
    return !this.sql.exec(`SELECT 1 FROM members WHERE repo = ? LIMIT 1`, repo).toArray().length
      && !this.sql.exec(`SELECT 1 FROM tags WHERE repo = ? LIMIT 1`, repo).toArray().length;
  }

  /**
   * A dry run's exact plan for this repository: retention, then phase 1's drops, run for real in
   * one transaction that is then rolled back — so it sees what the real run's own deletions free
   * (children of deleted indexes, blobs only deleted manifests referenced). At most `max`
   * removals of each kind (`truncated` beyond). Null when references must be indexed first or a
   * backfill is due (the real run does that; a dry run only indexes references).
   */
  async gcPlan(repo: string, spec: RetentionSpec | null, cutoff: number, max = GC_PLAN_MAX): Promise<GcPlan | { unindexed: GcDropResult["unindexed"]; needsBackfill: boolean }> {
    const none: GcPlan = { tags: [], manifests: [], dropped: [], empty: false, truncated: false };
    if (!(await this.ready(repo))) return none;
    const unindexed = this.unindexedManifests(repo);
    const needsBackfill = this.flagged(repo);
    if (unindexed.length || needsBackfill) return { unindexed, needsBackfill };
    let plan = none;
    try {
      this.ctx.storage.transactionSync(() => {
        const out: GcPlan = { tags: [], manifests: [], dropped: [], empty: false, truncated: false };
        for (let more = !!spec; more;) {
          const r = this.retentionTx(repo, spec!, false, 500);
          out.tags.push(...r.tags);
          out.manifests.push(...r.manifests);
          more = r.more;
          if (out.tags.length + out.manifests.length >= max) { out.truncated = more; break; }
        }
        for (let more = true; more;) {
          const r = this.dropTx(repo, cutoff, 500, false);
          out.dropped.push(...r.dropped);
          more = r.more;
          if (out.dropped.length >= max) { out.truncated ||= more; break; }
        }
        out.empty = this.isEmpty(repo);
        plan = out;
        throw ROLLBACK;
      });
    } catch (err) {
      if (err !== ROLLBACK) throw err;
    }
    return plan;
  }

  private unindexedManifests(repo: string): GcDropResult["unindexed"] {
    return this.sql.exec<{ digest: string; r2_key: string; media_type: string }>(
      `SELECT digest, r2_key, media_type FROM members WHERE repo = ? AND kind = 'manifest' AND refs_indexed = 0 LIMIT 20`, repo)
      .toArray().map((r) => ({ digest: r.digest, r2Key: r.r2_key, mediaType: r.media_type }));
  }

  /** Index a stored manifest's references (≤ GC_REFS_BATCH per call; `done` on the last). */
  async gcRecordRefs(repo: string, manifest: string, refs: string[], done: boolean): Promise<void> {
    if (!(await this.ready(repo))) return;
    if (refs.length > GC_REFS_BATCH) throw new RangeError(`gcRecordRefs takes at most ${GC_REFS_BATCH} refs`);
    this.ctx.storage.transactionSync(() => {
      for (const d of new Set(refs)) this.sql.exec(`INSERT OR IGNORE INTO refs (repo, manifest, digest) VALUES (?, ?, ?)`, repo, manifest, d);
      if (done) this.sql.exec(`UPDATE members SET refs_indexed = 1 WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, manifest);
    });
  }

  /**
   * Before BlobStore condemns `digests`, fence them here in one transaction: a digest that is a
   * member after all is returned (GC re-holds it instead); the others get a fence at `seq`, so a
   * link whose BlobStore step happened at or before `seq` is refused from now on.
   */
  async gcFence(repo: string, digests: string[], seq: number): Promise<string[]> {
    // Created if need be: a push that recorded its holder but has not linked yet must meet the fence.
    await this.ready(repo, true);
    if (digests.length > 500) throw new RangeError("gcFence takes at most 500 digests");
    return this.ctx.storage.transactionSync(() => {
      const held: string[] = [];
      for (const d of new Set(digests)) {
        if (this.holds(repo, d)) held.push(d);
        else this.sql.exec(`INSERT INTO fences (digest, seq) VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET seq = max(seq, excluded.seq)`, d, seq);
      }
      return held;
    });
  }

  /**
   * Retention for this repository (issue 11), in one transaction, at most `limit` removals:
   * tags beyond the newest `keepLastTags` (by push time) go unless they match `keepTags` or
   * `immutableTags` globs; untagged manifests older than `untaggedBefore` go unless another manifest
   * of the repository references them or they are referrers; referrers whose subject is not a
   * manifest here any more go. A dry run returns the plan and writes nothing.
   */
  async gcRetention(repo: string, spec: RetentionSpec, dryRun: boolean, limit = 500): Promise<RetentionResult> {
    if (!(await this.ready(repo))) return { tags: [], manifests: [], more: false };
    const n = Math.max(1, Math.min(limit, 500));
    const result = this.ctx.storage.transactionSync(() => this.retentionTx(repo, spec, dryRun, n));
    if (result.manifests.length && !dryRun) await this.meter.report(repo);
    return result;
  }

  /** Retention inside the caller's transaction (gcRetention, gcPlan). */
  private retentionTx(repo: string, spec: RetentionSpec, dryRun: boolean, n: number): RetentionResult {
    const keepGlobs = [...spec.keepTags, ...spec.immutableTags].map(globRe);
    const out: RetentionResult = { tags: [], manifests: [], more: false };
    if (spec.keepLastTags !== null) {
      const tags = this.sql.exec<{ tag: string; digest: string }>(`SELECT tag, digest FROM tags WHERE repo = ? ORDER BY updated_at DESC, tag`, repo).toArray();
      for (const t of tags.slice(spec.keepLastTags)) {
        if (keepGlobs.some((g) => g.test(t.tag))) continue;
        if (out.tags.length >= n) return { ...out, more: true };
        out.tags.push({ tag: t.tag, digest: t.digest });
        if (!dryRun) this.sql.exec(`DELETE FROM tags WHERE repo = ? AND tag = ?`, repo, t.tag);
      }
    }
    const drop = (digest: string, size: number, why: "untagged" | "orphan-referrer" | "unpulled") => {
      if (why === "unpulled") {
        // Its tags go with it: listed (and audited) as retention.tag.
        for (const t of this.sql.exec<{ tag: string }>(`SELECT tag FROM tags WHERE repo = ? AND digest = ?`, repo, digest)) out.tags.push({ tag: t.tag, digest, why });
      }
      if (!dryRun) {
        this.sql.exec(`DELETE FROM members WHERE repo = ? AND digest = ? AND kind = 'manifest'`, repo, digest);
        this.sql.exec(`DELETE FROM tags WHERE repo = ? AND digest = ?`, repo, digest);
        this.sql.exec(`DELETE FROM referrers WHERE repo = ? AND digest = ?`, repo, digest);
        this.sql.exec(`DELETE FROM refs WHERE repo = ? AND manifest = ?`, repo, digest);
      }
      out.manifests.push({ digest, size, why, held: !dryRun && this.holds(repo, digest) });
    };
    // Until nothing more qualifies: deleting an index frees its children, deleting a subject
    // orphans its referrers — one run removes what the rules say (in a dry run, one pass).
    for (let removed = 1; removed > 0;) {
      removed = 0;
      const seen = new Set(out.manifests.map((m) => m.digest));
      if (spec.deleteOrphanReferrers) {
        const orphans = this.sql.exec<{ digest: string; size: number }>(
          `SELECT DISTINCT r.digest, m.size FROM referrers r JOIN members m ON m.repo = r.repo AND m.digest = r.digest AND m.kind = 'manifest'
           WHERE r.repo = ? AND NOT EXISTS (SELECT 1 FROM members s WHERE s.repo = r.repo AND s.digest = r.subject AND s.kind = 'manifest') LIMIT ?`,
          repo, n + 1 + seen.size).toArray().filter((o) => !seen.has(o.digest));
        for (const o of orphans) {
          if (out.manifests.length >= n) return { ...out, more: true };
          drop(o.digest, o.size, "orphan-referrer");
          removed++;
        }
      }
      if (spec.untaggedBefore !== null) {
        const old = this.sql.exec<{ digest: string; size: number }>(
          `SELECT m.digest, m.size FROM members m WHERE m.repo = ? AND m.kind = 'manifest' AND m.created_at < ?
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo AND t.digest = m.digest)
             AND NOT EXISTS (SELECT 1 FROM refs r WHERE r.repo = m.repo AND r.digest = m.digest)
             AND NOT EXISTS (SELECT 1 FROM referrers f WHERE f.repo = m.repo AND f.digest = m.digest)
           ORDER BY m.digest LIMIT ?`, repo, spec.untaggedBefore, n + 1 + seen.size).toArray().filter((o) => !seen.has(o.digest) && !out.manifests.some((m) => m.digest === o.digest));
        for (const o of old) {
          if (out.manifests.length >= n) return { ...out, more: true };
          // A tag removed above in a dry run still exists in the table: gcPlan gives the exact plan.
          drop(o.digest, o.size, "untagged");
          removed++;
        }
      }
      if (spec.unpulledBefore != null) {
        // Not pulled (nor stored) since the cutoff; a manifest another one still references (an
        // index's child) or a referrer goes only with its parent or subject, as above; one with
        // a kept or immutable tag stays. Walked in digest order, a page at a time.
        for (let after = ""; ;) {
          const page = this.sql.exec<{ digest: string; size: number }>(
            `SELECT m.digest, m.size FROM members m WHERE m.repo = ? AND m.kind = 'manifest' AND m.digest > ?
               AND max(m.created_at, (coalesce(m.pulled_day, -1) + 1) * 86400000) < ?
               AND NOT EXISTS (SELECT 1 FROM refs r WHERE r.repo = m.repo AND r.digest = m.digest)
               AND NOT EXISTS (SELECT 1 FROM referrers f WHERE f.repo = m.repo AND f.digest = m.digest)
             ORDER BY m.digest LIMIT ?`, repo, after, spec.unpulledBefore, n + 1).toArray();
          for (const o of page) {
            if (seen.has(o.digest) || out.manifests.some((m) => m.digest === o.digest)) continue;
            const tags = this.sql.exec<{ tag: string }>(`SELECT tag FROM tags WHERE repo = ? AND digest = ?`, repo, o.digest).toArray();
            if (tags.some((t) => keepGlobs.some((g) => g.test(t.tag)))) continue;
            if (out.manifests.length >= n) return { ...out, more: true };
            drop(o.digest, o.size, "unpulled");
            removed++;
          }
          if (page.length <= n) break;
          after = page[page.length - 1].digest;
        }
      }
      if (dryRun) break;
    }
    return out;
  }

  /** Usage of this repository: logical bytes (sum of member sizes), counts, last push. */
  async usage(repo: string): Promise<{ repository: string; logicalBytes: number; blobs: number; manifests: number; tags: number; lastPush: number | null } | null> {
    if (!(await this.ready(repo))) return null;
    if (!this.repoExists(repo)) return null;
    const m = this.sql.exec<{ b: number; blobs: number; manifests: number; last: number | null }>(
      `SELECT coalesce(sum(size), 0) AS b, count(*) FILTER (WHERE kind = 'blob') AS blobs, count(*) FILTER (WHERE kind = 'manifest') AS manifests, max(created_at) AS last
       FROM (SELECT digest, max(size) AS size, kind, max(created_at) AS created_at FROM members WHERE repo = ? GROUP BY digest, kind)`, repo).one();
    const t = this.sql.exec<{ n: number; last: number | null }>(`SELECT count(*) AS n, max(updated_at) AS last FROM tags WHERE repo = ?`, repo).one();
    const last = Math.max(m.last ?? 0, t.last ?? 0);
    return { repository: repo, logicalBytes: m.b, blobs: m.blobs, manifests: m.manifests, tags: t.n, lastPush: last || null };
  }

  // ---- the legacy object: index migration (schema ≤ 2 → 3) ----------------------------------

  /** Repository names (with creation time) of the legacy object after `after`; empty when not legacy. */
  legacyRepos(after: string, limit: number): { items: { repo: string; createdAt: number }[]; next: string | null } {
    if (this.role !== "legacy") return { items: [], next: null };
    const n = Math.max(1, Math.min(limit, 1000));
    const rows = this.sql.exec<{ repo: string; created_at: number }>(`SELECT repo, created_at FROM repos WHERE repo > ? ORDER BY repo LIMIT ?`, after, n + 1).toArray();
    const items = rows.slice(0, n).map((r) => ({ repo: r.repo, createdAt: r.created_at }));
    return { items, next: rows.length > n ? items[items.length - 1].repo : null };
  }

  /** Legacy repositories flagged for a membership backfill when they were migrated. */
  legacyPendingBackfills(): string[] {
    if (this.role !== "legacy") return [];
    return this.sql.exec<{ repo: string }>(`SELECT repo FROM repos WHERE needs_backfill = 1 ORDER BY repo LIMIT 10000`).toArray().map((r) => r.repo);
  }

  /**
   * The next batch of `repo`'s rows after `cursor`, table by table in EXPORT_TABLES order (at most
   * EXPORT_ROWS rows or about EXPORT_BYTES in all, so a small repository moves in one call); null
   * when this object holds nothing for `repo`.
   */
  exportRows(repo: string, cursor: ExportCursor): ExportBatch | null {
    if (this.role !== "legacy") return null;
    if (cursor.table === 0 && cursor.after === null && !this.legacyHolds(repo)) return null;
    return this.rowsAfter(repo, EXPORT_TABLES, cursor);
  }

  /**
   * Snapshot (src/admin/snapshot-routes.ts): the next batch of this repository's index rows after
   * `cursor`, table by table in SNAPSHOT_TABLES order, without the repo column; null when the
   * repository does not exist.
   */
  async snapshotRows(repo: string, cursor: ExportCursor): Promise<{ parts: { table: SnapshotTable; rows: Row[] }[]; next: ExportCursor | null } | null> {
    if (!(await this.ready(repo)) || !this.repoExists(repo)) return null;
    if (cursor.table < 0 || cursor.table >= SNAPSHOT_TABLES.length) throw new RangeError("no such snapshot table");
    return this.rowsAfter(repo, SNAPSHOT_TABLES, cursor);
  }

  /**
   * Restore rows of this repository from a snapshot (validated by the Worker: known tables and
   * columns only). Holders first (handoff order): a member whose digest BlobStore does not hold is
   * skipped and returned in `missing`, as are tags and referrers of manifests that are not members,
   * so nothing restored refers to missing bytes. Existing rows are left alone (retries are harmless).
   */
  async restoreRows(repo: string, parts: { table: SnapshotTable; rows: Row[] }[]): Promise<{ rows: number; missing: string[] }> {
    const total = parts.reduce((n, p) => n + p.rows.length, 0);
    if (total > RESTORE_ROWS) throw new RangeError(`restoreRows takes at most ${RESTORE_ROWS} rows`);
    await this.ready(repo, true);
    const digests = [...new Set(parts.filter((p) => p.table === "members").flatMap((p) => p.rows.map((r) => String(r.digest))))];
    const held = new Map<string, { r2Key: string; size: number }>();
    for (const g of groupByBlobShard(this.env, digests)) {
      for (let i = 0; i < g.digests.length; i += MAX_HOLD_BATCH) {
        for (const h of await g.store.holdMany(repo, g.digests.slice(i, i + MAX_HOLD_BATCH))) held.set(h.digest, { r2Key: h.r2Key, size: h.size });
      }
    }
    const missing: string[] = [];
    let written = 0;
    this.ctx.storage.transactionSync(() => {
      for (const part of parts) {
        const spec = SNAPSHOT_TABLES.find((t) => t.table === part.table)!;
        for (const row of part.rows) {
          const v: Row = { ...row, repo };
          if (part.table === "members") {
            const h = held.get(String(row.digest));
            if (!h) {
              missing.push(String(row.digest));
              continue;
            }
            // BlobStore's object is the one that exists in this bucket.
            v.r2_key = h.r2Key;
          }
          if ((part.table === "tags" || part.table === "referrers") && !this.holdsAs(repo, String(row.digest), "manifest")) {
            missing.push(String(row.digest));
            continue;
          }
          const cols = ["repo", ...spec.cols];
          written += this.sql.exec(`INSERT OR IGNORE INTO ${part.table} (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")}) RETURNING 1`, ...cols.map((c) => v[c] ?? null)).toArray().length;
        }
      }
    });
    await this.registerInCatalog(repo);
    return { rows: written, missing: [...new Set(missing)] };
  }

  /** Rows of `repo` after `cursor` from `tables`, at most EXPORT_ROWS rows or about EXPORT_BYTES. */
  private rowsAfter<T extends string>(repo: string, tables: { table: T; keys: string[]; cols?: string[] }[], cursor: ExportCursor): { parts: { table: T; rows: Row[] }[]; next: ExportCursor | null } {
    const parts: { table: T; rows: Row[] }[] = [];
    let budgetRows = EXPORT_ROWS;
    let bytes = 0;
    let at: ExportCursor | null = cursor;
    while (at && budgetRows > 0 && bytes < EXPORT_BYTES) {
      const spec: { table: T; keys: string[]; cols?: string[] } = tables[at.table];
      let q = `SELECT ${spec.cols ? spec.cols.join(", ") : "*"} FROM ${spec.table} WHERE repo = ?`;
      const args: (string | number)[] = [repo];
      if (at.after && spec.keys.length) {
        q += ` AND (${spec.keys.join(", ")}) > (${spec.keys.map(() => "?").join(", ")})`;
        args.push(...at.after);
      }
      q += ` ORDER BY ${["repo", ...spec.keys].join(", ")} LIMIT ?`;
      args.push(budgetRows);
      const rows: Row[] = [];
      for (const r of this.sql.exec<Row>(q, ...args)) {
        rows.push({ ...r });
        for (const v of Object.values(r)) bytes += typeof v === "string" ? v.length : 8;
        if (bytes >= EXPORT_BYTES) break;
      }
      budgetRows -= rows.length;
      if (rows.length) parts.push({ table: spec.table, rows });
      const last = rows[rows.length - 1];
      const full = budgetRows === 0 || bytes >= EXPORT_BYTES;
      at = full && spec.keys.length && last
        ? { table: at.table, after: spec.keys.map((k) => last[k] as string | number) }
        : at.table + 1 < tables.length ? { table: at.table + 1, after: null } : null;
    }
    return { parts, next: at };
  }

  /** The repository's own object has taken over its rows (they stay here, read-only). */
  markMigrated(repo: string): void {
    if (this.role !== "legacy") return;
    this.sql.exec(`UPDATE repos SET migrated_at = ? WHERE repo = ? AND migrated_at IS NULL`, Date.now(), repo);
  }

  migrationStatus(): MigrationStatus {
    if (this.role !== "legacy") {
      return { legacy: false, state: "none", repositories: 0, migrated: 0, startedAt: null, finishedAt: null, lastError: null };
    }
    const c = this.sql.exec<{ total: number; migrated: number }>(`SELECT count(*) AS total, count(migrated_at) AS migrated FROM repos`).one();
    const num = (k: string) => (this.meta(k) === null ? null : Number(this.meta(k)));
    return {
      legacy: true,
      state: (this.meta("migration") as MigrationStatus["state"] | null) ?? "idle",
      repositories: c.total,
      migrated: c.migrated,
      startedAt: num("migration_started"),
      finishedAt: num("migration_finished"),
      lastError: this.meta("migration_error"),
    };
  }

  /** Start (or resume) the migration: an alarm moves MIGRATE_PER_ALARM repositories per run. */
  async startMigration(): Promise<MigrationStatus> {
    if (this.role === "legacy" && this.meta("migration") !== "done") {
      if (this.meta("migration") !== "running") {
        this.setMeta("migration", "running");
        this.setMeta("migration_started", String(Date.now()));
      }
      await this.ctx.storage.setAlarm(Date.now());
    }
    return this.migrationStatus();
  }

  override async alarm(): Promise<void> {
    if (this.role !== "legacy" || this.meta("migration") !== "running") return;
    const batch = this.sql.exec<{ repo: string }>(`SELECT repo FROM repos WHERE migrated_at IS NULL ORDER BY repo LIMIT ?`, MIGRATE_PER_ALARM)
      .toArray().map((r) => r.repo);
    let failed = 0;
    for (const repo of batch) {
      try {
        await trustStoreFor(this.env, repo).adopt(repo);
      } catch (err) {
        failed++;
        this.setMeta("migration_error", `${repo}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 1000));
      }
    }
    const left = this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM repos WHERE migrated_at IS NULL`).one().n;
    if (left === 0) {
      this.setMeta("migration", "done");
      this.setMeta("migration_finished", String(Date.now()));
      return;
    }
    // All of a batch failing means something is wrong: back off instead of spinning.
    await this.ctx.storage.setAlarm(Date.now() + (failed === batch.length ? 30_000 : 0));
  }

  // ---- internals ----------------------------------------------------------------------------

  private repoExists(repo: string): boolean {
    return this.sql.exec(`SELECT 1 FROM repos WHERE repo = ?`, repo).toArray().length > 0;
  }

  private flagged(repo: string): boolean {
    return this.sql.exec(`SELECT 1 FROM repos WHERE repo = ? AND needs_backfill = 1`, repo).toArray().length > 0;
  }

  /** The one tag lookup: the digest `repo:tag` points at, or null. */
  private tagTarget(repo: string, tag: string): string | null {
    return this.sql.exec<{ digest: string }>(`SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, tag).toArray()[0]?.digest ?? null;
  }

  /** A GC fence at or after the link's BlobStore step (heldSeq) refuses the link. */
  private fenced(digest: string, heldSeq: number): boolean {
    return this.sql.exec(`SELECT 1 FROM fences WHERE digest = ? AND seq >= ?`, digest, heldSeq).toArray().length > 0;
  }

  /** Logical bytes of the repository as quotas count them: the sum of its member sizes. */
  private bytes(repo: string): number {
    return this.sql.exec<{ b: number }>(`SELECT coalesce(sum(size), 0) AS b FROM members WHERE repo = ?`, repo).one().b;
  }

  private holdsAs(repo: string, digest: string, kind: MemberKind): boolean {
    return this.sql.exec(`SELECT 1 FROM members WHERE repo = ? AND digest = ? AND kind = ?`, repo, digest, kind).toArray().length > 0;
  }

  /** Whether `digest` is still a member of `repo` in any kind. */
  private holds(repo: string, digest: string): boolean {
    return this.sql.exec(`SELECT 1 FROM members WHERE repo = ? AND digest = ? LIMIT 1`, repo, digest).toArray().length > 0;
  }

  private legacyHolds(repo: string): boolean {
    return ["repos", "members", "tags"].some((t) => this.sql.exec(`SELECT 1 FROM ${t} WHERE repo = ? LIMIT 1`, repo).toArray().length > 0);
  }

  private insertMember(repo: string, m: Member): void {
    const now = Date.now();
    this.sql.exec(`INSERT INTO members (repo, digest, kind, size, r2_key, media_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (repo, digest, kind) DO UPDATE SET r2_key = excluded.r2_key`, repo, m.digest, m.kind, m.size, m.r2Key, m.mediaType, now);
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

  private meta(key: string): string | null {
    if (!this.stored) return null;
    return this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = ?`, key).toArray()[0]?.value ?? null;
  }

  private setMeta(key: string, value: string): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value);
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
