// Days chained to each other (docs/audit.md "Storage, hash chain and retention"): a day's first
// entry chains to the previous day's head, so rewriting a whole earlier day — even with its own
// hashes recomputed, so that the day alone still verifies — or removing a day is caught by
// /admin/audit/verify at the next day's link. Events arriving late for the earlier day do not
// break the link (it commits to the entries that day had when the next began).
import { env } from "cloudflare:workers";
import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { auditIndexFor, auditLogFor } from "../../src/stores";
import { GENESIS, dayOf, entryHash, linkHash, type AuditLog } from "../../src/stores/audit-log";
import { auditForwarded, BASE, bytes, sha256 } from "./helpers";

const app = buildApp();
const e = env as unknown as Env;

async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(BASE + path, init), e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

interface Verify {
  ok: boolean;
  firstMismatch: { day: string; seq: number; reason: string } | null;
  verifiedDays: { day: string; count: number; head: string; previous: { day: string; count: number } | null }[];
}
const verify = async () => (await (await call("/admin/audit/verify")).json()) as Verify;

function event(i: number, time: number) {
  const body = JSON.stringify({ id: `y-${i}`, time: new Date(time).toISOString(), actor: { principal: "open", address: "unknown", userAgent: null }, action: "blob.delete", target: { repository: "chain/old", tag: null, digest: null }, outcome: { status: 202, code: null }, requestId: null, details: { i } });
  return { body, fields: { time, actor: "open", action: "blob.delete", repository: "chain/old", outcome: "success" } };
}

type Row = { seq: number; body: string; prev: string; hash: string };

describe("days chained to each other", () => {
  it("verify follows the chain across a day boundary and names the next day's link when an earlier day is rewritten or removed", async () => {
    const yTime = Date.now() - 86400_000;
    const yesterday = dayOf(yTime);
    const today = dayOf(Date.now());
    await auditLogFor(e, yesterday).append([event(1, yTime), event(2, yTime + 1), event(3, yTime + 2)]);
    await auditIndexFor(e).addDay(yesterday);

    // Today's first event (a real push) links to yesterday's 3 entries.
    const data = bytes(20, 1);
    const d = await sha256(data);
    expect((await call(`/v2/chain/new/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: { "Content-Length": "20" } })).status).toBe(201);
    await auditForwarded("chain/new"); // the push's event reaches the log through the repository's outbox (ADR 0021)
    const yHead = (await auditLogFor(e, yesterday).summary()).head;
    expect(await auditLogFor(e, today).link()).toEqual({ previousDay: yesterday, count: 3, head: yHead });
    const firstToday = await runInDurableObject(auditLogFor(e, today), (_i: AuditLog, s) => s.storage.sql.exec<{ prev: string }>(`SELECT prev FROM events WHERE seq = 1`).one().prev);
    expect(firstToday).toBe(linkHash(yesterday, 3, yHead));
    expect(firstToday).not.toBe(GENESIS);

    // A late event for yesterday (e.g. drained from the spool) extends that day; the link still holds.
    await auditLogFor(e, yesterday).append([event(4, yTime + 3)]);
    const ok = await verify();
    expect(ok.ok, JSON.stringify(ok.firstMismatch)).toBe(true);
    expect(ok.verifiedDays.map((v) => [v.day, v.count, v.previous])).toEqual([
      [yesterday, 4, null],
      [today, ok.verifiedDays[1].count, { day: yesterday, count: 3 }],
    ]);

    // Rewrite yesterday's entry 2 and recompute every later hash of that day: yesterday alone
    // verifies, so only the cross-day link can tell.
    const original = await runInDurableObject(auditLogFor(e, yesterday), (_i: AuditLog, s) => {
      const rows = s.storage.sql.exec<Row>(`SELECT seq, body, prev, hash FROM events ORDER BY seq`).toArray();
      let prev = rows[0].hash;
      for (const r of rows.slice(1)) {
        const body = r.seq === 2 ? r.body.replace('"chain/old"', '"chain/forged"') : r.body;
        const hash = entryHash(prev, body);
        s.storage.sql.exec(`UPDATE events SET body = ?, prev = ?, hash = ?, repository = ? WHERE seq = ?`, body, prev, hash, JSON.parse(body).target.repository, r.seq);
        prev = hash;
      }
      return rows;
    });
    expect((await auditLogFor(e, yesterday).verify()).ok).toBe(true); // the day alone looks fine
    const forged = await verify();
    expect(forged.ok).toBe(false);
    expect(forged.firstMismatch).toMatchObject({ day: today, seq: 1 });
    expect(forged.firstMismatch!.reason).toBe(`its link to ${yesterday} (entry 3) does not match that day's chain`);

    // Put yesterday back: whole again.
    await runInDurableObject(auditLogFor(e, yesterday), (_i: AuditLog, s) => {
      for (const r of original) s.storage.sql.exec(`UPDATE events SET body = ?, prev = ?, hash = ?, repository = 'chain/old' WHERE seq = ?`, r.body, r.prev, r.hash, r.seq);
    });
    expect((await verify()).ok).toBe(true);

    // Editing today's link row instead breaks today's first entry.
    await runInDurableObject(auditLogFor(e, today), (_i: AuditLog, s) => s.storage.sql.exec(`UPDATE link SET prev_count = 2`));
    const relinked = await verify();
    expect(relinked.firstMismatch).toMatchObject({ day: today, seq: 1 });
    await runInDurableObject(auditLogFor(e, today), (_i: AuditLog, s) => s.storage.sql.exec(`UPDATE link SET prev_count = 3`));
    expect((await verify()).ok).toBe(true);

    // Remove yesterday completely (its object and its index row): today's link names the gap.
    await auditLogFor(e, yesterday).destroy();
    await runInDurableObject(auditIndexFor(e), (_i: AuditLog, s) => s.storage.sql.exec(`DELETE FROM days WHERE day = ?`, yesterday));
    const removed = await verify();
    expect(removed.ok).toBe(false);
    expect(removed.firstMismatch).toMatchObject({ day: today, seq: 1, reason: `it is linked to ${yesterday}, which is neither kept nor in the retention checkpoints (a day was removed)` });
  });
});
