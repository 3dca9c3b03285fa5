// GcCoordinator: the registry-wide garbage collector (docs/adr/0011). One object; its `runs`
// table is the lease (at most one run is "running"). A run is a sequence of small steps, each
// a few bounded calls to the stores, with its cursor saved after every step, so an alarm can
// drive it in slices and a restart resumes where it stopped. Tests drive the same steps one by
// one (`manual` runs) to interleave pushes between them.
import { DurableObject } from "cloudflare:workers";
import { config, type Env } from "../env";
import { GcError, runStep, type Cursor, type PlanScratch, type RunOptions, type RunStats, emptyStats } from "./steps";
import { accountStoreFor, legacyTrustStore } from "../stores";
import { parseRule } from "../auth/policy";
import { record } from "../audit/record";

/** Immutable-tag policy rules (repository globs → tag globs): retention never removes those tags. */
async function immutableTagRules(env: Env): Promise<{ repositories: string[]; tags: string[] }[]> {
  const out: { repositories: string[]; tags: string[] }[] = [];
  for (const text of await accountStoreFor(env).rules()) {
    try {
      const r = parseRule(JSON.parse(text));
      if (r.kind === "immutable-tags") out.push({ repositories: r.repositories, tags: r.tags });
    } catch {
      // invalid stored rule: the auth layer logs it
    }
  }
  return out;
}
import { matchGlob } from "../auth/policy";
import { loadNamespaces } from "../proxy/config";

/** Proxy namespaces' unpulled-days defaults; an invalid PROXY_NAMESPACES applies none (noted in the run). */
async function proxyRetention(env: Env, stats: RunStats): Promise<{ prefix: string; unpulledDays: number | null }[]> {
  try {
    return (await loadNamespaces(env)).map((n) => ({ prefix: n.prefix, unpulledDays: n.unpulledDays ?? null }));
  } catch (err) {
    const msg = `proxy namespaces not applied: ${err instanceof Error ? err.message : String(err)}`.slice(0, 500);
    if (!stats.errors.includes(msg)) stats.errors = [...stats.errors, msg].slice(-20);
    return [];
  }
}

/** A retention rule for the repositories its glob matches (applied by GC phase 1). */
export interface RetentionRule {
  pattern: string;
  keepLastTags: number | null;
  keepTags: string[];
  untaggedOlderThanDays: number | null;
  deleteOrphanReferrers: boolean;
  /** Manifests (and their tags) not pulled for this many days go; null: the proxy namespace's default, else keep. */
  unpulledDays?: number | null;
  updatedAt?: number;
}
export const MAX_RETENTION_RULES = 100;

export interface QuotaRule { pattern: string; limitBytes: number; updatedAt: number }
/** Most quota rules (each repository's TrustStore reads the matching ones every QUOTA_TTL_MS; a push calls each matching rule's counter). */
export const MAX_QUOTA_RULES = 100;

export interface RunRecord {
  id: number;
  trigger: string;
  dryRun: boolean;
  reconcile: boolean;
  graceSeconds: number;
  state: "running" | "done" | "failed";
  phase: Cursor["phase"];
  startedAt: number;
  finishedAt: number | null;
  durationMs: number | null;
  stats: RunStats;
}

export interface GcStatus {
  state: "idle" | "running";
  current: RunRecord | null;
  history: RunRecord[];
}

export type StartResult = { ok: true; run: RunRecord } | { ok: false; reason: "running" | "migration"; run: RunRecord | null; message: string };

/** Runs kept in the history. */
const HISTORY = 50;
/**
 * Wall time one alarm spends on steps before it re-arms (0 = one step per alarm). Local workerd
 * held concurrent requests for a whole multi-step alarm: 1 s slices made 4 KiB pushes wait ~1 s
 * while GC ran. bench gc, 100,000 blobs: 200 ms → 2,923 rows/s, push p99 337 ms; one step per
 * alarm → 1,780 rows/s, push p99 528 ms (docs/adr/0011).
 */
const SLICE_MS = 200;
/** A step that fails this many times in a row fails the run (and releases the lease). */
const MAX_STEP_FAILURES = 5;

type Row = {
  id: number; trigger: string; dry_run: number; reconcile: number; grace_seconds: number; manual: number;
  state: RunRecord["state"]; cursor: string; stats: string; started_at: number; finished_at: number | null; failures: number;
};

export class GcCoordinator extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS runs (
      id INTEGER PRIMARY KEY AUTOINCREMENT, trigger TEXT NOT NULL, dry_run INTEGER NOT NULL, reconcile INTEGER NOT NULL,
      grace_seconds INTEGER NOT NULL, manual INTEGER NOT NULL, state TEXT NOT NULL, cursor TEXT NOT NULL, stats TEXT NOT NULL,
      started_at INTEGER NOT NULL, finished_at INTEGER, failures INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS retention (pattern TEXT PRIMARY KEY, rule TEXT NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS plan_released (run INTEGER NOT NULL, digest TEXT NOT NULL, repo TEXT NOT NULL, PRIMARY KEY (run, digest, repo)) WITHOUT ROWID`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS quotas (pattern TEXT PRIMARY KEY, limit_bytes INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID`);
  }

  // ---- retention rules --------------------------------------------------------------------

  retentionRules(): RetentionRule[] {
    return this.sql.exec<{ rule: string; updated_at: number }>(`SELECT rule, updated_at FROM retention ORDER BY pattern`).toArray()
      .map((r) => ({ ...(JSON.parse(r.rule) as RetentionRule), updatedAt: r.updated_at }));
  }

  setRetention(rule: RetentionRule): boolean {
    const exists = this.sql.exec(`SELECT 1 FROM retention WHERE pattern = ?`, rule.pattern).toArray().length > 0;
    if (!exists && this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM retention`).one().n >= MAX_RETENTION_RULES) return false;
    const { updatedAt: _u, ...stored } = rule;
    this.sql.exec(`INSERT OR REPLACE INTO retention (pattern, rule, updated_at) VALUES (?, ?, ?)`, rule.pattern, JSON.stringify(stored), Date.now());
    return true;
  }

  deleteRetention(pattern: string): boolean {
    return this.sql.exec(`DELETE FROM retention WHERE pattern = ?`, pattern).rowsWritten > 0;
  }

  // ---- quotas (storage lifecycle's other half; rules live beside the GC state) ---------------

  quotas(): QuotaRule[] {
    return this.sql.exec<{ pattern: string; limit_bytes: number; updated_at: number }>(`SELECT * FROM quotas ORDER BY pattern`).toArray()
      .map((r) => ({ pattern: r.pattern, limitBytes: r.limit_bytes, updatedAt: r.updated_at }));
  }

  /** Upsert a rule; "full" when MAX_QUOTA_RULES exist and this pattern is new. */
  setQuota(pattern: string, limitBytes: number): "created" | "updated" | "full" {
    const exists = this.sql.exec(`SELECT 1 FROM quotas WHERE pattern = ?`, pattern).toArray().length > 0;
    if (!exists && this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM quotas`).one().n >= MAX_QUOTA_RULES) return "full";
    this.sql.exec(`INSERT OR REPLACE INTO quotas (pattern, limit_bytes, updated_at) VALUES (?, ?, ?)`, pattern, limitBytes, Date.now());
    return exists ? "updated" : "created";
  }

  deleteQuota(pattern: string): boolean {
    return this.sql.exec(`DELETE FROM quotas WHERE pattern = ?`, pattern).rowsWritten > 0;
  }

  /** The quota rules whose glob matches a repository: the push must fit every one of their namespaces. */
  quotasFor(repo: string): { pattern: string; limitBytes: number }[] {
    return this.quotas().filter((r) => matchGlob(r.pattern, repo)).map((r) => ({ pattern: r.pattern, limitBytes: r.limitBytes }));
  }

  // ---- one quota rule's usage counter (instances "quota:<pattern>", see src/gc/quotas.ts) -------

  private counterTables(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS quota_usage (repo TEXT PRIMARY KEY, bytes INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS quota_total (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL, repos INTEGER NOT NULL, limit_bytes INTEGER, deleted INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec(`INSERT OR IGNORE INTO quota_total (id, bytes, repos) VALUES (0, 0, 0)`);
  }

  /** Set a repository's bytes unless a newer report (higher seq) is already recorded; the running total follows. */
  private counterSet(repo: string, bytes: number, seq: number): void {
    const old = this.sql.exec<{ bytes: number; seq: number }>(`SELECT bytes, seq FROM quota_usage WHERE repo = ?`, repo).toArray()[0];
    if (old && old.seq >= seq) return;
    this.sql.exec(`INSERT OR REPLACE INTO quota_usage (repo, bytes, seq) VALUES (?, ?, ?)`, repo, bytes, seq);
    this.sql.exec(`UPDATE quota_total SET bytes = bytes + ?, repos = repos + ? WHERE id = 0`, bytes - (old?.bytes ?? 0), old ? 0 : 1);
  }

  /**
   * A push of `adding` bytes to `repo`, whose bytes including it would be `bytes` (as of `seq`):
   * allowed when the namespace total with it stays within `limit`, and then recorded; refused
   * otherwise (the repository is recorded without the addition). `used`: the total before it;
   * `limit`: the one judged by — the rule's current limit as the admin API last set it here (the
   * caller's copy may be up to QUOTA_TTL_MS old), none once the rule was deleted.
   */
  quotaCharge(repo: string, bytes: number, adding: number, limit: number, seq: number): { ok: boolean; used: number; limit: number } {
    this.counterTables();
    return this.ctx.storage.transactionSync(() => {
      const t = this.sql.exec<{ bytes: number; limit_bytes: number | null; deleted: number }>(`SELECT bytes, limit_bytes, deleted FROM quota_total WHERE id = 0`).one();
      const total = t.bytes;
      limit = t.deleted ? Number.MAX_SAFE_INTEGER : (t.limit_bytes ?? limit);
      const old = this.sql.exec<{ bytes: number; seq: number }>(`SELECT bytes, seq FROM quota_usage WHERE repo = ?`, repo).toArray()[0];
      // A report newer than this one already counts this repository: judge against it.
      const mine = old && old.seq >= seq ? old.bytes : bytes - adding;
      const used = total - (old?.bytes ?? 0) + mine;
      const ok = used + adding <= limit;
      this.counterSet(repo, ok ? bytes : bytes - adding, seq);
      return { ok, used, limit };
    });
  }

  quotaReport(repo: string, bytes: number, seq: number): void {
    this.counterTables();
    this.ctx.storage.transactionSync(() => this.counterSet(repo, bytes, seq));
  }

  /** The namespace's counted bytes and repositories. */
  quotaUsed(): { usedBytes: number; repositories: number } {
    this.counterTables();
    const t = this.sql.exec<{ bytes: number; repos: number }>(`SELECT bytes, repos FROM quota_total WHERE id = 0`).one();
    return { usedBytes: t.bytes, repositories: t.repos };
  }

  /** The rule's limit, set by the admin API: it applies at once, whatever the repositories cached. */
  quotaSetLimit(limit: number): void {
    this.counterTables();
    this.sql.exec(`UPDATE quota_total SET limit_bytes = ?, deleted = 0 WHERE id = 0`, limit);
  }

  /** Forget every count: the rule is new (seeded afresh next) or deleted (`deleted`: allow everything until re-created). */
  quotaReset(deleted = false): void {
    this.counterTables();
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`DELETE FROM quota_usage`);
      this.sql.exec(`UPDATE quota_total SET bytes = 0, repos = 0, limit_bytes = NULL, deleted = ? WHERE id = 0`, deleted ? 1 : 0);
    });
  }

  /**
   * Start a run unless one holds the lease. `graceSeconds` and `manual` are for tests: the
   * admin API and the cron use GC_GRACE_SECONDS and alarms.
   */
  async start(opts: { dryRun: boolean; reconcile: boolean; trigger: string; graceSeconds?: number; manual?: boolean; clock?: number }): Promise<StartResult> {
    const running = this.running();
    if (running) return { ok: false, reason: "running", run: this.record(running), message: `GC run ${running.id} is still running` };
    // Before the index migration finishes, blobs of unmigrated repositories have no holders yet.
    const mig = await legacyTrustStore(this.env).migrationStatus();
    if (mig.legacy && mig.state !== "done") {
      return { ok: false, reason: "migration", run: null, message: "the index migration (POST /admin/migrations/index) must finish before garbage collection can run" };
    }
    if (this.running()) return this.start(opts); // another start won the race while we awaited
    const grace = opts.graceSeconds ?? config(this.env).gcGraceSeconds;
    const now = Date.now();
    const cursor: Cursor = { phase: "repos", after: null, current: null, shard: 0, pending: null, cutoff: now - grace * 1000, clock: opts.clock ?? now };
    this.sql.exec(`INSERT INTO runs (trigger, dry_run, reconcile, grace_seconds, manual, state, cursor, stats, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)`,
      opts.trigger, opts.dryRun ? 1 : 0, opts.reconcile ? 1 : 0, grace, opts.manual ? 1 : 0, JSON.stringify(cursor), JSON.stringify(emptyStats()), now);
    this.sql.exec(`DELETE FROM runs WHERE id <= (SELECT max(id) FROM runs) - ?`, HISTORY);
    const row = this.running()!;
    if (!opts.manual) await this.ctx.storage.setAlarm(Date.now());
    return { ok: true, run: this.record(row) };
  }

  status(): GcStatus {
    const rows = this.sql.exec<Row>(`SELECT * FROM runs ORDER BY id DESC LIMIT ?`, HISTORY).toArray();
    const current = rows.find((r) => r.state === "running") ?? null;
    return { state: current ? "running" : "idle", current: current ? this.record(current) : null, history: rows.filter((r) => r !== current).map((r) => this.record(r)) };
  }

  /** One step of the running run (tests drive manual runs with it); null when none is running. */
  async step(): Promise<RunRecord | null> {
    const row = this.running();
    if (!row) return null;
    const cursor = JSON.parse(row.cursor) as Cursor;
    const stats = JSON.parse(row.stats) as RunStats;
    const opts: RunOptions = { runId: row.id, dryRun: row.dry_run === 1, reconcile: row.reconcile === 1, retention: [], immutable: [], proxies: [], now: cursor.clock ?? row.started_at, plan: this.planScratch(row.id) };
    if (cursor.phase === "repos") {
      opts.retention = this.retentionRules();
      opts.proxies = await proxyRetention(this.env, stats);
      if (opts.retention.length || opts.proxies.length) opts.immutable = await immutableTagRules(this.env);
    }
    try {
      const next = await runStep(this.env, cursor, stats, opts);
      const done = next.phase === "done";
      this.sql.exec(`UPDATE runs SET cursor = ?, stats = ?, failures = 0, state = ?, finished_at = ? WHERE id = ?`,
        JSON.stringify(next), JSON.stringify(stats), done ? "done" : "running", done ? Date.now() : null, row.id);
      if (done) this.sql.exec(`DELETE FROM plan_released`);
      if (done) console.log(`gc run ${row.id} done`, JSON.stringify({ ...stats, missing: stats.missing.length }));
      if (done) await this.audit(row, stats, 200, null);
      if (done && stats.missing.length) console.error(`DATA LOSS: gc run ${row.id} found ${stats.missingCount} indexed blobs whose objects are missing`, JSON.stringify(stats.missing.slice(0, 20)));
    } catch (err) {
      const msg = `${cursor.phase}: ${err instanceof GcError || err instanceof Error ? err.message : String(err)}`.slice(0, 500);
      stats.errors = [...stats.errors, msg].slice(-20);
      const failures = row.failures + 1;
      const failed = failures >= MAX_STEP_FAILURES;
      this.sql.exec(`UPDATE runs SET stats = ?, failures = ?, state = ?, finished_at = ? WHERE id = ?`,
        JSON.stringify(stats), failures, failed ? "failed" : "running", failed ? Date.now() : null, row.id);
      console.error(`gc run ${row.id} step failed (${failures}/${MAX_STEP_FAILURES})`, msg);
      if (failed) this.sql.exec(`DELETE FROM plan_released`);
      if (failed) await this.audit(row, stats, 500, "GC_FAILED");
    }
    return this.record(this.sql.exec<Row>(`SELECT * FROM runs WHERE id = ?`, row.id).one());
  }

  /** A dry run's releases (digest, repo), kept here between its phase 1 and its condemnation. */
  private planScratch(run: number): PlanScratch {
    return {
      add: (repo, digests) => {
        for (const d of digests) this.sql.exec(`INSERT OR IGNORE INTO plan_released (run, digest, repo) VALUES (?, ?, ?)`, run, d, repo);
      },
      page: (after, limit) => this.sql.exec<{ digest: string; repo: string }>(
        `SELECT digest, repo FROM plan_released WHERE run = ? AND digest > ? ORDER BY digest, repo LIMIT ?`, run, after ?? "", limit).toArray()
        .map((r) => ({ digest: r.digest, repo: r.repo })),
    };
  }

  /** A finished or failed run is an audit event (counts only: the missing list stays in the run record). */
  private async audit(row: Row, stats: RunStats, status: number, code: string | null): Promise<void> {
    const { missing: _missing, errors, ...counts } = stats;
    await record(this.env, {
      action: "gc.run", principal: `gc:${row.trigger}`, outcome: { status, code },
      details: { run: row.id, dryRun: row.dry_run === 1, reconcile: row.reconcile === 1, graceSeconds: row.grace_seconds, durationMs: Date.now() - row.started_at, ...counts, errors: errors.slice(-3) },
    }, "background");
  }

  /** Steps until the run ends (tests and small registries); returns the final record. */
  async runToEnd(maxSteps = 10_000): Promise<RunRecord | null> {
    let last: RunRecord | null = null;
    for (let i = 0; i < maxSteps; i++) {
      const r = await this.step();
      if (!r) return last;
      last = r;
      if (r.state !== "running") return r;
    }
    return last;
  }

  override async alarm(): Promise<void> {
    const row = this.running();
    if (!row || row.manual) return;
    // Watchdog first: if this invocation dies, the run resumes from its saved cursor.
    await this.ctx.storage.setAlarm(Date.now() + 60_000);
    const until = Date.now() + SLICE_MS;
    do {
      const r = await this.step();
      if (!r || r.state !== "running") {
        await this.ctx.storage.deleteAlarm();
        return;
      }
      if (this.running()!.failures > 0) break; // back off after a failure
    } while (Date.now() < until);
    const failures = this.running()?.failures ?? 0;
    // A few ms ahead: an alarm set for "now" from inside alarm() was sometimes not delivered by local
    // workerd until the 60 s watchdog.
    await this.ctx.storage.setAlarm(Date.now() + (failures > 0 ? 2 ** failures * 1000 : 5));
  }

  private running(): Row | null {
    return this.sql.exec<Row>(`SELECT * FROM runs WHERE state = 'running' ORDER BY id LIMIT 1`).toArray()[0] ?? null;
  }

  private record(r: Row): RunRecord {
    const cursor = JSON.parse(r.cursor) as Cursor;
    return {
      id: r.id, trigger: r.trigger, dryRun: r.dry_run === 1, reconcile: r.reconcile === 1, graceSeconds: r.grace_seconds,
      state: r.state, phase: cursor.phase, startedAt: r.started_at, finishedAt: r.finished_at,
      durationMs: r.finished_at === null ? null : r.finished_at - r.started_at, stats: JSON.parse(r.stats) as RunStats,
    };
  }
}
