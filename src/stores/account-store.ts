// Accounts, robots, policies, token signing keys and login throttling (owned by the auth module;
// see src/auth/ and docs/auth.md). One instance holds everything: these are small index rows.
// Password hashing happens in the Worker (PBKDF2 is CPU work that would serialize every login
// through this object); this object only stores hashes and counts attempts. Nothing here logs
// or returns a plaintext secret.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { bytesToBase64url } from "../util/encoding";

// Sign-in throttling (docs/auth.md "Throttling"). Failures are counted per (account, client
// address), so a stranger who guesses wrong locks out only their own address; the owner signs in
// from anywhere else. Many addresses guessing one account make every attempt on it wait a little
// (a delay, never a refusal), so a distributed guesser slows down but cannot lock anybody out.
/** Failures from one address within THROTTLE_WINDOW seconds that lock that address out of the account. */
export const THROTTLE_MAX_FAILURES = 5;
export const THROTTLE_WINDOW = 300;
/** An address's first lock lasts THROTTLE_BASE_LOCK seconds; each further lock doubles, up to THROTTLE_MAX_LOCK. */
export const THROTTLE_BASE_LOCK = 30;
export const THROTTLE_MAX_LOCK = 900;
/** Failures on an account from all addresses within THROTTLE_WINDOW before attempts on it are delayed. */
export const THROTTLE_SLOW_AFTER = 10;
/** Each failure beyond THROTTLE_SLOW_AFTER adds this delay (ms) to every attempt, up to THROTTLE_MAX_DELAY_MS. */
export const THROTTLE_DELAY_STEP_MS = 100;
export const THROTTLE_MAX_DELAY_MS = 2000;
/** Address rows kept per account (the least recently used are dropped first), and in all. */
export const THROTTLE_MAX_ADDRESSES = 1000;
export const THROTTLE_MAX_ROWS = 100_000;
/** Rows untouched this long (and not locked) are dropped; so are in-flight marks older than INFLIGHT_STALE. */
const THROTTLE_FORGET = 86400;
const INFLIGHT_STALE = 30;

export type LoginAccount =
  | { kind: "admin" }
  | { kind: "unknown" }
  | { kind: "user"; hash: string; epoch: number }
  | { kind: "robot"; secretSha256: string; expiresAt: number | null; owner: string };

export type LoginRecord =
  | { status: "locked"; retryAfter: number }
  | { status: "busy"; retryAfter: number }
  | ({ status: "ok"; delayMs: number } & LoginAccount);

export interface ThrottleState {
  account: string;
  /** Failures on the account from all addresses in the current window, and the delay they cause. */
  failures: number;
  delayMs: number;
  addresses: { address: string; failures: number; lockedUntil: number; lockouts: number; inflight: number }[];
}

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

/** Most rows one snapshot page or restore call of accounts carries. */
export const SNAPSHOT_PAGE = 500;

const now = () => Math.floor(Date.now() / 1000);
/** Most keys one noteTrustKeyUses call names (as many as may be registered). */
export const MAX_TRUST_KEY_USES = 100;

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
      CREATE TABLE IF NOT EXISTS trust_keys (
        name TEXT PRIMARY KEY, algorithm TEXT NOT NULL, pem TEXT NOT NULL, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS trust_key_seq (id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS trust_key_repos (
        name TEXT NOT NULL, gen INTEGER NOT NULL, repo TEXT NOT NULL, PRIMARY KEY (name, gen, repo)) WITHOUT ROWID;
      DROP TABLE IF EXISTS throttle;
      CREATE TABLE IF NOT EXISTS login_throttle (
        account TEXT NOT NULL, addr TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
        window_start INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0,
        lockouts INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,
        PRIMARY KEY (account, addr));
      CREATE INDEX IF NOT EXISTS login_throttle_lru ON login_throttle(account, updated_at);
      CREATE INDEX IF NOT EXISTS login_throttle_age ON login_throttle(updated_at);
      CREATE TABLE IF NOT EXISTS login_inflight (
        account TEXT NOT NULL, addr TEXT NOT NULL, guess TEXT NOT NULL, n INTEGER NOT NULL, started_at INTEGER NOT NULL,
        PRIMARY KEY (account, addr, guess));
      CREATE INDEX IF NOT EXISTS login_inflight_age ON login_inflight(started_at);
      CREATE TABLE IF NOT EXISTS login_account (
        account TEXT PRIMARY KEY, failures INTEGER NOT NULL, window_start INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS login_account_age ON login_account(window_start);
      CREATE TABLE IF NOT EXISTS ended_sessions (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS ended_sessions_age ON ended_sessions(expires_at);
    `);
    // Key generations (docs/signatures.md): keys registered before them have generation 0.
    if (!(this.sql.exec("PRAGMA table_info(trust_keys)").toArray() as Row[]).some((r) => r.name === "gen")) {
      this.sql.exec("ALTER TABLE trust_keys ADD COLUMN gen INTEGER NOT NULL DEFAULT 0");
    }
  }

  private one(query: string, ...args: SqlStorageValue[]): Row | null {
    const rows = this.sql.exec(query, ...args).toArray() as Row[];
    return rows[0] ?? null;
  }

  // ---- login and throttling -------------------------------------------------------------------

  /**
   * Starts a sign-in attempt for `account` from client address `addr`, `guess` being a short
   * fingerprint of the credential tried. In one transaction, before any password is checked: refuses
   * while the address is locked out of the account, or when the address's failures plus its
   * distinct guesses still in flight reach THROTTLE_MAX_FAILURES (so parallel guesses cannot exceed
   * the limit; the same credential sent in parallel is one guess); else marks the guess in flight
   * and returns what the Worker needs to check the credential, plus the delay (ms) to wait first
   * when the account is under attack from many addresses. Every "ok" must be followed by loginEnd.
   */
  loginBegin(account: string, addr: string, guess: string): LoginRecord {
    const t = now();
    let rec: LoginRecord = { status: "busy", retryAfter: 1 };
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM login_inflight WHERE account = ? AND addr = ? AND started_at < ?", account, addr, t - INFLIGHT_STALE);
      const th = this.one("SELECT failures, window_start, locked_until FROM login_throttle WHERE account = ? AND addr = ?", account, addr);
      if (th && Number(th.locked_until) > t) {
        rec = { status: "locked", retryAfter: Number(th.locked_until) - t };
        return;
      }
      const failures = th && Number(th.window_start) >= t - THROTTLE_WINDOW ? Number(th.failures) : 0;
      const same = this.one("SELECT n FROM login_inflight WHERE account = ? AND addr = ? AND guess = ?", account, addr, guess);
      if (same) {
        this.sql.exec("UPDATE login_inflight SET n = n + 1 WHERE account = ? AND addr = ? AND guess = ?", account, addr, guess);
      } else {
        const pending = Number(this.one("SELECT COUNT(*) AS n FROM login_inflight WHERE account = ? AND addr = ?", account, addr)!.n);
        if (failures + pending >= THROTTLE_MAX_FAILURES) {
          rec = { status: "busy", retryAfter: 1 };
          return;
        }
        this.sql.exec("INSERT INTO login_inflight (account, addr, guess, n, started_at) VALUES (?, ?, ?, 1, ?)", account, addr, guess, t);
      }
      rec = { status: "ok", delayMs: this.delayFor(account, t), ...this.loginAccount(account) };
    });
    return rec;
  }

  /** The stored credential to check for `account`. */
  private loginAccount(account: string): LoginAccount {
    const who = classifyAccount(account);
    if (who.kind === "admin") return { kind: "admin" };
    if (who.kind === "user") {
      const u = this.one("SELECT hash, epoch FROM users WHERE name = ?", who.name);
      return u ? { kind: "user", hash: String(u.hash), epoch: Number(u.epoch) } : { kind: "unknown" };
    }
    const r = this.one("SELECT owner, secret_sha256, expires_at FROM robots WHERE name = ?", who.name);
    if (!r) return { kind: "unknown" };
    return { kind: "robot", secretSha256: String(r.secret_sha256), expiresAt: r.expires_at === null ? null : Number(r.expires_at), owner: String(r.owner) };
  }

  /** Account-wide failures in the current window (all addresses). */
  private accountFailures(account: string, t: number): number {
    const a = this.one("SELECT failures, window_start FROM login_account WHERE account = ?", account);
    return a && Number(a.window_start) >= t - THROTTLE_WINDOW ? Number(a.failures) : 0;
  }

  private delayFor(account: string, t: number): number {
    const over = this.accountFailures(account, t) - THROTTLE_SLOW_AFTER;
    return over < 0 ? 0 : Math.min(THROTTLE_MAX_DELAY_MS, (over + 1) * THROTTLE_DELAY_STEP_MS);
  }

  /**
   * Ends an attempt begun by loginBegin. A success resets that address's count for the account
   * (not other addresses'). Returns the lock length in seconds when this failure locked the address.
   */
  loginEnd(account: string, addr: string, guess: string, ok: boolean): { lockedFor: number } {
    const t = now();
    let lockedFor = 0;
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("UPDATE login_inflight SET n = n - 1 WHERE account = ? AND addr = ? AND guess = ?", account, addr, guess);
      this.sql.exec("DELETE FROM login_inflight WHERE account = ? AND addr = ? AND guess = ? AND n <= 0", account, addr, guess);
      const th = this.one("SELECT * FROM login_throttle WHERE account = ? AND addr = ?", account, addr);
      if (ok) {
        if (th) this.sql.exec("DELETE FROM login_throttle WHERE account = ? AND addr = ?", account, addr);
        return;
      }
      // Attempts that were already running when the lock landed (the same credential sent in
      // parallel) do not extend it: the lock counts distinct, completed guesses.
      if (th && Number(th.locked_until) > t) return;
      let failures = th ? Number(th.failures) : 0;
      let windowStart = th ? Number(th.window_start) : 0;
      let lockouts = th ? Number(th.lockouts) : 0;
      let lockedUntil = th ? Number(th.locked_until) : 0;
      // A day without a lock forgets earlier lockouts.
      if (lockouts > 0 && lockedUntil < t - THROTTLE_FORGET) lockouts = 0;
      if (windowStart < t - THROTTLE_WINDOW) {
        failures = 0;
        windowStart = t;
      }
      failures++;
      if (failures >= THROTTLE_MAX_FAILURES && lockedUntil <= t) {
        lockedFor = Math.min(THROTTLE_BASE_LOCK * 2 ** lockouts, THROTTLE_MAX_LOCK);
        lockouts++;
        lockedUntil = t + lockedFor;
        failures = 0;
        windowStart = t;
      }
      this.sql.exec(
        `INSERT INTO login_throttle (account, addr, failures, window_start, locked_until, lockouts, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(account, addr) DO UPDATE SET failures = excluded.failures, window_start = excluded.window_start,
           locked_until = excluded.locked_until, lockouts = excluded.lockouts, updated_at = excluded.updated_at`,
        account, addr, failures, windowStart, lockedUntil, lockouts, t,
      );
      const prev = this.one("SELECT failures, window_start FROM login_account WHERE account = ?", account);
      const fresh = !prev || Number(prev.window_start) < t - THROTTLE_WINDOW;
      this.sql.exec(
        "INSERT INTO login_account (account, failures, window_start) VALUES (?, ?, ?) ON CONFLICT(account) DO UPDATE SET failures = excluded.failures, window_start = excluded.window_start",
        account, fresh ? 1 : Number(prev!.failures) + 1, fresh ? t : Number(prev!.window_start),
      );
      if (!th) this.boundRows(account, t);
    });
    return { lockedFor };
  }

  /** Keeps the throttle tables bounded after a new address row: per account, in all, and by age. */
  private boundRows(account: string, t: number): void {
    this.sql.exec(
      `DELETE FROM login_throttle WHERE account = ? AND addr IN (
         SELECT addr FROM login_throttle WHERE account = ? ORDER BY updated_at DESC LIMIT -1 OFFSET ?)`,
      account, account, THROTTLE_MAX_ADDRESSES,
    );
    // Rows nobody has touched for a day (e.g. guessed user names) are dropped, unless still locked.
    this.sql.exec("DELETE FROM login_throttle WHERE updated_at < ? AND locked_until < ?", t - THROTTLE_FORGET, t);
    this.sql.exec("DELETE FROM login_account WHERE window_start < ?", t - THROTTLE_WINDOW);
    this.sql.exec("DELETE FROM login_inflight WHERE started_at < ?", t - INFLIGHT_STALE);
    // Counting every row costs a scan, so the global cap is checked on one new row in 64: the
    // table may exceed THROTTLE_MAX_ROWS by a few dozen rows between checks.
    if (Math.random() >= 1 / 64) return;
    const total = Number(this.one("SELECT COUNT(*) AS n FROM login_throttle")!.n);
    if (total > THROTTLE_MAX_ROWS) {
      this.sql.exec(
        "DELETE FROM login_throttle WHERE rowid IN (SELECT rowid FROM login_throttle ORDER BY updated_at LIMIT ?)",
        total - THROTTLE_MAX_ROWS,
      );
    }
  }

  /** Throttle state of an account (admin API and tests). */
  throttleState(account: string): ThrottleState {
    const t = now();
    const rows = this.sql
      .exec("SELECT addr, failures, window_start, locked_until, lockouts FROM login_throttle WHERE account = ? ORDER BY updated_at DESC LIMIT 100", account)
      .toArray() as Row[];
    const inflight = new Map<string, number>();
    for (const r of this.sql.exec("SELECT addr, SUM(n) AS n FROM login_inflight WHERE account = ? GROUP BY addr", account).toArray() as Row[]) {
      inflight.set(String(r.addr), Number(r.n));
    }
    return {
      account,
      failures: this.accountFailures(account, t),
      delayMs: this.delayFor(account, t),
      addresses: rows.map((r) => ({
        address: String(r.addr),
        failures: Number(r.window_start) >= t - THROTTLE_WINDOW ? Number(r.failures) : 0,
        lockedUntil: Number(r.locked_until),
        lockouts: Number(r.lockouts),
        inflight: inflight.get(String(r.addr)) ?? 0,
      })),
    };
  }

  /** Clears an account's locks and counts for every address (admin API). */
  unlock(account: string): boolean {
    let n = 0;
    this.ctx.storage.transactionSync(() => {
      n = this.clearThrottle(account);
    });
    return n > 0;
  }

  private clearThrottle(account: string): number {
    const n = this.sql.exec("DELETE FROM login_throttle WHERE account = ?", account).rowsWritten;
    this.sql.exec("DELETE FROM login_account WHERE account = ?", account);
    this.sql.exec("DELETE FROM login_inflight WHERE account = ?", account);
    return n;
  }

  /**
   * The current epoch of an account for refresh-token checks: users bump it on password change;
   * null when the account no longer exists or (robots) has expired. Admin is always 0.
   */
  /**
   * Sign-out of a web UI session (docs/ui.md): its id is refused until the session would have
   * expired anyway, then its row is pruned. One row per sign-out of a valid session, so the table
   * holds at most the sign-outs of one UI_SESSION_TTL_SECONDS window.
   */
  endSession(jti: string, expiresAt: number): void {
    this.sql.exec("DELETE FROM ended_sessions WHERE expires_at <= ?", now());
    if (expiresAt > now()) this.sql.exec("INSERT OR IGNORE INTO ended_sessions (jti, expires_at) VALUES (?, ?)", jti.slice(0, 128), expiresAt);
  }

  /** accountEpoch for a web UI session: null also when the session `jti` was signed out. */
  sessionEpoch(subject: { kind: "user" | "robot"; name: string }, jti: string): number | null {
    if (this.one("SELECT 1 AS ended FROM ended_sessions WHERE jti = ?", jti.slice(0, 128))) return null;
    return this.accountEpoch(subject);
  }

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
      this.clearThrottle(name);
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
    this.clearThrottle(`robot$${name}`);
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

  // ---- signature verification keys (docs/signatures.md) ----------------------------------------

  /** Registered keys; `gen` tells a key from an earlier key of the same name (attestation rows carry it). */
  trustKeys(): { name: string; algorithm: string; pem: string; createdAt: number; gen: number }[] {
    return (this.sql.exec("SELECT * FROM trust_keys ORDER BY name").toArray() as Row[]).map((r) => ({ name: String(r.name), algorithm: String(r.algorithm), pem: String(r.pem), createdAt: Number(r.created_at), gen: Number(r.gen) }));
  }

  /**
   * Adds a key; "exists" when the name is taken, `{ sameKeyAs }` when the key itself is registered
   * under another name (a gate counts distinct keys: one key under two names would let one
   * signature count twice, or count under a name the gate does not list), "full" at `max` keys.
   */
  addTrustKey(name: string, algorithm: string, pem: string, max: number): "ok" | "exists" | "full" | { sameKeyAs: string } {
    if (this.one("SELECT 1 AS x FROM trust_keys WHERE name = ?", name)) return "exists";
    const material = (p: string) => p.replace(/-----[A-Z ]+-----|\s+/g, "");
    const twin = this.trustKeys().find((k) => material(k.pem) === material(pem));
    if (twin) return { sameKeyAs: twin.name };
    if (Number(this.one("SELECT COUNT(*) AS n FROM trust_keys")!.n) >= max) return "full";
    // A generation never reused, even by a key re-registered under a deleted key's name.
    const last = Number(this.one("SELECT gen FROM trust_key_seq WHERE id = 1")?.gen ?? 0);
    const gen = Math.max(Date.now(), last + 1);
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("INSERT INTO trust_key_seq (id, gen) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET gen = excluded.gen", gen);
      this.sql.exec("INSERT INTO trust_keys (name, algorithm, pem, created_at, gen) VALUES (?, ?, ?, ?, ?)", name, algorithm, pem, now(), gen);
    });
    return "ok";
  }

  /** Deletes a key; answers its generation (whose attestation rows must be revoked), null when unknown. */
  deleteTrustKey(name: string): { gen: number } | null {
    const r = this.one("SELECT gen FROM trust_keys WHERE name = ?", name);
    if (!r) return null;
    this.sql.exec("DELETE FROM trust_keys WHERE name = ?", name);
    return { gen: Number(r.gen) };
  }

  /**
   * Notes that `repo` holds verified attestation rows of `keys` (before the rows are written), so
   * that deleting one of them knows which repositories to revoke in. Answers the names that are
   * still registered with that generation: rows of any other key must not be recorded as verified.
   */
  noteTrustKeyUses(repo: string, keys: { name: string; gen: number }[]): string[] {
    if (keys.length > MAX_TRUST_KEY_USES) throw new RangeError(`noteTrustKeyUses takes at most ${MAX_TRUST_KEY_USES} keys`);
    const live: string[] = [];
    for (const k of keys) {
      if (!this.one("SELECT 1 AS x FROM trust_keys WHERE name = ? AND gen = ?", k.name, k.gen)) continue;
      this.sql.exec("INSERT OR IGNORE INTO trust_key_repos (name, gen, repo) VALUES (?, ?, ?)", k.name, k.gen, repo);
      live.push(k.name);
    }
    return live;
  }

  /** Repositories still to revoke deleted key `name` in (any deleted generation), at most `n` (≤ 100). */
  pendingKeyRevocations(name: string, n: number): { gen: number; repo: string }[] {
    const current = this.one("SELECT gen FROM trust_keys WHERE name = ?", name);
    return (this.sql.exec("SELECT gen, repo FROM trust_key_repos WHERE name = ? AND gen != ? ORDER BY gen, repo LIMIT ?", name, current ? Number(current.gen) : -1, Math.min(Math.max(n, 1), 100)).toArray() as Row[])
      .map((r) => ({ gen: Number(r.gen), repo: String(r.repo) }));
  }

  /** The revocations of `done` are finished (at most 100). */
  finishKeyRevocations(name: string, done: { gen: number; repo: string }[]): void {
    if (done.length > 100) throw new RangeError("finishKeyRevocations takes at most 100 rows");
    for (const d of done) this.sql.exec("DELETE FROM trust_key_repos WHERE name = ? AND gen = ? AND repo = ?", name, d.gen, d.repo);
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

  // ---- snapshot and restore (src/admin/snapshot-routes.ts) -------------------------------------

  /**
   * One page of users, stored rules or robots, by name/id after `after` (at most SNAPSHOT_PAGE).
   * No secrets: users without their hash, robots without their secret's SHA-256.
   */
  snapshotPage(kind: "users" | "rules" | "robots", after: string, n: number): { items: Record<string, unknown>[]; next: string | null } {
    const limit = Math.max(1, Math.min(n, SNAPSHOT_PAGE));
    const rows = (kind === "users"
      ? this.sql.exec("SELECT name AS k, created_at, updated_at FROM users WHERE name > ? ORDER BY name LIMIT ?", after, limit + 1)
      : kind === "rules"
        ? this.sql.exec("SELECT id AS k, rule, robot, created_at, updated_at FROM policies WHERE id > ? ORDER BY id LIMIT ?", after, limit + 1)
        : this.sql.exec("SELECT name AS k, owner, description, created_at, expires_at FROM robots WHERE name > ? ORDER BY name LIMIT ?", after, limit + 1)
    ).toArray() as Row[];
    const page = rows.slice(0, limit);
    const items = page.map((r): Record<string, unknown> => {
      if (kind === "users") return { name: String(r.k), createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) };
      if (kind === "rules") return { rule: JSON.parse(String(r.rule)) as unknown, robot: r.robot === null ? null : `robot$${String(r.robot)}`, createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) };
      return { account: `robot$${String(r.k)}`, owner: String(r.owner), description: r.description === null ? null : String(r.description), createdAt: Number(r.created_at), expiresAt: r.expires_at === null ? null : Number(r.expires_at) };
    });
    return { items, next: rows.length > limit ? String(page[page.length - 1].k) : null };
  }

  /** True when there are no users, robots or stored rules (a restore only goes into an empty registry). */
  isEmpty(): boolean {
    return !["users", "robots", "policies"].some((t) => this.sql.exec(`SELECT 1 FROM ${t} LIMIT 1`).toArray().length > 0);
  }

  /**
   * Restore users and rules from a snapshot (already validated by the Worker). Users get `hash`,
   * a hash of a random secret nobody knows: the snapshot holds no passwords, so each restored user
   * signs in only after the admin sets a password. Existing names and ids are left alone (a retried
   * batch is harmless); the counts are of rows inserted (rowsWritten would count index rows too).
   */
  restoreAccounts(users: { name: string; createdAt: number; updatedAt: number }[], rules: { id: string; rule: string; createdAt: number; updatedAt: number }[], hash: string): { users: number; rules: number } {
    if (users.length + rules.length > SNAPSHOT_PAGE) throw new RangeError(`restoreAccounts takes at most ${SNAPSHOT_PAGE} rows`);
    let u = 0;
    let r = 0;
    this.ctx.storage.transactionSync(() => {
      for (const x of users)
        u += this.sql.exec("INSERT INTO users (name, hash, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING RETURNING 1", x.name, hash, x.createdAt, x.updatedAt).toArray().length;
      for (const x of rules)
        r += this.sql.exec("INSERT INTO policies (id, rule, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING RETURNING 1", x.id, x.rule, x.createdAt, x.updatedAt).toArray().length;
    });
    return { users: u, rules: r };
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

