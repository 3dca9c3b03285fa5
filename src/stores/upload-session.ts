// UploadSession: the state of one blob upload, one Durable Object per upload id. It holds only
// index data (offset, R2 object keys and multipart part list, saved hash state, owner, expiry),
// never bytes. A write lease serialises the requests that append to the upload: PATCHes may land
// on different isolates, but only one may stream at a time.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { HashAlgorithm } from "../digest/hasher";

export type UploadLayout =
  | { kind: "empty" }
  /** Everything so far is one plain object. */
  | { kind: "single"; key: string; size: number }
  /** Full parts of `partSize` in an R2 multipart upload, plus a tail object shorter than a part. */
  | { kind: "multipart"; key: string; uploadId: string; parts: R2UploadedPart[]; tail: { key: string; size: number } | null };

export interface UploadState {
  id: string;
  repo: string;
  principal: string;
  createdAt: number;
  expiresAt: number;
  offset: number;
  partSize: number;
  /** Extra hash algorithms the client declared at POST (computed while streaming). */
  algorithms?: HashAlgorithm[];
  layout: UploadLayout;
  /** Saved resumable hash states by algorithm (base64), covering `offset` bytes. */
  hashStates: Record<string, string>;
  /** Every R2 key this upload created, so expiry or cancel can remove them. */
  keys: string[];
  /** Multipart uploads this session created (key → uploadId), aborted on expiry/cancel. */
  multiparts: Record<string, string>;
  lease: { token: string; until: number } | null;
}

export type BeginResult =
  | { ok: true; state: UploadState; lease: string; reservedKey: string }
  | { ok: false; reason: "unknown" }
  | { ok: false; reason: "offset"; offset: number }
  | { ok: false; reason: "busy"; offset: number };

/** How long a writer may hold the upload without renewing (it renews after every part). */
const LEASE_MS = 5 * 60 * 1000;

export class UploadSession extends DurableObject<Env> {
  private async load(): Promise<UploadState | null> {
    return (await this.ctx.storage.get<UploadState>("state")) ?? null;
  }

  private async save(state: UploadState): Promise<void> {
    await this.ctx.storage.put("state", state);
  }

  /** Create the session. */
  async open(init: { id: string; repo: string; principal: string; ttlSeconds: number; partSize: number; algorithms?: HashAlgorithm[] }): Promise<UploadState> {
    const now = Date.now();
    const state: UploadState = {
      id: init.id, repo: init.repo, principal: init.principal, createdAt: now,
      expiresAt: now + init.ttlSeconds * 1000, offset: 0, partSize: init.partSize, algorithms: init.algorithms ?? [],
      layout: { kind: "empty" }, hashStates: {}, keys: [], multiparts: {}, lease: null,
    };
    await this.save(state);
    await this.ctx.storage.setAlarm(state.expiresAt);
    return state;
  }

  /** The session as seen by `repo`/`principal`; a session of another repository or owner is unknown. */
  async get(repo: string, principal: string): Promise<UploadState | null> {
    const s = await this.load();
    if (!s || s.repo !== repo || s.principal !== principal || s.expiresAt <= Date.now()) return null;
    return s;
  }

  /** Take the write lease, optionally requiring the current offset to be `expectOffset`. */
  async begin(repo: string, principal: string, expectOffset: number | null): Promise<BeginResult> {
    const s = await this.get(repo, principal);
    if (!s) return { ok: false, reason: "unknown" };
    const now = Date.now();
    if (s.lease && s.lease.until > now) return { ok: false, reason: "busy", offset: s.offset };
    if (expectOffset !== null && expectOffset !== s.offset) return { ok: false, reason: "offset", offset: s.offset };
    const token = crypto.randomUUID();
    s.lease = { token, until: now + LEASE_MS };
    // One object key registered up front saves the writer a round trip for the common
    // one-object request (cleanup deletes it if it is never written).
    const reservedKey = `data/${s.id}/${crypto.randomUUID()}`;
    s.keys.push(reservedKey);
    await this.save(s);
    return { ok: true, state: s, lease: token, reservedKey };
  }

  /** Extend the lease and record keys/multipart uploads before they are written, so cleanup finds them. */
  async renew(lease: string, add?: { keys?: string[]; multipart?: { key: string; uploadId: string } }): Promise<boolean> {
    const s = await this.load();
    if (!s || s.lease?.token !== lease) return false;
    s.lease.until = Date.now() + LEASE_MS;
    if (add?.keys) for (const k of add.keys) if (!s.keys.includes(k)) s.keys.push(k);
    if (add?.multipart) s.multiparts[add.multipart.key] = add.multipart.uploadId;
    await this.save(s);
    return true;
  }

  /** Commit what a request appended and release the lease. */
  async commit(lease: string, update: { offset: number; layout: UploadLayout; hashStates: Record<string, string> }): Promise<UploadState | null> {
    const s = await this.load();
    if (!s || s.lease?.token !== lease) return null;
    s.offset = update.offset;
    s.layout = update.layout;
    s.hashStates = update.hashStates;
    s.lease = null;
    await this.save(s);
    return s;
  }

  async release(lease: string): Promise<void> {
    const s = await this.load();
    if (s && s.lease?.token === lease) {
      s.lease = null;
      await this.save(s);
    }
  }

  /**
   * End the session after its blob was committed; `keep` is the R2 key now owned by the
   * BlobStore (if any). Every other object this session wrote is deleted.
   */
  async finish(lease: string, keep: string | null): Promise<boolean> {
    const s = await this.load();
    if (!s || s.lease?.token !== lease) return false;
    await this.cleanup(s, keep);
    return true;
  }

  /** Cancel (client DELETE): abort multipart uploads, delete objects, forget the session. */
  async cancel(repo: string, principal: string): Promise<boolean> {
    const s = await this.get(repo, principal);
    if (!s) return false;
    await this.cleanup(s, null);
    return true;
  }

  /** GC reconcile: whether this upload still exists (its objects are not orphans). */
  async exists(): Promise<boolean> {
    return (await this.load()) !== null;
  }

  override async alarm(): Promise<void> {
    const s = await this.load();
    if (!s) return;
    const now = Date.now();
    if (s.lease && s.lease.until > now) {
      // A writer is still streaming: look again once its lease would have run out.
      await this.ctx.storage.setAlarm(Math.max(s.expiresAt, s.lease.until) + 1000);
      return;
    }
    if (s.expiresAt > now) {
      await this.ctx.storage.setAlarm(s.expiresAt);
      return;
    }
    await this.cleanup(s, null);
  }

  private async cleanup(s: UploadState, keep: string | null): Promise<void> {
    const bucket = this.env.BUCKET;
    for (const [key, uploadId] of Object.entries(s.multiparts)) {
      if (key === keep) continue;
      try {
        await bucket.resumeMultipartUpload(key, uploadId).abort();
      } catch {
        // Already completed or aborted.
      }
    }
    const doomed = s.keys.filter((k) => k !== keep);
    for (let i = 0; i < doomed.length; i += 1000) await bucket.delete(doomed.slice(i, i + 1000));
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }
}
