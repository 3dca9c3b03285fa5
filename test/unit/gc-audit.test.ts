// GC runs, retention deletions and quota refusals are audit events (issue 11 "Audit", docs/audit.md): a finished run
// records what it scanned, condemned and deleted; a push refused by a quota records the refusal.
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req } from "./helpers";
import { runGc } from "./gc-helpers";
import type { AuditEvent } from "../../src/audit/events";

/** Events are written in the background for runs and refusals: poll until they show. */
async function eventsOf(query: string, want: (evs: AuditEvent[]) => boolean): Promise<AuditEvent[]> {
  let evs: AuditEvent[] = [];
  for (let i = 0; i < 50; i++) {
    const res = await req(`/admin/audit?limit=500&${query}`);
    expect(res.status).toBe(200);
    evs = ((await res.json()) as { events: AuditEvent[] }).events;
    if (want(evs)) return evs;
    await new Promise((r) => setTimeout(r, 50));
  }
  return evs;
}

describe("audit events of the storage lifecycle", () => {
  it("a finished GC run is a gc.run event with its counts", async () => {
    const run = await runGc({ graceSeconds: 0 });
    const evs = await eventsOf("action=gc.run", (e) => e.some((x) => x.details?.run === run.id));
    const ev = evs.find((x) => x.details?.run === run.id);
    expect(ev, "gc.run event for the run").toBeDefined();
    expect(ev!.actor.principal).toBe("gc:test");
    expect(ev!.outcome).toEqual({ status: 200, code: null });
    expect(ev!.details).toMatchObject({ dryRun: false, reconcile: false, graceSeconds: 0 });
    expect(typeof ev!.details!.durationMs).toBe("number");
  });

  it("a push refused by a quota is a quota.denied event", async () => {
    const put = await req(`/admin/quotas`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pattern: "qaudit/**", limitBytes: 1000 }) });
    expect(put.status).toBe(200);
    await pushBlob("qaudit/a", bytes(900, 21));
    const body = bytes(500, 22);
    const d = "sha256:" + [...new Uint8Array(await crypto.subtle.digest("SHA-256", body))].map((b) => b.toString(16).padStart(2, "0")).join("");
    await expectError(req(`/v2/qaudit/a/blobs/uploads/?digest=${d}`, { method: "POST", body }), 403, "DENIED");
    const evs = await eventsOf("action=quota.denied&repository=qaudit/a", (e) => e.length > 0);
    expect(evs).toHaveLength(1);
    expect(evs[0].target).toMatchObject({ repository: "qaudit/a", digest: d });
    expect(evs[0].outcome).toEqual({ status: 403, code: "DENIED" });
    expect(evs[0].details).toMatchObject({ used: 900, limit: 1000, adding: 500, quota: "qaudit/**" });
  });
});

describe("retention deletions are audit events", () => {
  it("each tag a retention rule removes and each manifest it deletes is an event, by gc:retention, with the run", async () => {
    const R = "raudit/app";
    const imgs = [];
    for (let i = 0; i < 3; i++) {
      imgs.push(await makeImage(R, { seed: 700 + i }));
      expect((await putManifest(R, `v${i}`, imgs[i].manifest)).status).toBe(201);
      await new Promise((r) => setTimeout(r, 15)); // distinct push times
    }
    const rule = { pattern: "raudit/**", keepLastTags: 1, keepTags: [], untaggedOlderThanDays: 0, deleteOrphanReferrers: false };
    expect((await req("/admin/retention", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) })).status).toBe(200);
    const run = await runGc({ graceSeconds: 0 });
    expect(run.stats.retentionTagsRemoved).toBe(2);
    const tagEvents = (await eventsOf(`action=retention.tag&repository=${R}`, (e) => e.length >= 2)).filter((e) => e.details?.run === run.id);
    expect(tagEvents.map((e) => e.target.tag).sort()).toEqual(["v0", "v1"]);
    for (const e of tagEvents) {
      expect(e.actor.principal).toBe("gc:retention");
      expect(e.target.digest).toBe(imgs[Number(e.target.tag!.slice(1))].digest);
    }
    // the untagged manifests go in the same run, each an event
    const manifestEvents = (await eventsOf(`action=retention.manifest&repository=${R}`, (e) => e.length >= run.stats.retentionManifestsDeleted)).filter((e) => e.details?.run === run.id);
    expect(run.stats.retentionManifestsDeleted).toBeGreaterThanOrEqual(2);
    expect(manifestEvents).toHaveLength(run.stats.retentionManifestsDeleted);
    expect(manifestEvents.map((e) => e.target.digest)).toEqual(expect.arrayContaining([imgs[0].digest, imgs[1].digest]));
  });
});
