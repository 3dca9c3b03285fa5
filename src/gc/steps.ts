// The steps of a garbage-collection run (docs/adr/0011). Each step makes a bounded number of
// small store calls and returns the next cursor; the coordinator saves it before the next step.
//
//   repos    phase 1: per repository (catalog order), index unindexed manifest references, then
//            drop blob memberships no manifest references that are older than the cutoff, and
//            release their BlobStore holders. Empty repositories leave the catalog.
//   condemn  phase 1b: per BlobStore shard, select digests with no holder, fence them in the
//            repositories that last held them, condemn the rest in one BlobStore transaction.
//   delete   phase 2: delete a batch of doomed R2 objects …
//   purge    … then drop their rows (two steps, so a test can push between them).
//   orphans  reconcile: R2 objects no row names, older than the cutoff, not an open upload's.
//   missing  reconcile: rows whose object is gone — the data-loss alarm (listed, never dropped).
import type { Env } from "../env";
import { blobShardOf, blobStoreShard, blobShards, catalogShard, catalogShards, groupByBlobShard, trustStoreFor, uploadSessionFor } from "../stores";
import { GC_DRY_RELEASES, GC_SCAN_ROWS } from "../stores/blob-store";
import { GC_REFS_BATCH } from "../stores/trust-store";
import { parseManifest, requiredBlobs, requiredManifests } from "../oci/manifest";
import { backfillRepo } from "../storage/backfill";
import type { RetentionRule } from "./coordinator";
import { matchGlob } from "../auth/policy";
import { recordMany } from "../audit/record";
import type { RetentionSpec } from "../stores/trust-store";
import { afterRetention } from "../signatures/attestations";
import { namespaceOf } from "../proxy/config";
import { stateKey } from "../proxy/pull";

export interface Cursor {
  phase: "repos" | "condemn" | "delete" | "purge" | "orphans" | "missing" | "done";
  /** Last repository / digest / R2 list cursor done in this phase. */
  after: string | null;
  /** A repository whose drops continue in the next step. */
  current: string | null;
  /** Index into blobShards() for the shard-walking phases. */
  shard: number;
  /** Keys deleted from R2 by the last delete step, to purge. */
  pending: { key: string; size: number }[] | null;
  /** Memberships and blobs created at or after this time are live (run start − grace). */
  cutoff: number;
  /** "Now" of the run's retention rules (its start; tests may set another, GcCoordinator.start). */
  clock?: number;
}

export interface RunOptions {
  runId: number;
  dryRun: boolean;
  reconcile: boolean;
  /** Retention rules and immutable-tag rules (loaded by the coordinator for phase 1 steps). */
  retention: RetentionRule[];
  immutable: { repositories: string[]; tags: string[] }[];
  /** Proxy namespaces: their `unpulledDays` is the default retention of their repositories. */
  proxies: { prefix: string; unpulledDays: number | null }[];
  /** Retention's "now" (ms): the cursor's clock. */
  now: number;
  /** Dry runs: the holders the real run's phase 1 would release, kept by the coordinator for the condemn phase. */
  plan: PlanScratch;
}

export interface PlanScratch {
  add(repo: string, digests: string[]): void;
  /** Releases with digest after `after`, in digest order. */
  page(after: string | null, limit: number): { digest: string; repo: string }[];
}

export interface RunStats {
  reposScanned: number;
  manifestsIndexed: number;
  membershipsDropped: number;
  membershipBytesDropped: number;
  reposUncataloged: number;
  blobsScanned: number;
  condemned: number;
  condemnedBytes: number;
  /** Candidates found live after all when fenced (re-held). */
  reheld: number;
  skipped: number;
  objectsDeleted: number;
  bytesFreed: number;
  rowsPurged: number;
  orphansDeleted: number;
  orphanBytes: number;
  rowsChecked: number;
  missingCount: number;
  /** First MAX_LISTED rows whose object is missing (data loss). */
  missing: { digest: string; r2Key: string }[];
  errors: string[];
  retentionTagsRemoved: number;
  retentionManifestsDeleted: number;
  /** First MAX_LISTED retention removals (the plan, in a dry run). */
  retention: { repository: string; tag?: string; digest: string; why: string }[];
}

export const emptyStats = (): RunStats => ({
  reposScanned: 0, manifestsIndexed: 0, membershipsDropped: 0, membershipBytesDropped: 0, reposUncataloged: 0,
  blobsScanned: 0, condemned: 0, condemnedBytes: 0, reheld: 0, skipped: 0, objectsDeleted: 0, bytesFreed: 0, rowsPurged: 0,
  orphansDeleted: 0, orphanBytes: 0, rowsChecked: 0, missingCount: 0, missing: [], errors: [],
  retentionTagsRemoved: 0, retentionManifestsDeleted: 0, retention: [],
});

export class GcError extends Error {}

/** Repositories per repos step, drop calls per repository per step, rows per missing-object step. */
const REPOS_PER_STEP = 5;
const DROPS_PER_STEP = 20;
const DROP_BATCH = 500;
const CHECK_ROWS = 100;
const MAX_LISTED = 100;

export async function runStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  switch (c.phase) {
    case "repos": return reposStep(env, c, stats, o);
    case "condemn": return condemnStep(env, c, stats, o);
    case "delete": return deleteStep(env, c, stats, o);
    case "purge": return purgeStep(env, c, stats);
    case "orphans": return orphansStep(env, c, stats, o);
    case "missing": return missingStep(env, c, stats);
    case "done": return c;
  }
}

const note = (stats: RunStats, msg: string) => {
  stats.errors = [...stats.errors, msg.slice(0, 500)].slice(-20);
};

async function reposStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  let after = c.after;
  let current = c.current;
  for (let i = 0; i < REPOS_PER_STEP; i++) {
    const repo = current ?? (await nextRepo(env, after));
    if (repo === null) return { ...c, phase: "condemn", after: null, current: null, shard: 0 };
    let finished = false;
    try {
      finished = await sweepRepo(env, repo, c.cutoff, stats, o);
    } catch (err) {
      // This repository keeps its memberships and holders this run: nothing is condemned through it.
      note(stats, `${repo}: ${err instanceof Error ? err.message : String(err)}`);
      finished = true;
    }
    if (!finished) return { ...c, after, current: repo };
    stats.reposScanned++;
    after = repo;
    current = null;
  }
  return { ...c, after, current: null };
}

async function nextRepo(env: Env, after: string | null): Promise<string | null> {
  for (const shard of catalogShards()) {
    const page = await catalogShard(env, shard).page(1, after);
    if (page.items.length) return page.items[0];
  }
  return null;
}

/**
 * The retention spec for a repository: of the rules whose glob matches, the longest pattern (most
 * specific). A repository of a proxy namespace gets the namespace's `unpulledDays` unless its rule
 * sets its own (docs/proxy.md "Retention").
 */
function retentionSpec(repo: string, o: RunOptions): RetentionSpec | null {
  const rule = o.retention.filter((r) => matchGlob(r.pattern, repo)).sort((a, b) => b.pattern.length - a.pattern.length)[0];
  const proxy = namespaceOf(o.proxies, repo);
  const unpulledDays = rule?.unpulledDays ?? proxy?.unpulledDays ?? null;
  if (!rule && unpulledDays === null) return null;
  return {
    keepLastTags: rule?.keepLastTags ?? null,
    keepTags: rule?.keepTags ?? [],
    immutableTags: o.immutable.filter((i) => i.repositories.some((g) => !g.includes("{user}") && matchGlob(g, repo))).flatMap((i) => i.tags),
    untaggedBefore: rule?.untaggedOlderThanDays == null ? null : o.now - rule.untaggedOlderThanDays * 86_400_000,
    deleteOrphanReferrers: rule?.deleteOrphanReferrers ?? false,
    unpulledBefore: unpulledDays === null ? null : o.now - unpulledDays * 86_400_000,
  };
}

type Removed = { tags: { tag: string; digest: string; why?: string }[]; manifests: { digest: string; why: string }[] };
const tagWhy = (t: { why?: string }) => (t.why === "unpulled" ? "unpulled" : "tag beyond keepLastTags");

const listRetention = (stats: RunStats, repo: string, r: Removed) => {
  stats.retentionTagsRemoved += r.tags.length;
  stats.retentionManifestsDeleted += r.manifests.length;
  for (const t of r.tags) if (stats.retention.length < MAX_LISTED) stats.retention.push({ repository: repo, tag: t.tag, digest: t.digest, why: tagWhy(t) });
  for (const m of r.manifests) if (stats.retention.length < MAX_LISTED) stats.retention.push({ repository: repo, digest: m.digest, why: m.why });
};

/**
 * A dry run's phase 1 for one repository: the TrustStore runs retention and the drops in a
 * transaction it rolls back (gcPlan), so the plan holds what the real run's own deletions free;
 * the holders it would release are kept for the dry condemnation.
 */
async function planRepo(env: Env, repo: string, cutoff: number, stats: RunStats, o: RunOptions): Promise<boolean> {
  const trust = trustStoreFor(env, repo);
  for (let i = 0; i < DROPS_PER_STEP; i++) {
    const p = await trust.gcPlan(repo, retentionSpec(repo, o), cutoff);
    if ("needsBackfill" in p) {
      if (p.needsBackfill) {
        note(stats, `${repo}: not planned — its membership backfill is due (a real run does it first)`);
        return true;
      }
      for (const m of p.unindexed) await indexRefs(env, repo, m.digest, m.r2Key, m.mediaType);
      stats.manifestsIndexed += p.unindexed.length;
      continue;
    }
    listRetention(stats, repo, p);
    stats.membershipsDropped += p.dropped.length;
    stats.membershipBytesDropped += p.dropped.reduce((a, d) => a + d.size, 0);
    if (p.empty) stats.reposUncataloged++;
    if (p.truncated) note(stats, `${repo}: the dry run's plan lists only the first ${p.dropped.length} drops`);
    o.plan.add(repo, [...p.manifests.filter((m) => !m.held), ...p.dropped.filter((d) => !d.held)].map((x) => x.digest));
    return true;
  }
  return false;
}

/**
 * Each retention deletion is an audit event (issue 11 "Audit"), written durably before the run
 * goes on: the deletion has happened, and "who removed prod/api:v1?" must have an answer.
 */
async function auditRetention(env: Env, repo: string, r: Removed, runId: number): Promise<void> {
  const principal = "gc:retention";
  // Only if the log and the R2 spool both fail: the deletion stands, the run goes on, and the loss is logged.
  await recordMany(env, [
    ...r.tags.map((t) => ({ action: "retention.tag" as const, principal, target: { repository: repo, tag: t.tag, digest: t.digest }, details: { run: runId, why: tagWhy(t) } })),
    ...r.manifests.map((m) => ({ action: "retention.manifest" as const, principal, target: { repository: repo, digest: m.digest }, details: { run: runId, why: m.why } })),
  ]).catch((e) => console.error(JSON.stringify({ type: "audit-unavailable", action: "retention", repository: repo, error: String(e) })));
}

/** Retention first (its deletions feed this run's drops), then phase 1 for one repository. */
async function sweepRepo(env: Env, repo: string, cutoff: number, stats: RunStats, o: RunOptions): Promise<boolean> {
  if (o.dryRun) return planRepo(env, repo, cutoff, stats, o);
  const trust = trustStoreFor(env, repo);
  const spec = retentionSpec(repo, o);
  for (let i = 0; spec && i < DROPS_PER_STEP; i++) {
    const since = Date.now();
    const r = await trust.gcRetention(repo, spec, false);
    listRetention(stats, repo, r);
    await auditRetention(env, repo, r, o.runId);
    await afterRetention(env, repo, r); // deleted signatures stop counting for gates (docs/signatures.md)
    // A proxy repository's removed tags leave their upstream-check state behind otherwise.
    if (r.tags.length && namespaceOf(o.proxies, repo)) await env.BUCKET.delete(r.tags.map((t) => stateKey(repo, t.tag)));
    const release = r.manifests.filter((m) => !m.held).map((m) => m.digest);
    for (const g of groupByBlobShard(env, release)) await g.store.releaseMany(repo, g.digests, since);
    if (!r.more) break;
  }
  for (let i = 0; i < DROPS_PER_STEP; i++) {
    const since = Date.now();
    const r = await trust.gcDrop(repo, cutoff, DROP_BATCH, false);
    if (r.needsBackfill) {
      await backfillRepo(env, repo);
      continue;
    }
    if (r.unindexed.length) {
      for (const m of r.unindexed) await indexRefs(env, repo, m.digest, m.r2Key, m.mediaType);
      stats.manifestsIndexed += r.unindexed.length;
      continue;
    }
    stats.membershipsDropped += r.dropped.length;
    stats.membershipBytesDropped += r.dropped.reduce((a, d) => a + d.size, 0);
    if (r.empty) stats.reposUncataloged++;
    const release = r.dropped.filter((d) => !d.held).map((d) => d.digest);
    for (const g of groupByBlobShard(env, release)) await g.store.releaseMany(repo, g.digests, since);
    if (!r.more) {
      // Namespace quotas: a sweep heals whatever a crash left in this repository's counts.
      await trust.quotaReport(repo);
      return true;
    }
  }
  return false;
}

/** Read a stored manifest and record what it references; a missing object stops this repository. */
async function indexRefs(env: Env, repo: string, digest: string, r2Key: string, mediaType: string): Promise<void> {
  const obj = await env.BUCKET.get(r2Key);
  if (!obj) throw new GcError(`manifest ${digest} is indexed but its object ${r2Key} is missing; nothing is collected in this repository`);
  const parsed = parseManifest(new Uint8Array(await obj.arrayBuffer()), mediaType);
  const refs = [...new Set([...requiredBlobs(parsed), ...requiredManifests(parsed)].map((d) => d.digest))];
  const trust = trustStoreFor(env, repo);
  for (let i = 0; i < refs.length || i === 0; i += GC_REFS_BATCH) {
    await trust.gcRecordRefs(repo, digest, refs.slice(i, i + GC_REFS_BATCH), i + GC_REFS_BATCH >= refs.length);
  }
}

async function condemnStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  const shards = blobShards();
  if (c.shard >= shards.length) return { ...c, phase: o.dryRun ? (o.reconcile ? "orphans" : "done") : "delete", after: null, shard: 0 };
  const store = blobStoreShard(env, shards[c.shard]);
  if (o.dryRun) return dryCondemnStep(env, c, stats, o);
  const page = await store.gcCandidates(c.cutoff, c.after);
  stats.blobsScanned += page.scanned;
  stats.skipped += page.skipped.length;
  const next: Cursor = page.next === null ? { ...c, shard: c.shard + 1, after: null } : { ...c, after: page.next };
  if (!page.items.length) return next;
  // Fence each candidate in every repository that last held it; one that turns out to be a
  // member there is re-held (repairing the holder) and not condemned.
  const byRepo = new Map<string, string[]>();
  for (const it of page.items) for (const r of it.repos) byRepo.set(r, [...(byRepo.get(r) ?? []), it.digest]);
  const spared = new Set<string>();
  for (const [repo, digests] of byRepo) {
    try {
      const held = await trustStoreFor(env, repo).gcFence(repo, digests, page.seq);
      if (held.length) {
        await store.holdMany(repo, held);
        stats.reheld += held.length;
        held.forEach((d) => spared.add(d));
      }
    } catch (err) {
      digests.forEach((d) => spared.add(d));
      note(stats, `fence in ${repo}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const doomed = page.items.filter((i) => !spared.has(i.digest)).map((i) => i.digest);
  if (doomed.length) {
    const r = await store.gcCondemn(doomed, page.seq, c.cutoff);
    stats.condemned += r.condemned.length;
    stats.condemnedBytes += r.doomedBytes;
  }
  return next;
}

/**
 * A dry run's condemnation of one page of a shard: the BlobStore applies the releases the plan
 * collected and condemns as the real run would, then rolls back (gcDryCondemn).
 */
async function dryCondemnStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  const shard = blobShards()[c.shard];
  const all = o.plan.page(c.after, GC_DRY_RELEASES);
  let released = all.filter((r) => blobShardOf(r.digest) === shard);
  const complete = all.length < GC_DRY_RELEASES;
  if (!complete && released.length) {
    // Keep every release of the last digest together (it may continue on the next page).
    const last = released[released.length - 1].digest;
    const whole = released.filter((r) => r.digest !== last);
    if (whole.length) released = whole;
  }
  const r = await blobStoreShard(env, shard).gcDryCondemn(c.cutoff, c.after, released, complete);
  stats.blobsScanned += r.scanned;
  stats.skipped += r.skipped;
  stats.condemned += r.condemned;
  stats.condemnedBytes += r.doomedBytes;
  return r.next === null ? { ...c, shard: c.shard + 1, after: null } : { ...c, after: r.next };
}

async function deleteStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  const shards = blobShards();
  if (c.shard >= shards.length) return { ...c, phase: o.reconcile ? "orphans" : "done", after: null, shard: 0, pending: null };
  const keys = await blobStoreShard(env, shards[c.shard]).gcDoomed(GC_SCAN_ROWS);
  if (!keys.length) return { ...c, shard: c.shard + 1 };
  await env.BUCKET.delete(keys.map((k) => k.key));
  stats.objectsDeleted += keys.length;
  stats.bytesFreed += keys.reduce((a, k) => a + k.size, 0);
  return { ...c, phase: "purge", pending: keys };
}

async function purgeStep(env: Env, c: Cursor, stats: RunStats): Promise<Cursor> {
  const keys = (c.pending ?? []).map((k) => k.key);
  if (keys.length) stats.rowsPurged += await blobStoreShard(env, blobShards()[c.shard]).gcPurge(keys);
  return { ...c, phase: "delete", pending: null };
}

/**
 * The only R2 prefixes whose objects BlobStore rows name: blob bytes (data/<upload id>/…) and
 * manifests (manifests/sha256/…). Reconcile never looks elsewhere, so objects other parts keep in
 * the bucket — the audit spool (audit-spool/), bench objects (_bench/) — are never orphans.
 */
const INDEXED_PREFIXES = ["data/", "manifests/"];

/** Upload sessions write under data/<upload id>/; bench routes under _bench/. */
function uploadIdOf(key: string): string | null {
  const m = /^data\/([0-9a-f-]{36})\//.exec(key);
  return m ? m[1] : null;
}

async function orphansStep(env: Env, c: Cursor, stats: RunStats, o: RunOptions): Promise<Cursor> {
  const list = await env.BUCKET.list({ limit: GC_SCAN_ROWS, cursor: c.after ?? undefined });
  const old = list.objects.filter((obj) => obj.uploaded.getTime() < c.cutoff && INDEXED_PREFIXES.some((p) => obj.key.startsWith(p)));
  if (old.length) {
    let unknown = old.map((obj) => obj.key);
    for (const shard of blobShards()) {
      const known = new Set(await blobStoreShard(env, shard).gcKnownKeys(unknown));
      unknown = unknown.filter((k) => !known.has(k));
    }
    const doomed: string[] = [];
    let bytes = 0;
    for (const obj of old) {
      if (!unknown.includes(obj.key)) continue;
      const upload = uploadIdOf(obj.key);
      if (upload && (await uploadSessionFor(env, upload).exists())) continue; // an open upload's bytes
      doomed.push(obj.key);
      bytes += obj.size;
    }
    stats.orphansDeleted += doomed.length;
    stats.orphanBytes += bytes;
    if (doomed.length && !o.dryRun) await env.BUCKET.delete(doomed);
  }
  if (list.truncated) return { ...c, after: list.cursor };
  return { ...c, phase: "missing", after: null, shard: 0 };
}

async function missingStep(env: Env, c: Cursor, stats: RunStats): Promise<Cursor> {
  const shards = blobShards();
  if (c.shard >= shards.length) return { ...c, phase: "done" };
  const rows = await blobStoreShard(env, shards[c.shard]).gcRows(c.after, CHECK_ROWS);
  stats.rowsChecked += rows.length;
  const heads = await Promise.all(rows.map((r) => env.BUCKET.head(r.r2Key)));
  rows.forEach((r, i) => {
    if (heads[i]) return;
    stats.missingCount++;
    if (stats.missing.length < MAX_LISTED) stats.missing.push({ digest: r.digest, r2Key: r.r2Key });
  });
  if (rows.length < CHECK_ROWS) return { ...c, shard: c.shard + 1, after: null };
  return { ...c, after: rows[rows.length - 1].digest };
}
