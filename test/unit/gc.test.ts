// The collector (docs/adr/0011): liveness rules, two phases, dry run, grace period, empty
// repositories, reference indexing of manifests stored before it, the lease, resumption and
// the admin API.
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req } from "./helpers";
import { E, finishGc, gc, keyOf, manifestPulls, pullsVerified, r2Has, runGc, startGc, stepUntil } from "./gc-helpers";
import { trustStoreFor } from "../../src/stores";
import type { TrustStore } from "../../src/stores/trust-store";
import { GcCoordinator } from "../../src/gc/coordinator";

const uid = () => "gc" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const json = (body: unknown) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

describe("garbage collection", () => {
  it("frees what no tag or manifest needs and keeps everything else readable", async () => {
    const r = uid();
    const a = await makeImage(r, { seed: 11, layers: 2 });
    expect((await putManifest(r, "keep", a.manifest)).status).toBe(201);
    const b = await makeImage(r, { seed: 12, layers: 2 });
    expect((await putManifest(r, "drop", b.manifest)).status).toBe(201);
    const loose = await pushBlob(r, bytes(3000, 13)); // never referenced
    const keys = { b: await keyOf(b.digest), bl: await keyOf(b.layers[0]), loose: await keyOf(loose), al: await keyOf(a.layers[0]) };
    expect((await req(`/v2/${r}/manifests/${b.digest}`, { method: "DELETE" })).status).toBe(202);

    const run = await runGc();
    expect(run.stats.membershipsDropped).toBeGreaterThanOrEqual(4); // b's config + 2 layers + loose
    expect(run.stats.condemned).toBeGreaterThanOrEqual(5);
    expect(run.stats.objectsDeleted).toBeGreaterThanOrEqual(5);
    expect(run.stats.bytesFreed).toBeGreaterThan(2000 + 3000);

    // what "keep" needs is intact and digest-identical
    expect(await manifestPulls(r, "keep", a.digest)).toBe(a.digest);
    for (const d of [a.config, ...a.layers]) expect(await pullsVerified(r, d)).toBe(true);
    expect(await r2Has(keys.al!)).toBe(true);
    // the rest is gone: memberships, rows and bytes
    for (const d of [b.digest, b.config, ...b.layers, loose]) {
      expect((await req(`/v2/${r}/blobs/${d}`, { method: "HEAD" })).status).toBe(404);
      expect(await keyOf(d)).toBeNull();
    }
    for (const k of [keys.b!, keys.bl!, keys.loose!]) expect(await r2Has(k)).toBe(false);
  });

  it("keeps bytes another repository still holds", async () => {
    const [x, y] = [uid(), uid()];
    const data = bytes(2500, 21);
    const d = await pushBlob(x, data);
    await pushBlob(y, data);
    const key = await keyOf(d);
    expect((await req(`/v2/${x}/blobs/${d}`, { method: "DELETE" })).status).toBe(202);
    // y's copy is unreferenced too, so only the grace period keeps it: collect with a long grace
    await runGc({ graceSeconds: 3600 });
    expect(await pullsVerified(y, d)).toBe(true);
    expect(await r2Has(key!)).toBe(true);
  });

  it("the grace period keeps young unreferenced blobs (layers come before their manifest)", async () => {
    const r = uid();
    const d = await pushBlob(r, bytes(1200, 31));
    const run = await runGc({ graceSeconds: 3600 });
    expect(await pullsVerified(r, d)).toBe(true);
    expect(run.graceSeconds).toBe(3600);
    // and with grace 0 the same blob goes
    await runGc();
    expect(await pullsVerified(r, d)).toBe(false);
  });

  it("a dry run reports what would go and deletes nothing", async () => {
    const r = uid();
    const img = await makeImage(r, { seed: 41 });
    expect((await putManifest(r, "v1", img.manifest)).status).toBe(201);
    const mkey = await keyOf(img.digest);
    expect((await req(`/v2/${r}/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    const run = await runGc({ dryRun: true });
    expect(run.dryRun).toBe(true);
    expect(run.stats.membershipsDropped).toBeGreaterThanOrEqual(2); // config + layer would be dropped
    expect(run.stats.condemned).toBeGreaterThanOrEqual(1); // the manifest's own bytes (no holder left)
    expect(run.stats.condemnedBytes).toBeGreaterThanOrEqual(img.manifest.length);
    expect(run.stats.objectsDeleted).toBe(0);
    expect(await r2Has(mkey!)).toBe(true);
    expect(await keyOf(img.digest)).not.toBeNull();
    for (const d of [img.config, ...img.layers]) expect(await pullsVerified(r, d)).toBe(true);
  });

  it("an empty repository leaves the catalog, and comes back on its next push", async () => {
    const r = uid();
    const d = await pushBlob(r, bytes(900, 51));
    const listed = async () => ((await (await req(`/v2/_catalog?n=1000`)).json()) as { repositories: string[] }).repositories.includes(r);
    expect(await listed()).toBe(true);
    expect((await req(`/v2/${r}/blobs/${d}`, { method: "DELETE" })).status).toBe(202);
    const run = await runGc();
    expect(run.stats.reposUncataloged).toBeGreaterThanOrEqual(1);
    expect(await listed()).toBe(false);
    await expectError(req(`/v2/${r}/tags/list`), 404, "NAME_UNKNOWN");
    await pushBlob(r, bytes(900, 52));
    expect(await listed()).toBe(true);
  });

  it("indexes the references of manifests stored before GC existed before dropping anything", async () => {
    const r = uid();
    const img = await makeImage(r, { seed: 61, layers: 2 });
    expect((await putManifest(r, "v1", img.manifest)).status).toBe(201);
    // make the repository look like it was written by the previous version: no refs rows
    const stub = trustStoreFor(E, r) as unknown as DurableObjectStub<TrustStore>;
    await runInDurableObject(stub, (_i, s) => {
      s.storage.sql.exec(`DELETE FROM refs`);
      s.storage.sql.exec(`UPDATE members SET refs_indexed = 0 WHERE kind = 'manifest'`);
    });
    const run = await runGc();
    expect(run.stats.manifestsIndexed).toBeGreaterThanOrEqual(1);
    expect(await manifestPulls(r, "v1", img.digest)).toBe(img.digest);
    for (const d of [img.config, ...img.layers]) expect(await pullsVerified(r, d)).toBe(true);
  });

  it("one run at a time (the lease), and a run resumes from its saved cursor in a fresh instance", async () => {
    const r = uid();
    const d = await pushBlob(r, bytes(1500, 71));
    expect((await req(`/v2/${r}/blobs/${d}`, { method: "DELETE" })).status).toBe(202);
    const key = await keyOf(d);
    const first = await startGc();
    const second = await gc().start({ dryRun: false, reconcile: false, trigger: "test", manual: true });
    expect(second.ok).toBe(false);
    expect(!second.ok && second.reason).toBe("running");
    expect((await req(`/admin/gc`, json({}))).status).toBe(409);
    await stepUntil("delete");
    // "restart": a new instance over the same storage carries on from the cursor
    const stub = gc() as unknown as DurableObjectStub<GcCoordinator>;
    const rec = await runInDurableObject(stub, async (_i, state) => new GcCoordinator(state, E).runToEnd());
    expect(rec?.id).toBe(first.id);
    expect(rec?.state).toBe("done");
    expect(await r2Has(key!)).toBe(false);
    expect((await gc().status()).state).toBe("idle");
  });

  it("admin API: POST /admin/gc starts a run (202 with its id), GET reports state and history; bad bodies get 400", async () => {
    await expectError(req(`/admin/gc`, json({ dryRun: "yes" })), 400, "BAD_REQUEST");
    await expectError(req(`/admin/gc`, json({ dryRun: true, extra: 1 })), 400, "BAD_REQUEST");
    await expectError(req(`/admin/gc`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{" }), 400, "BAD_REQUEST");
    const res = await req(`/admin/gc`, json({ dryRun: true, reconcile: true }));
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: number };
    expect(typeof id).toBe("number");
    // driven by alarms: wait for it to finish
    let status: { state: string; history: { id: number; state: string; dryRun: boolean; reconcile: boolean; graceSeconds: number; durationMs: number; stats: Record<string, unknown> }[] } | null = null;
    for (let i = 0; i < 100; i++) {
      status = (await (await req(`/admin/gc`)).json()) as typeof status;
      if (status!.state === "idle") break;
      await new Promise((ok) => setTimeout(ok, 100));
    }
    expect(status!.state).toBe("idle");
    const run = status!.history.find((h) => h.id === id)!;
    expect(run).toMatchObject({ state: "done", dryRun: true, reconcile: true, graceSeconds: 86400 });
    expect(run.durationMs).toBeGreaterThanOrEqual(0);
    for (const k of ["reposScanned", "blobsScanned", "condemned", "objectsDeleted", "bytesFreed", "errors", "missing"]) expect(run.stats).toHaveProperty(k);
  });
});
