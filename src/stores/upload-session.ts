// UploadSession: the state of one blob upload, one Durable Object per upload id. It holds only
// index data (offset, R2 object keys and multipart parts, saved hash state, owner, expiry),
// never bytes, in SQLite rows that stay bounded (docs/adr/0007):
//   session  one row: scalars, the layout header and the saved hash states (a few KiB)
//   parts    one row per R2 multipart part of the current layout (<= MAX_UPLOAD_PARTS)
//   objects  one row per R2 object / multipart upload the session may still have to delete
// A request appends by taking a short write lease that it renews while it runs; a lease whose
// writer died lapses within the lease time, so a crashed PATCH never locks the upload for long.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { HashAlgorithm } from "../digest/hasher";

/** R2's limit on parts per multipart upload. */
export const MAX_UPLOAD_PARTS = 10_000;
/** Appending requests (PATCH, or PUT with a body) one upload may start; bounds rows and work. */
export const MAX_UPLOAD_CHUNKS = 10_000;

export type UploadLayout =
  | { kind: "empty" }
  /** Everything so far is one plain object. */
  | { kind: "single"; key: string; size: number }
  /**
   * `partCount` full parts of `partSize` in an R2 multipart upload (their etags are rows of
   * the session, read only when the upload completes), plus a tail object shorter than a part.
   */
  | { kind: "multipart"; key: string; uploadId: string; partCount: number; tail: { key: string; size: number } | null };

export interface UploadState {
  id: string;
  repo: string;
  principal: string;
  createdAt: number;
  expiresAt: number;
  offset: number;
  partSize: number;
  /** Extra hash algorithms the client declared at POST (computed while streaming). */
  algorithms: HashAlgorithm[];
  layout: UploadLayout;
  /** Saved resumable hash states by algorithm (base64), covering `offset` bytes. */
  hashStates: Record<string, string>;
  /** Appending requests started so far (see MAX_UPLOAD_CHUNKS). */
  chunks: number;
}

export type BeginResult =
  | { ok: true; state: UploadState; lease: string; reservedKey: string }
  | { ok: false; reason: "unknown" }
  | { ok: false; reason: "offset"; offset: number }
  | { ok: false; reason: "chunks"; offset: number; limit: number }
  /** Another live request holds the lease; it lapses in `retryAfterMs` unless renewed. */
  | { ok: false; reason: "busy"; offset: number; retryAfterMs: number };

export interface CommitUpdate {
  offset: number;
  layout: UploadLayout;
  hashStates: Record<string, string>;
  /** Parts this request uploaded (numbers follow the previous layout's, or start at 1 for a new multipart upload). */
  newParts: R2UploadedPart[];
  /** Objects superseded by the new layout: deleted from R2 and forgotten. */
  obsolete: string[];
  /** Keys registered but never written (an unused reserved key): forgotten only. */
  unused: string[];
}

interface SessionRow {
  id: string;
  repo: string;
  principal: string;
  created_at: number;
  expires_at: number;
  received: number;
  part_size: number;
  algorithms: string;
  layout: string;
  hash_states: string;
  chunks: number;
  lease_token: string | null;
  lease_until: number;
  [k: string]: SqlStorageValue;
}

/** Legacy (before ADR 0007) whole-state KV value, imported once on first access. */
interface LegacyState {
  id: string; repo: string; principal: string; createdAt: number; expiresAt: number; offset: number; partSize: number;
  algorithms?: HashAlgorithm[]; hashStates: Record<string, string>; keys: string[]; multiparts: Record<string, string>;
  layout: { kind: "empty" } | { kind: "single"; key: string; size: number } | { kind: "multipart"; key: string; uploadId: string; parts: R2UploadedPart[]; tail: { key: string; size: number } | null };
}

export class UploadSession extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** Set once cleanup dropped all storage: the session is over for good (its id is never reused). */
  private ended = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => {
      this.createTables();
      await this.importLegacy();
    });
  }

  private createTables(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS session (
      one INTEGER PRIMARY KEY CHECK (one = 1), id TEXT NOT NULL, repo TEXT NOT NULL, principal TEXT NOT NULL,
      created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, received INTEGER NOT NULL, part_size INTEGER NOT NULL,
      algorithms TEXT NOT NULL, layout TEXT NOT NULL, hash_states TEXT NOT NULL, chunks INTEGER NOT NULL,
      lease_token TEXT, lease_until INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec("CREATE TABLE IF NOT EXISTS parts (number INTEGER PRIMARY KEY, etag TEXT NOT NULL)");
    this.sql.exec("CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, upload_id TEXT)");
  }

  /** Sessions written by the previous layout (one KV value) become rows, once. */
  private async importLegacy(): Promise<void> {
    const old = await this.ctx.storage.get<LegacyState>("state");
    if (!old) return;
    const layout: UploadLayout = old.layout.kind === "multipart"
      ? { kind: "multipart", key: old.layout.key, uploadId: old.layout.uploadId, partCount: old.layout.parts.length, tail: old.layout.tail }
      : old.layout;
    this.ctx.storage.transactionSync(() => {
      this.insertSession({
        id: old.id, repo: old.repo, principal: old.principal, createdAt: old.createdAt, expiresAt: old.expiresAt, offset: old.offset,
        partSize: old.partSize, algorithms: old.algorithms ?? [], layout, hashStates: old.hashStates, chunks: 0,
      });
      if (old.layout.kind === "multipart") for (const p of old.layout.parts) this.sql.exec("INSERT OR REPLACE INTO parts VALUES (?, ?)", p.partNumber, p.etag);
      for (const k of old.keys) this.sql.exec("INSERT OR IGNORE INTO objects VALUES (?, NULL)", k);
      for (const [k, u] of Object.entries(old.multiparts)) this.sql.exec("INSERT OR REPLACE INTO objects VALUES (?, ?)", k, u);
    });
    await this.ctx.storage.delete("state");
  }

  private insertSession(s: UploadState): void {
    this.sql.exec(
      "INSERT OR REPLACE INTO session VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
      s.id, s.repo, s.principal, s.createdAt, s.expiresAt, s.offset, s.partSize,
      JSON.stringify(s.algorithms), JSON.stringify(s.layout), JSON.stringify(s.hashStates), s.chunks,
    );
  }

  private row(): SessionRow | null {
    if (this.ended) return null;
    return this.sql.exec<SessionRow>("SELECT * FROM session").toArray()[0] ?? null;
  }

  private static state(r: SessionRow): UploadState {
    return {
      id: r.id, repo: r.repo, principal: r.principal, createdAt: r.created_at, expiresAt: r.expires_at, offset: r.received,
      partSize: r.part_size, algorithms: JSON.parse(r.algorithms), layout: JSON.parse(r.layout), hashStates: JSON.parse(r.hash_states), chunks: r.chunks,
    };
  }

  /** The row of the writer holding `lease` (expired or not, as long as no one else took it over). */
  private leased(lease: string): SessionRow | null {
    const r = this.row();
    return r && r.lease_token === lease ? r : null;
  }

  /** Create the session. */
  async open(init: { id: string; repo: string; principal: string; ttlSeconds: number; partSize: number; algorithms?: HashAlgorithm[] }): Promise<UploadState> {
    const now = Date.now();
    const state: UploadState = {
      id: init.id, repo: init.repo, principal: init.principal, createdAt: now, expiresAt: now + init.ttlSeconds * 1000,
      offset: 0, partSize: init.partSize, algorithms: init.algorithms ?? [], layout: { kind: "empty" }, hashStates: {}, chunks: 0,
    };
    this.insertSession(state);
    await this.ctx.storage.setAlarm(state.expiresAt);
    return state;
  }

  /**
   * begin() for a signed, stateless upload id (docs/adr/0013): creates the session first when it
   * does not exist yet (`created`), so every PATCH takes one call here. The caller verified the id
   * for `repo`/`principal`, and on `created` asks the repository whether the id had ended (then it
   * cancels this session). The session expires with the id.
   */
  async beginOrOpen(
    init: { id: string; repo: string; principal: string; expiresAt: number; partSize: number },
    expectOffset: number | null, opts: { leaseMs: number; final: boolean },
  ): Promise<BeginResult & { created?: boolean }> {
    if (this.ended || init.expiresAt <= Date.now()) return { ok: false, reason: "unknown" };
    const created = !this.row();
    if (created) {
      const now = Date.now();
      this.insertSession({
        id: init.id, repo: init.repo, principal: init.principal, createdAt: now, expiresAt: init.expiresAt,
        offset: 0, partSize: init.partSize, algorithms: [], layout: { kind: "empty" }, hashStates: {}, chunks: 0,
      });
      await this.ctx.storage.setAlarm(init.expiresAt);
    }
    return { ...(await this.begin(init.repo, init.principal, expectOffset, opts)), created };
  }

  /** The session as seen by `repo`/`principal`; a session of another repository or owner is unknown. */
  async get(repo: string, principal: string): Promise<UploadState | null> {
    const r = this.row();
    if (!r || r.repo !== repo || r.principal !== principal || r.expires_at <= Date.now()) return null;
    return UploadSession.state(r);
  }

  /**
   * Take the write lease for `leaseMs`, optionally requiring the current offset to be
   * `expectOffset`. A lease still held by another request answers "busy" with the time until it
   * lapses; a lease past its time belonged to a writer that stopped renewing it and is taken over.
   */
  async begin(repo: string, principal: string, expectOffset: number | null, opts: { leaseMs: number; final: boolean }): Promise<BeginResult> {
    const s = await this.get(repo, principal);
    if (!s) return { ok: false, reason: "unknown" };
    const r = this.row()!;
    const now = Date.now();
    if (r.lease_token && r.lease_until > now) return { ok: false, reason: "busy", offset: s.offset, retryAfterMs: r.lease_until - now };
    if (expectOffset !== null && expectOffset !== s.offset) return { ok: false, reason: "offset", offset: s.offset };
    if (!opts.final && s.chunks >= MAX_UPLOAD_CHUNKS) return { ok: false, reason: "chunks", offset: s.offset, limit: MAX_UPLOAD_CHUNKS };
    const token = crypto.randomUUID();
    // One object key registered up front saves the writer a round trip for the common
    // one-object request (it is forgotten at commit, or deleted on failure, if never written).
    const reservedKey = `data/${s.id}/${crypto.randomUUID()}`;
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("UPDATE session SET lease_token = ?, lease_until = ?, chunks = chunks + 1", token, now + opts.leaseMs);
      this.sql.exec("INSERT OR IGNORE INTO objects VALUES (?, NULL)", reservedKey);
    });
    return { ok: true, state: { ...s, chunks: s.chunks + 1 }, lease: token, reservedKey };
  }

  /**
   * Extend the lease by `leaseMs` from now and record keys/multipart uploads before they are
   * written, so cleanup finds them. False when the session ended or another writer took over.
   */
  async renew(lease: string, leaseMs: number, add?: { keys?: string[]; multipart?: { key: string; uploadId: string } }): Promise<boolean> {
    if (!this.leased(lease)) return false;
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("UPDATE session SET lease_until = ?", Date.now() + leaseMs);
      for (const k of add?.keys ?? []) this.sql.exec("INSERT OR IGNORE INTO objects VALUES (?, NULL)", k);
      if (add?.multipart) this.sql.exec("INSERT OR REPLACE INTO objects VALUES (?, ?)", add.multipart.key, add.multipart.uploadId);
    });
    return true;
  }

  /** Every part of the current multipart layout, in order (at most MAX_UPLOAD_PARTS small rows). */
  async parts(lease: string): Promise<R2UploadedPart[] | null> {
    if (!this.leased(lease)) return null;
    return this.sql.exec<{ number: number; etag: string }>("SELECT number, etag FROM parts ORDER BY number").toArray()
      .map((p) => ({ partNumber: p.number, etag: p.etag }));
  }

  /** Commit what a request appended (incrementally: only its new parts) and release the lease. */
  async commit(lease: string, u: CommitUpdate): Promise<UploadState | null> {
    const r = this.leased(lease);
    if (!r) return null;
    const prev = JSON.parse(r.layout) as UploadLayout;
    const live = new Set(liveKeys(u.layout));
    this.ctx.storage.transactionSync(() => {
      // A new multipart upload (started from a single object) numbers its parts from 1 again.
      if (u.layout.kind !== "multipart" || prev.kind !== "multipart" || prev.key !== u.layout.key) this.sql.exec("DELETE FROM parts");
      for (const p of u.newParts) this.sql.exec("INSERT OR REPLACE INTO parts VALUES (?, ?)", p.partNumber, p.etag);
      this.sql.exec(
        "UPDATE session SET received = ?, layout = ?, hash_states = ?, lease_token = NULL, lease_until = 0",
        u.offset, JSON.stringify(u.layout), JSON.stringify(u.hashStates),
      );
      for (const k of u.unused) if (!live.has(k)) this.sql.exec("DELETE FROM objects WHERE key = ?", k);
    });
    await this.forget(u.obsolete.filter((k) => !live.has(k)));
    return UploadSession.state(this.row()!);
  }

  /**
   * Release the lease after a failed request. `discard` are objects that request created: they
   * are deleted (multipart uploads aborted) and forgotten, whether or not the lease is still
   * its own, but never an object the committed layout uses.
   */
  async release(lease: string, discard: string[] = []): Promise<void> {
    const r = this.row();
    if (!r) return;
    if (r.lease_token === lease) this.sql.exec("UPDATE session SET lease_token = NULL, lease_until = 0");
    const live = new Set(liveKeys(JSON.parse(r.layout) as UploadLayout));
    await this.forget(discard.filter((k) => !live.has(k)));
  }

  /**
   * End the session after its blob was committed; `keep` is the R2 key now owned by the
   * BlobStore (if any). Every other object this session wrote is deleted.
   */
  async finish(lease: string, keep: string | null): Promise<boolean> {
    if (!this.leased(lease)) {
      // Lost the lease meanwhile: still make sure cleanup never deletes the committed object.
      if (keep && this.row()) this.sql.exec("DELETE FROM objects WHERE key = ?", keep);
      return false;
    }
    await this.cleanup(keep);
    return true;
  }

  /** Cancel (client DELETE): abort multipart uploads, delete objects, forget the session. */
  async cancel(repo: string, principal: string): Promise<boolean> {
    if (!(await this.get(repo, principal))) return false;
    await this.cleanup(null);
    return true;
  }

  /** GC reconcile: whether this upload still exists (its objects are not orphans). */
  async exists(): Promise<boolean> {
    return this.row() !== null;
  }

  override async alarm(): Promise<void> {
    const r = this.row();
    if (!r) return;
    const now = Date.now();
    if (r.lease_token && r.lease_until > now) {
      // A writer is still streaming: look again once its lease would have run out.
      await this.ctx.storage.setAlarm(Math.max(r.expires_at, r.lease_until) + 1000);
      return;
    }
    if (r.expires_at > now) {
      await this.ctx.storage.setAlarm(r.expires_at);
      return;
    }
    await this.cleanup(null);
  }

  /**
   * Delete these objects from R2 (aborting the multipart uploads among them), then their rows.
   * Keys without a row are deleted too: a request may fail between writing and registering.
   */
  private async forget(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 50) {
      const batch = keys.slice(i, i + 50);
      const marks = batch.map(() => "?").join(",");
      const rows = this.sql.exec<{ key: string; upload_id: string | null }>(`SELECT key, upload_id FROM objects WHERE key IN (${marks})`, ...batch).toArray();
      await this.abortMultiparts(rows, null);
      await this.env.BUCKET.delete(batch);
      this.sql.exec(`DELETE FROM objects WHERE key IN (${marks})`, ...batch);
    }
  }

  private async abortMultiparts(rows: { key: string; upload_id: string | null }[], keep: string | null): Promise<void> {
    for (const o of rows) {
      if (o.upload_id === null || o.key === keep) continue;
      try {
        await this.env.BUCKET.resumeMultipartUpload(o.key, o.upload_id).abort();
      } catch {
        // Already completed or aborted.
      }
    }
  }

  private async cleanup(keep: string | null): Promise<void> {
    // Page through the rows so no single read or R2 call grows with the session's history.
    for (;;) {
      const rows = this.sql.exec<{ key: string; upload_id: string | null }>("SELECT key, upload_id FROM objects ORDER BY key LIMIT 500").toArray();
      if (!rows.length) break;
      await this.abortMultiparts(rows, keep);
      const doomed = rows.map((o) => o.key).filter((k) => k !== keep);
      if (doomed.length) await this.env.BUCKET.delete(doomed);
      for (let i = 0; i < rows.length; i += 90) {
        const batch = rows.slice(i, i + 90).map((o) => o.key);
        this.sql.exec(`DELETE FROM objects WHERE key IN (${batch.map(() => "?").join(",")})`, ...batch);
      }
    }
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    // deleteAll drops the tables too; this instance may still be asked (e.g. GET after close),
    // and an ended session's object should keep no storage at all.
    this.ended = true;
  }
}

/** R2 keys the layout still reads. */
function liveKeys(layout: UploadLayout): string[] {
  if (layout.kind === "single") return [layout.key];
  if (layout.kind === "multipart") return layout.tail ? [layout.key, layout.tail.key] : [layout.key];
  return [];
}
