// Quotas per namespace glob (issue 11, docs/adr/0011 "Quotas"): a rule limits the TOTAL logical
// bytes (sum of member sizes) of every repository its glob matches. A push that would take any
// matching namespace over its limit gets 403 DENIED "quota exceeded: used / limit", at blob
// commit and at manifest PUT.
//
// Accounting stays cheap: each rule has a counter object (quotaCounter(env, pattern)) that keeps
// one row per repository — that repository's bytes as it last reported them — and a running
// total. A repository's TrustStore reports ABSOLUTE values (its committed bytes plus what its
// in-flight pushes reserved), stamped with a sequence number, so reports are idempotent, a late
// one never overwrites a newer one, and any report heals earlier drift (a crash between reserve
// and insert only overstates that repository until its next report). A push costs one call per
// matching rule; nothing scans the namespace. Reports follow every decrease (blob/manifest delete,
// GC drops, retention), GC phase 1 reports every repository it sweeps, and a new rule is seeded
// from the catalog (seedQuota).
import { oci } from "../oci/errors";
import type { Env } from "../env";
import { record } from "../audit/record";
import { catalogShard, catalogShards, quotaCounter, quotaStore, trustStoreFor } from "../stores";
import { matchGlob } from "../auth/policy";

/** A write that would take a namespace over its quota (nothing was written). */
export interface QuotaRefusal { used: number; limit: number; adding: number; pattern: string }
export interface QuotaRuleRef { pattern: string; limitBytes: number }

/** How long a repository's object keeps the quota rules it read (quota changes apply within this). */
export const QUOTA_TTL_MS = 30_000;
/** Repositories a new rule's seeding counts in the PUT request (each one call, within a request's subrequest budget); the rest are counted by their next write or GC run. */
export const QUOTA_SEED_MAX = 500;

export function quotaExceeded(repo: string, q: QuotaRefusal) {
  return oci("DENIED", `quota exceeded: ${q.used} / ${q.limit} bytes used in namespace "${q.pattern}" (pushing to ${repo}); this push adds ${q.adding} bytes — delete content or ask for a larger quota`,
    { repository: repo, used: q.used, limit: q.limit, adding: q.adding, quota: q.pattern }, 403);
}

/** The refusal, recorded in the audit log (in the background: a refusal must not wait for it). */
export async function quotaDenied(env: Env, repo: string, q: QuotaRefusal, digest: string | null) {
  await record(env, { action: "quota.denied", target: { repository: repo, digest }, outcome: { status: 403, code: "DENIED" },
    details: { used: q.used, limit: q.limit, adding: q.adding, quota: q.pattern } }, "background");
  return quotaExceeded(repo, q);
}

/** A reservation made by QuotaMeter.reserve; settle() it right after the write's transaction. */
export interface QuotaHold {
  refusal: QuotaRefusal | null;
  /** `added`: whether the write stored the reserved bytes (false: refused, or already a member). */
  settle(added: boolean): Promise<void>;
}

/**
 * The quota side of one repository's TrustStore (per object, in memory): its matching rules
 * (cached QUOTA_TTL_MS), the bytes its in-flight pushes reserved, and the report sequence.
 * `committed` reads the repository's stored bytes synchronously, so committed + pending is always
 * a consistent snapshot (an insert moves bytes from pending to committed in the same tick).
 */
export class QuotaMeter {
  private pending = 0;
  private lastSeq = 0;
  private cache: { rules: QuotaRuleRef[]; at: number } | null = null;

  constructor(private readonly env: Env, private readonly committed: (repo: string) => number) {}

  /** Rules whose glob matches `repo` (cached; a failed read keeps the last answer, and is logged). */
  async rules(repo: string, fresh = false): Promise<QuotaRuleRef[]> {
    if (!fresh && this.cache && Date.now() - this.cache.at < QUOTA_TTL_MS) return this.cache.rules;
    try {
      this.cache = { rules: await quotaStore(this.env).quotasFor(repo), at: Date.now() };
    } catch (err) {
      console.error(`quota lookup for ${repo} failed`, err);
      return this.cache?.rules ?? [];
    }
    return this.cache.rules;
  }

  /** Strictly increasing across restarts of this object (clock-based). */
  private seq(): number {
    this.lastSeq = Math.max(Date.now() * 1000, this.lastSeq + 1);
    return this.lastSeq;
  }

  /** Reserve `adding` bytes in every matching namespace; a refusal from any of them refuses the write. */
  async reserve(repo: string, adding: number): Promise<QuotaHold> {
    const rules = adding > 0 ? await this.rules(repo) : [];
    if (!rules.length) return { refusal: null, settle: async () => {} };
    this.pending += adding;
    const value = this.committed(repo) + this.pending;
    const seq = this.seq();
    let refusal: QuotaRefusal | null = null;
    let failed = false;
    try {
      const answers = await Promise.all(rules.map((r) => quotaCounter(this.env, r.pattern).quotaCharge(repo, value, adding, r.limitBytes, seq)));
      answers.forEach((a, i) => {
        if (!a.ok && !refusal) refusal = { used: a.used, limit: a.limit, adding, pattern: rules[i].pattern };
      });
    } catch (err) {
      // As with an unreadable rule: the write goes ahead (logged); its report after the write
      // brings the counters up to date.
      console.error(`quota check for ${repo} failed; allowing the write`, err);
      refusal = null;
      failed = true;
    }
    let settled = false;
    const settle = async (added: boolean) => {
      if (settled) return;
      settled = true;
      this.pending -= adding; // synchronously after the write's transaction: the bytes are committed now, or not at all
      if (!added || refusal || failed) await this.report(repo, rules);
    };
    if (refusal) await settle(false);
    return { refusal, settle };
  }

  /** Tell every matching counter this repository's bytes now (after a decrease, a GC sweep, a seed). */
  async report(repo: string, rules?: QuotaRuleRef[]): Promise<void> {
    const rs = rules ?? (await this.rules(repo));
    if (!rs.length) return;
    const value = this.committed(repo) + this.pending;
    const seq = this.seq();
    try {
      await Promise.all(rs.map((r) => quotaCounter(this.env, r.pattern).quotaReport(repo, value, seq)));
    } catch (err) {
      // The next report of this repository (any write, delete or GC sweep) sets it right.
      console.error(`quota report for ${repo} failed`, err);
    }
  }
}

/** The literal part of a glob before its first "*": every matching name starts with it. */
function literalPrefix(glob: string): string {
  const i = glob.indexOf("*");
  return i < 0 ? glob : glob.slice(0, i);
}

/**
 * Count the repositories a new rule matches: each one's TrustStore reports its bytes to the rule's
 * counter. Walks the catalog from the glob's literal prefix, at most QUOTA_SEED_MAX repositories
 * (repositories beyond are counted by their next write or the next GC run).
 */
export async function seedQuota(env: Env, pattern: string): Promise<{ counted: number; complete: boolean }> {
  const prefix = literalPrefix(pattern);
  let counted = 0;
  let last: string | null = prefix ? prefix.slice(0, -1) : null;
  for (const shard of catalogShards()) {
    for (;;) {
      const page = await catalogShard(env, shard).page(100, last);
      const names = page.items.filter((n) => n.startsWith(prefix) && matchGlob(pattern, n));
      for (const name of names) {
        if (counted >= QUOTA_SEED_MAX) return { counted, complete: false };
        await trustStoreFor(env, name).quotaReport(name);
        counted++;
      }
      const tail = page.items[page.items.length - 1];
      if (page.next === null || tail === undefined || (tail > prefix && !tail.startsWith(prefix))) break;
      last = tail;
    }
  }
  return { counted, complete: true };
}
