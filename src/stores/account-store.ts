// Accounts, robots, policies, token signing keys and login throttling (owned by the auth module;
// see src/auth/ and docs/auth.md). One instance holds everything: these are small index rows.
// Password hashing happens in the Worker (PBKDF2 is CPU work that would serialize every login
// through this object); this object only stores hashes and counts attempts. Nothing here logs
// or returns a plaintext secret.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { bytesToBase64url } from "../util/encoding";

/** Failures within THROTTLE_WINDOW seconds that lock an account. */
export const THROTTLE_MAX_FAILURES = 5;
export const THROTTLE_WINDOW = 300;
/** First lock lasts THROTTLE_BASE_LOCK seconds; each further lock doubles, up to THROTTLE_MAX_LOCK. */
export const THROTTLE_BASE_LOCK = 30;
export const THROTTLE_MAX_LOCK = 3600;
/** Unfinished attempts per account at once (bounds parallel guessing before a lock lands). */
export const THROTTLE_MAX_INFLIGHT = 10;
const INFLIGHT_STALE = 30;

export type LoginRecord =
  | { status: "locked"; retryAfter: number }
  | { status: "busy"; retryAfter: number }
  | { status: "ok"; kind: "admin" }
  | { status: "ok"; kind: "unknown" }
  | { status: "ok"; kind: "user"; hash: string; epoch: number }
  | { status: "ok"; kind: "robot"; secretSha256: string; expiresAt: number | null; owner: string };

export interface UserInfo {
  name: string;
  createdAt: number;
  updatedAt: number;
}

export interface RobotInfo {
  /** Full account name: robot$<owner>+<name>. */
  account: string;
  /** Short name used in subjects: <owner>+<name>. */
  name: string;
  owner: string;
  description: string | null;
  createdAt: number;
  expiresAt: number | null;
  rules: string[];
}

export interface StoredRule {
  id: string;
  /** The rule as JSON text (validated by the Worker before it was stored). */
  rule: string;
  createdAt: number;
  updatedAt: number;
  robot: string | null;
}

export interface StoredKey {
  kid: string;
  secret: string;
  createdAt: number;
}

type Row = Record<string, SqlStorageValue>;

const now = () => Math.floor(Date.now() / 1000);

/** "admin" | "robot$alice+ci" | "alice" → what to look up. */
export function classifyAccount(account: string): { kind: "admin" } | { kind: "robot"; name: string } | { kind: "user"; name: string } {
  if (account === "admin") return { kind: "admin" };
  if (account.startsWith("robot$")) return { kind: "robot", name: account.slice(6) };
  return { kind: "user", name: account };
}

export class AccountStore extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY, hash TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS robots (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL, secret_sha256 TEXT NOT NULL, description TEXT,
        created_at INTEGER NOT NULL, expires_at INTEGER);
      CREATE INDEX IF NOT EXISTS robots_owner ON robots(owner);
      CREATE TABLE IF NOT EXISTS policies (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, robot TEXT,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS signing_keys (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, kid TEXT NOT NULL UNIQUE, secret TEXT NOT NULL,
        created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS throttle (
        account TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0, window_start INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER NOT NULL DEFAULT 0, lockouts INTEGER NOT NULL DEFAULT 0,
        inflight INTEGER NOT NULL DEFAULT 0, inflight_at INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL);
    `);
  }

  private one(query: string, ...args: SqlStorageValue[]): Row | null {
    const rows = this.sql.exec(query, ...args).toArray() as Row[];
    return rows[0] ?? null;
  }

  // ---- login and throttling -------------------------------------------------------------------

  /**
   * Starts a login attempt for `account`: refuses while locked or while too many attempts are
   * unfinished, else counts the attempt as in flight and returns what the Worker needs to check
   * the credential. Every loginBegin that returns "ok" must be followed by loginEnd.
   */
  loginBegin(account: string): LoginRecord {
    const t = now();
    const th = this.one("SELECT * FROM throttle WHERE account = ?", account);
    let inflight = 0;
    if (th) {
      const lockedUntil = Number(th.locked_until);
      if (lockedUntil > t) return { status: "locked", retryAfter: lockedUntil - t };
      inflight = Number(th.inflight_at) >= t - INFLIGHT_STALE ? Number(th.inflight) : 0;
      if (inflight >= THROTTLE_MAX_INFLIGHT) return { status: "busy", retryAfter: 1 };
    }
    this.sql.exec(
      `INSERT INTO throttle (account, inflight, inflight_at, updated_at) VALUES (?, 1, ?, ?)
       ON CONFLICT(account) DO UPDATE SET inflight = ?, inflight_at = ?, updated_at = ?`,
      account, t, t, inflight + 1, t, t,
    );
    const who = classifyAccount(account);
    if (who.kind === "admin") return { status: "ok", kind: "admin" };
    if (who.kind === "user") {
      const u = this.one("SELECT hash, epoch FROM users WHERE name = ?", who.name);
      return u ? { status: "ok", kind: "user", hash: String(u.hash), epoch: Number(u.epoch) } : { status: "ok", kind: "unknown" };
    }
    const r = this.one("SELECT owner, secret_sha256, expires_at FROM robots WHERE name = ?", who.name);
    if (!r) return { status: "ok", kind: "unknown" };
    return {
      status: "ok",
      kind: "robot",
      secretSha256: String(r.secret_sha256),
      expiresAt: r.expires_at === null ? null : Number(r.expires_at),
      owner: String(r.owner),
    };
  }

  /** Ends an attempt. Returns the lock length in seconds when this failure locked the account. */
  loginEnd(account: string, ok: boolean): { lockedFor: number } {
    const t = now();
    const th = this.one("SELECT * FROM throttle WHERE account = ?", account);
    const inflight = th && Number(th.inflight_at) >= t - INFLIGHT_STALE ? Math.max(0, Number(th.inflight) - 1) : 0;
    if (ok) {
      if (inflight === 0) this.sql.exec("DELETE FROM throttle WHERE account = ?", account);
      else
        this.sql.exec(
          "UPDATE throttle SET failures = 0, window_start = 0, lockouts = 0, locked_until = 0, inflight = ?, updated_at = ? WHERE account = ?",
          inflight, t, account,
        );
      return { lockedFor: 0 };
    }
    let failures = th ? Number(th.failures) : 0;
    let windowStart = th ? Number(th.window_start) : 0;
    let lockouts = th ? Number(th.lockouts) : 0;
    let lockedUntil = th ? Number(th.locked_until) : 0;
    // A day without a lock forgets earlier lockouts.
    if (lockouts > 0 && lockedUntil < t - 86400) lockouts = 0;
    if (windowStart < t - THROTTLE_WINDOW) {
      failures = 0;
      windowStart = t;
    }
    failures++;
    let lockedFor = 0;
    if (failures >= THROTTLE_MAX_FAILURES && lockedUntil <= t) {
      lockedFor = Math.min(THROTTLE_BASE_LOCK * 2 ** lockouts, THROTTLE_MAX_LOCK);
      lockouts++;
      lockedUntil = t + lockedFor;
      failures = 0;
      windowStart = t;
    }
    this.sql.exec(
      `INSERT INTO throttle (account, failures, window_start, locked_until, lockouts, inflight, inflight_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(account) DO UPDATE SET failures = excluded.failures, window_start = excluded.window_start,
         locked_until = excluded.locked_until, lockouts = excluded.lockouts, inflight = excluded.inflight,
         inflight_at = excluded.inflight_at, updated_at = excluded.updated_at`,
      account, failures, windowStart, lockedUntil, lockouts, inflight, t, t,
    );
    // Rows for names nobody has tried for a day (e.g. guessed user names) are dropped.
    this.sql.exec("DELETE FROM throttle WHERE updated_at < ? AND locked_until < ?", t - 86400, t);
    return { lockedFor };
  }

  /** Throttle state for an account (admin API and tests). */
  throttleState(account: string): { failures: number; lockedUntil: number; lockouts: number; inflight: number } | null {
    const th = this.one("SELECT * FROM throttle WHERE account = ?", account);
    if (!th) return null;
    return { failures: Number(th.failures), lockedUntil: Number(th.locked_until), lockouts: Number(th.lockouts), inflight: Number(th.inflight) };
  }

  /** Clears an account's lock (admin API). */
  unlock(account: string): boolean {
    return this.sql.exec("DELETE FROM throttle WHERE account = ?", account).rowsWritten > 0;
  }

  /**
   * The current epoch of an account for refresh-token checks: users bump it on password change;
   * null when the account no longer exists or (robots) has expired. Admin is always 0.
   */
  accountEpoch(subject: { kind: "user" | "robot"; name: string }): number | null {
    if (subject.kind === "user") {
      if (subject.name === "admin") return 0;
      const u = this.one("SELECT epoch FROM users WHERE name = ?", subject.name);
      return u ? Number(u.epoch) : null;
    }
    const r = this.one("SELECT expires_at FROM robots WHERE name = ?", subject.name);
    if (!r) return null;
    if (r.expires_at !== null && Number(r.expires_at) <= now()) return null;
    return 0;
  }

  // ---- users ----------------------------------------------------------------------------------

  listUsers(): UserInfo[] {
    return (this.sql.exec("SELECT name, created_at, updated_at FROM users ORDER BY name").toArray() as Row[]).map((r) => ({
      name: String(r.name),
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    }));
  }

  getUser(name: string): UserInfo | null {
    const r = this.one("SELECT name, created_at, updated_at FROM users WHERE name = ?", name);
    return r ? { name: String(r.name), createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) } : null;
  }

  /** False when the user exists already. `hash` is a PBKDF2 hash made by the Worker. */
  createUser(name: string, hash: string): boolean {
    const t = now();
    return this.sql.exec("INSERT INTO users (name, hash, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING", name, hash, t, t).rowsWritten > 0;
  }

  /** Changes the hash and bumps the epoch (refresh tokens issued before stop working). */
  setPassword(name: string, hash: string): boolean {
    return this.sql.exec("UPDATE users SET hash = ?, epoch = epoch + 1, updated_at = ? WHERE name = ?", hash, now(), name).rowsWritten > 0;
  }

  /** Deletes the user, the user's robots and the rules those robots had. */
  deleteUser(name: string): { deleted: boolean; robots: string[] } {
    const robots = (this.sql.exec("SELECT name FROM robots WHERE owner = ?", name).toArray() as Row[]).map((r) => String(r.name));
    let deleted = false;
    this.ctx.storage.transactionSync(() => {
      deleted = this.sql.exec("DELETE FROM users WHERE name = ?", name).rowsWritten > 0;
      for (const r of robots) this.removeRobot(r);
      this.sql.exec("DELETE FROM throttle WHERE account = ?", name);
    });
    return { deleted, robots: robots.map((r) => `robot$${r}`) };
  }

  // ---- robots ---------------------------------------------------------------------------------

  private robotInfo(r: Row): RobotInfo {
    const name = String(r.name);
    const rules = (this.sql.exec("SELECT id FROM policies WHERE robot = ? ORDER BY id", name).toArray() as Row[]).map((x) => String(x.id));
    return {
      account: `robot$${name}`,
      name,
      owner: String(r.owner),
      description: r.description === null ? null : String(r.description),
      createdAt: Number(r.created_at),
      expiresAt: r.expires_at === null ? null : Number(r.expires_at),
      rules,
    };
  }

  listRobots(owner?: string): RobotInfo[] {
    const rows = (owner === undefined
      ? this.sql.exec("SELECT * FROM robots ORDER BY name")
      : this.sql.exec("SELECT * FROM robots WHERE owner = ? ORDER BY name", owner)
    ).toArray() as Row[];
    return rows.map((r) => this.robotInfo(r));
  }

  /**
   * Creates robot `<owner>+<name>` with the SHA-256 of its secret and its own rules (already
   * validated by the Worker). Fails when the owner does not exist, the robot exists, or a rule
   * id is taken.
   */
  createRobot(input: {
    name: string;
    owner: string;
    secretSha256: string;
    description: string | null;
    expiresAt: number | null;
    /** Rules as JSON text, validated by the Worker. */
    rules: { id: string; rule: string }[];
  }): { ok: true; robot: RobotInfo } | { ok: false; reason: "owner-unknown" | "exists" | "rule-exists"; detail?: string } {
    if (input.owner !== "admin" && !this.one("SELECT 1 AS x FROM users WHERE name = ?", input.owner)) return { ok: false, reason: "owner-unknown" };
    if (this.one("SELECT 1 AS x FROM robots WHERE name = ?", input.name)) return { ok: false, reason: "exists" };
    for (const r of input.rules) if (this.one("SELECT 1 AS x FROM policies WHERE id = ?", r.id)) return { ok: false, reason: "rule-exists", detail: r.id };
    const t = now();
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        "INSERT INTO robots (name, owner, secret_sha256, description, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        input.name, input.owner, input.secretSha256, input.description, t, input.expiresAt,
      );
      for (const r of input.rules)
        this.sql.exec("INSERT INTO policies (id, rule, robot, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", r.id, r.rule, input.name, t, t);
    });
    return { ok: true, robot: this.robotInfo(this.one("SELECT * FROM robots WHERE name = ?", input.name)!) };
  }

  private removeRobot(name: string): boolean {
    const gone = this.sql.exec("DELETE FROM robots WHERE name = ?", name).rowsWritten > 0;
    this.sql.exec("DELETE FROM policies WHERE robot = ?", name);
    this.sql.exec("DELETE FROM throttle WHERE account = ?", `robot$${name}`);
    return gone;
  }

  /** Revokes (deletes) a robot and the rules created with it. */
  deleteRobot(name: string): boolean {
    let gone = false;
    this.ctx.storage.transactionSync(() => {
      gone = this.removeRobot(name);
    });
    return gone;
  }

  // ---- policies -------------------------------------------------------------------------------

  listRules(): StoredRule[] {
    return (this.sql.exec("SELECT * FROM policies ORDER BY id").toArray() as Row[]).map((r) => ({
      id: String(r.id),
      rule: String(r.rule),
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
      robot: r.robot === null ? null : String(r.robot),
    }));
  }

  /** Just the rule bodies as JSON text (what the policy engine needs on a request). */
  rules(): string[] {
    return (this.sql.exec("SELECT rule FROM policies").toArray() as Row[]).map((r) => String(r.rule));
  }

  getRule(id: string): StoredRule | null {
    const r = this.one("SELECT * FROM policies WHERE id = ?", id);
    return r
      ? { id: String(r.id), rule: String(r.rule), createdAt: Number(r.created_at), updatedAt: Number(r.updated_at), robot: r.robot === null ? null : String(r.robot) }
      : null;
  }

  /** mode "create" fails on an existing id; "replace" fails on a missing one. */
  putRule(id: string, rule: string, mode: "create" | "replace"): boolean {
    const t = now();
    if (mode === "create")
      return this.sql.exec("INSERT INTO policies (id, rule, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING", id, rule, t, t).rowsWritten > 0;
    // Rules created with a robot stay tied to it.
    return this.sql.exec("UPDATE policies SET rule = ?, updated_at = ? WHERE id = ?", rule, t, id).rowsWritten > 0;
  }

  deleteRule(id: string): boolean {
    return this.sql.exec("DELETE FROM policies WHERE id = ?", id).rowsWritten > 0;
  }

  // ---- token signing keys ---------------------------------------------------------------------

  /** Keys, newest (the signer) first; creates the first key on first use. */
  signingKeys(): StoredKey[] {
    let rows = this.sql.exec("SELECT kid, secret, created_at FROM signing_keys ORDER BY seq DESC").toArray() as Row[];
    if (rows.length === 0) {
      this.addKey();
      rows = this.sql.exec("SELECT kid, secret, created_at FROM signing_keys ORDER BY seq DESC").toArray() as Row[];
    }
    return rows.map((r) => ({ kid: String(r.kid), secret: String(r.secret), createdAt: Number(r.created_at) }));
  }

  private addKey(): string {
    const rand = (n: number) => bytesToBase64url(crypto.getRandomValues(new Uint8Array(n)));
    const kid = `k-${rand(6)}`;
    this.sql.exec("INSERT INTO signing_keys (kid, secret, created_at) VALUES (?, ?, ?)", kid, rand(32), now());
    return kid;
  }

  /** Adds a new signing key; older keys keep verifying until deleted. Returns the new kid. */
  rotateKey(): string {
    this.signingKeys();
    return this.addKey();
  }

  /** Deletes a key (tokens signed with it stop verifying). The last key cannot be deleted. */
  deleteKey(kid: string): "deleted" | "unknown" | "last" {
    const count = Number(this.one("SELECT COUNT(*) AS n FROM signing_keys")!.n);
    if (!this.one("SELECT 1 AS x FROM signing_keys WHERE kid = ?", kid)) return "unknown";
    if (count <= 1) return "last";
    this.sql.exec("DELETE FROM signing_keys WHERE kid = ?", kid);
    return "deleted";
  }
}

