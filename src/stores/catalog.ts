// Catalog: the repository list behind /v2/_catalog (name → creation time). A repository's
// TrustStore adds its row after its first membership (handoff order: bytes → BlobStore →
// TrustStore → Catalog); adds are idempotent. On first use an object seeds itself from the
// pre-schema-3 single TrustStore, so the catalog is whole while the index migration runs.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { legacyIndexEnabled, legacyTrustStore } from "./index";

export interface Page<T> {
  items: T[];
  /** Present when more items follow: the `last` value to continue from. */
  next: string | null;
}

export interface RestoreState {
  id: string;
  state: "running" | "done";
  startedAt: number;
  finishedAt: number | null;
}

/** Names per seeding call to the legacy store. */
const SEED_BATCH = 1000;

export class Catalog extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private seeded: boolean;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS repos (repo TEXT PRIMARY KEY, created_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    `);
    this.seeded = this.meta("seeded") === "1";
  }

  async add(repo: string, createdAt: number): Promise<void> {
    await this.ready();
    this.sql.exec(`INSERT INTO repos (repo, created_at) VALUES (?, ?) ON CONFLICT (repo) DO NOTHING`, repo, createdAt);
  }

  /** GC: an empty repository (no members, no tags) leaves the catalog; its TrustStore re-adds it on the next write. */
  async remove(repo: string): Promise<boolean> {
    await this.ready();
    return this.sql.exec(`DELETE FROM repos WHERE repo = ?`, repo).rowsWritten > 0;
  }

  /** Repository names after `last`, in byte order; n = null means all (callers bound it). */
  async page(n: number, last: string | null): Promise<Page<string>> {
    await this.ready();
    const rows = this.sql.exec<{ repo: string }>(`SELECT repo FROM repos WHERE repo > ? ORDER BY repo LIMIT ?`, last ?? "", n + 1)
      .toArray().map((r) => r.repo);
    if (rows.length > n) {
      const items = rows.slice(0, n);
      return { items, next: items[items.length - 1] ?? null };
    }
    return { items: rows, next: null };
  }

  // ---- restore bookkeeping (src/admin/snapshot-routes.ts), kept by the first catalog shard ----

  /**
   * Start a restore with `id`: refused once any restore began (unless `resume` and it is still
   * running, which returns that restore) or while the catalog lists a repository.
   */
  async restoreBegin(id: string, resume: boolean): Promise<{ ok: true; restore: RestoreState } | { ok: false; reason: "not-empty" | "restored" | "running"; restore: RestoreState | null }> {
    await this.ready();
    const cur = this.restoreState();
    if (cur) {
      if (resume && cur.state === "running") return { ok: true, restore: cur };
      return { ok: false, reason: cur.state === "running" ? "running" : "restored", restore: cur };
    }
    if (this.sql.exec(`SELECT 1 FROM repos LIMIT 1`).toArray().length) return { ok: false, reason: "not-empty", restore: null };
    const state: RestoreState = { id, state: "running", startedAt: Date.now(), finishedAt: null };
    this.setMeta("restore", JSON.stringify(state));
    return { ok: true, restore: state };
  }

  restoreState(): RestoreState | null {
    const v = this.meta("restore");
    return v === null ? null : (JSON.parse(v) as RestoreState);
  }

  restoreFinish(id: string): RestoreState | null {
    const cur = this.restoreState();
    if (!cur || cur.id !== id) return null;
    if (cur.state === "running") {
      cur.state = "done";
      cur.finishedAt = Date.now();
      this.setMeta("restore", JSON.stringify(cur));
    }
    return cur;
  }

  /** Copy the legacy store's repository list once, in batches; the cursor survives a restart. */
  private async ready(): Promise<void> {
    if (this.seeded) return;
    await this.ctx.blockConcurrencyWhile(async () => {
      if (this.seeded) return;
      const legacy = legacyTrustStore(this.env);
      let cursor = this.meta("seed_cursor") ?? "";
      for (;;) {
        if (!legacyIndexEnabled(this.env)) break;
        const batch = await legacy.legacyRepos(cursor, SEED_BATCH);
        this.ctx.storage.transactionSync(() => {
          for (const r of batch.items) {
            this.sql.exec(`INSERT INTO repos (repo, created_at) VALUES (?, ?) ON CONFLICT (repo) DO NOTHING`, r.repo, r.createdAt);
          }
          cursor = batch.next ?? "";
          this.setMeta(batch.next === null ? "seeded" : "seed_cursor", batch.next === null ? "1" : cursor);
        });
        if (batch.next === null) break;
      }
      this.seeded = true;
    });
  }

  private meta(key: string): string | null {
    return this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = ?`, key).toArray()[0]?.value ?? null;
  }

  private setMeta(key: string, value: string): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value);
  }
}
