// Upgrade path: repositories stored before the membership index keep working (and grant nothing new).
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req } from "./helpers";
import type { TrustStore } from "../../src/stores/trust-store";
import type { Env } from "../../src/env";
import { legacyTrustStore, trustStoreFor } from "../../src/stores";
import { backfillAll } from "../../src/storage/backfill";

/** The repository's own TrustStore (one object per repository, ADR 0008). */
const trust = (repo: string) => trustStoreFor(env as unknown as Env, repo) as unknown as DurableObjectStub<TrustStore>;

/** Make `repo` look like data written by a cloister before schema 2: tags and bytes, no membership rows. */
async function makeLegacy(repo: string) {
  await runInDurableObject(trust(repo), async (instance, state) => {
    state.storage.sql.exec(`DELETE FROM members WHERE repo = ?`, repo);
    state.storage.sql.exec(`DELETE FROM repos WHERE repo = ?`, repo);
    state.storage.sql.exec(`UPDATE meta SET value = '1' WHERE key = 'schema'`);
    (instance as unknown as { init(): void }).init();
  });
}

/**
 * Only repositories of the pre-schema-3 single index can be flagged, and the admin task takes
 * its candidates from there: record `repo` as flagged (and migrated) in the legacy object.
 */
async function listInLegacy(repo: string) {
  await runInDurableObject(legacyTrustStore(env as unknown as Env) as unknown as DurableObjectStub<TrustStore>, async (instance, state) => {
    (instance as unknown as { init(): void }).init(); // the schema (a fresh object has none until written)
    state.storage.sql.exec(`INSERT OR REPLACE INTO repos (repo, created_at, needs_backfill, migrated_at) VALUES (?, ?, 1, ?)`, repo, Date.now(), Date.now());
    state.storage.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('role', 'legacy')`);
    (instance as unknown as { init(): void }).init();
  });
}

describe("membership backfill for pre-index data", () => {
  it("the schema migration flags repositories that have tags", async () => {
    const img = await makeImage("legacy/flag", { seed: 1 });
    expect((await putManifest("legacy/flag", "v1", img.manifest)).status).toBe(201);
    await makeLegacy("legacy/flag");
    expect(await trust("legacy/flag").needsBackfill("legacy/flag")).toBe(true);
  });

  it("lazily restores access to manifests and their blobs on a read miss", async () => {
    const img = await makeImage("legacy/app", { seed: 2, layers: 2 });
    expect((await putManifest("legacy/app", "v1", img.manifest)).status).toBe(201);
    const stray = await pushBlob("legacy/app", bytes(20, 3)); // uploaded, never referenced by a manifest
    await pushBlob("legacy/other", bytes(30, 4));
    const elsewhere = await pushBlob("legacy/other", bytes(31, 5));
    await makeLegacy("legacy/app");

    expect((await req(`/v2/legacy/app/blobs/${img.layers[1]}`)).status).toBe(200);
    expect(await trust("legacy/app").needsBackfill("legacy/app")).toBe(false);
    expect((await req("/v2/legacy/app/manifests/v1")).status).toBe(200);
    expect((await req(`/v2/legacy/app/blobs/${img.config}`)).status).toBe(200);
    // grants nothing that no manifest of this repository references
    await expectError(req(`/v2/legacy/app/blobs/${elsewhere}`), 404, "BLOB_UNKNOWN");
    await expectError(req(`/v2/legacy/app/blobs/${stray}`), 404, "BLOB_UNKNOWN");
  });

  it("restores a manifest read by tag, and index children, through the lazy path", async () => {
    const a = await makeImage("legacy/idx", { seed: 6 });
    expect((await putManifest("legacy/idx", a.digest, a.manifest)).status).toBe(201);
    const index = new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: a.digest, size: a.manifest.length }] }));
    expect((await putManifest("legacy/idx", "multi", index, "application/vnd.oci.image.index.v1+json")).status).toBe(201);
    await makeLegacy("legacy/idx");
    expect((await req("/v2/legacy/idx/manifests/multi")).status).toBe(200);
    expect((await req(`/v2/legacy/idx/manifests/${a.digest}`)).status).toBe(200);
    expect((await req(`/v2/legacy/idx/blobs/${a.layers[0]}`)).status).toBe(200);
  });

  it("the admin task backfills every flagged repository", async () => {
    const img = await makeImage("legacy/task", { seed: 7 });
    expect((await putManifest("legacy/task", "v1", img.manifest)).status).toBe(201);
    await makeLegacy("legacy/task");
    await listInLegacy("legacy/task");
    const report = await backfillAll(env as never);
    expect(report["legacy/task"]).toEqual({ manifests: 1, blobs: 2 });
    expect(await trust("legacy/task").needsBackfill("legacy/task")).toBe(false);
    expect(await backfillAll(env as never)).toEqual({});
    expect((await runInDurableObject(trust("legacy/task"), (_i, s) => s.storage.sql.exec(`SELECT count(*) AS n FROM members WHERE repo = 'legacy/task'`).one().n))).toBe(3);
  });
});
