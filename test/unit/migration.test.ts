// In-place upgrade to one TrustStore per repository (ADR 0008): state written by the previous
// version — the single TrustStore object "registry" with schema 2 — is read through the /v2 routes
// while the migration runs, moved by the admin-started task in bounded batches, and afterwards
// served only by each repository's own object.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { bytes, expectError, putManifest, req, reqWith, sha256 } from "./helpers";
import type { Env } from "../../src/env";
import type { TrustStore } from "../../src/stores/trust-store";
import type { BlobStore } from "../../src/stores/blob-store";
import { blobStoreFor, legacyTrustStore, trustStoreFor } from "../../src/stores";

const E = env as unknown as Env;
const legacy = () => legacyTrustStore(E) as unknown as DurableObjectStub<TrustStore>;
const trust = (repo: string) => trustStoreFor(E, repo) as unknown as DurableObjectStub<TrustStore>;

const ADMIN_PW = "migration-admin-password";
const admin = (path: string, init: RequestInit = {}) =>
  reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW }, path, { ...init, headers: { Authorization: `Basic ${btoa(`admin:${ADMIN_PW}`)}`, ...(init.headers ?? {}) } });

/** The TrustStore DDL of the previous version (schema 2), verbatim. */
const OLD_SCHEMA = `
  CREATE TABLE members (
    repo TEXT NOT NULL, digest TEXT NOT NULL, kind TEXT NOT NULL,
    size INTEGER NOT NULL, r2_key TEXT NOT NULL, media_type TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo, digest, kind)
  ) WITHOUT ROWID;
  CREATE INDEX members_by_digest ON members(digest, kind);
  CREATE TABLE tags (
    repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
  ) WITHOUT ROWID;
  CREATE INDEX tags_by_digest ON tags(repo, digest);
  CREATE TABLE referrers (
    repo TEXT NOT NULL, subject TEXT NOT NULL, digest TEXT NOT NULL,
    media_type TEXT NOT NULL, size INTEGER NOT NULL, artifact_type TEXT, annotations TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo, subject, digest)
  ) WITHOUT ROWID;
  CREATE INDEX referrers_by_digest ON referrers(repo, digest);
  CREATE TABLE repos (
    repo TEXT PRIMARY KEY, created_at INTEGER NOT NULL, needs_backfill INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
`;

interface Stored { digest: string; size: number; r2Key: string; sha: string; bytes: Uint8Array }

/** Bytes in R2 and a BlobStore row without holders: what the previous version's upload left behind. */
async function oldBlob(data: Uint8Array, prefix = "blobs", contentType?: string): Promise<Stored> {
  const digest = await sha256(data);
  const sha = digest.slice(7);
  const r2Key = `${prefix}/sha256/${sha}`;
  await E.BUCKET.put(r2Key, data, contentType ? { httpMetadata: { contentType } } : undefined);
  await runInDurableObject(blobStoreFor(E, digest) as unknown as DurableObjectStub<BlobStore>, (_i, s) => {
    s.storage.sql.exec(`INSERT OR IGNORE INTO blobs (digest, size, r2_key, content_sha256, created_at) VALUES (?, ?, ?, ?, ?)`, digest, data.length, r2Key, sha, 1);
  });
  return { digest, size: data.length, r2Key, sha, bytes: data };
}

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

async function oldImage(seed: number, extra: Record<string, unknown> = {}) {
  const config = await oldBlob(enc({ architecture: "amd64", os: "linux", seed }));
  const layer = await oldBlob(bytes(2000, seed));
  const manifest = await oldBlob(enc({
    schemaVersion: 2, mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config.digest, size: config.size },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layer.size }],
    ...extra,
  }), "manifests", MANIFEST);
  return { config, layer, manifest };
}

type Sql = SqlStorage;
const member = (sql: Sql, repo: string, b: Stored, kind: "blob" | "manifest") =>
  sql.exec(`INSERT INTO members (repo, digest, kind, size, r2_key, media_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    repo, b.digest, kind, b.size, b.r2Key, kind === "manifest" ? MANIFEST : null, 1000);

describe("index migration: one TrustStore per repository, from the previous version's single object", () => {
  it("reads fall back while it runs, the admin task moves every repository in batches, and then each object answers alone", async () => {
    // ---- state of the previous version ------------------------------------------------------
    const app = await oldImage(1);
    const sigSubject = { mediaType: MANIFEST, digest: app.manifest.digest, size: app.manifest.size };
    const sig = await oldImage(2, { artifactType: "application/vnd.example.sig", subject: sigSubject, annotations: { signer: "ci" } });
    const pre2 = await oldImage(3); // a repository from before schema 2: tags, no membership rows
    const big: Stored[] = [];
    for (let i = 0; i < 450; i++) big.push(await oldBlob(bytes(8, 10_000 + i)));
    const many = Array.from({ length: 45 }, (_, i) => `old/many-${String(i).padStart(2, "0")}`);

    await runInDurableObject(legacy(), async (instance, state) => {
      const sql = state.storage.sql;
      for (const t of ["members", "tags", "referrers", "repos", "meta"]) sql.exec(`DROP TABLE IF EXISTS ${t}`);
      sql.exec(OLD_SCHEMA);
      sql.exec(`INSERT INTO meta (key, value) VALUES ('schema', '2')`);
      const repo = (name: string, flagged = 0) => sql.exec(`INSERT INTO repos (repo, created_at, needs_backfill) VALUES (?, ?, ?)`, name, 1000, flagged);
      repo("old/app");
      for (const b of [app.config, app.layer, sig.config, sig.layer]) member(sql, "old/app", b, "blob");
      member(sql, "old/app", app.manifest, "manifest");
      member(sql, "old/app", sig.manifest, "manifest");
      sql.exec(`INSERT INTO tags (repo, tag, digest, updated_at) VALUES ('old/app', 'v1', ?, 1000)`, app.manifest.digest);
      sql.exec(`INSERT INTO referrers (repo, subject, digest, media_type, size, artifact_type, annotations, created_at) VALUES ('old/app', ?, ?, ?, ?, ?, ?, 1000)`,
        app.manifest.digest, sig.manifest.digest, MANIFEST, sig.manifest.size, "application/vnd.example.sig", JSON.stringify({ signer: "ci" }));
      repo("old/pre2", 1);
      sql.exec(`INSERT INTO tags (repo, tag, digest, updated_at) VALUES ('old/pre2', 'v1', ?, 1000)`, pre2.manifest.digest);
      repo("old/big");
      for (const b of big) member(sql, "old/big", b, "blob");
      for (let i = 0; i < 250; i++) sql.exec(`INSERT INTO tags (repo, tag, digest, updated_at) VALUES ('old/big', ?, ?, 1000)`, `t${String(i).padStart(3, "0")}`, app.manifest.digest);
      for (const name of many) {
        repo(name);
        member(sql, name, big[0], "blob");
      }
      (instance as unknown as { init(): void }).init();
    });
    const total = 3 + many.length;

    // ---- admin only --------------------------------------------------------------------------
    await expectError(reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW }, "/admin/migrations/index"), 401, "UNAUTHORIZED");
    await expectError(reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW }, "/admin/migrations/index", { method: "POST" }), 401, "UNAUTHORIZED");
    const before = (await (await admin("/admin/migrations/index")).json()) as { legacy: boolean; state: string; repositories: number; migrated: number };
    expect(before).toMatchObject({ legacy: true, state: "idle", repositories: total, migrated: 0 });

    // ---- reads while not yet migrated: the catalog is whole, a repository's first read takes its rows over
    const cat = (await (await req("/v2/_catalog")).json()) as { repositories: string[] };
    for (const name of ["old/app", "old/pre2", "old/big", ...many]) expect(cat.repositories).toContain(name);
    const m = await req("/v2/old/app/manifests/v1", { headers: { Accept: MANIFEST } });
    expect(m.status).toBe(200);
    expect(m.headers.get("Docker-Content-Digest")).toBe(app.manifest.digest);
    expect(new Uint8Array(await m.arrayBuffer())).toEqual(app.manifest.bytes);
    const layer = await req(`/v2/old/app/blobs/${app.layer.digest}`);
    expect(layer.status).toBe(200);
    expect(new Uint8Array(await layer.arrayBuffer())).toEqual(app.layer.bytes);
    const mid = (await (await admin("/admin/migrations/index")).json()) as { migrated: number; state: string };
    expect(mid).toMatchObject({ migrated: 1, state: "idle" });

    // ---- the task ----------------------------------------------------------------------------
    const started = await admin("/admin/migrations/index", { method: "POST" });
    expect(started.status).toBe(202);
    expect(await started.json()).toMatchObject({ state: "running", repositories: total });
    // The alarm runs by itself; nudge it too, and give up after a minute.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = (await (await admin("/admin/migrations/index")).json()) as { state: string; migrated: number; lastError: string | null };
      expect(s.lastError).toBeNull();
      if (s.state === "done") {
        expect(s.migrated).toBe(total);
        break;
      }
      expect(Date.now(), JSON.stringify(s)).toBeLessThan(deadline);
      await runDurableObjectAlarm(legacy());
      await new Promise((r) => setTimeout(r, 50));
    }
    // starting again after it finished changes nothing
    expect(await (await admin("/admin/migrations/index", { method: "POST" })).json()).toMatchObject({ state: "done", migrated: total });

    // ---- every row moved (batches of ≤ 200), holders recorded, nothing else ------------------
    const count = (repo: string, table: string) =>
      runInDurableObject(trust(repo), (_i, s) => s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).one().n);
    expect(await count("old/big", "members")).toBe(450);
    expect(await count("old/big", "tags")).toBe(250);
    expect(await count("old/app", "members")).toBe(6);
    expect(await count("old/app", "referrers")).toBe(1);
    expect(await count("old/many-07", "members")).toBe(1);
    for (const table of ["members", "tags", "referrers", "repos"]) {
      const others = await runInDurableObject(trust("old/big"), (_i, s) => s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table} WHERE repo != 'old/big'`).one().n);
      expect(others, table).toBe(0);
    }
    const holders = (await (await admin(`/admin/blobs/${big[0].digest}/holders`)).json()) as { repositories: string[] };
    expect(holders.repositories).toEqual(["old/big", ...many]);
    const page = await admin(`/admin/blobs/${big[0].digest}/holders?n=2`);
    expect(((await page.json()) as { repositories: string[] }).repositories).toEqual(["old/big", many[0]]);
    expect(page.headers.get("Link")).toContain(`last=${encodeURIComponent(many[0])}`);
    expect(((await (await admin(`/admin/blobs/${big[449].digest}/holders`)).json()) as { repositories: string[] }).repositories).toEqual(["old/big"]);

    // ---- reads through /v2 on the new layout ------------------------------------------------
    const tags = (await (await req("/v2/old/big/tags/list?n=1000")).json()) as { tags: string[] };
    expect(tags.tags.length).toBe(250);
    expect((await req(`/v2/old/big/blobs/${big[449].digest}`)).status).toBe(200);
    expect((await req(`/v2/old/big/blobs/${app.layer.digest}`)).status).toBe(404); // never a member of old/big
    const refs = (await (await req(`/v2/old/app/referrers/${app.manifest.digest}`)).json()) as { manifests: { digest: string; annotations: unknown }[] };
    expect(refs.manifests).toEqual([expect.objectContaining({ digest: sig.manifest.digest, annotations: { signer: "ci" } })]);
    // the pre-schema-2 repository still backfills from its own manifests
    expect((await req(`/v2/old/pre2/blobs/${pre2.layer.digest}`)).status).toBe(200);
    expect((await req(`/v2/old/pre2/blobs/${app.layer.digest}`)).status).toBe(404);
    // mount without `from` finds a migrated holder
    const mount = await req(`/v2/new/mounted/blobs/uploads/?mount=${big[3].digest}`, { method: "POST" });
    expect(mount.status).toBe(201);

    // ---- writes after the migration land in the repository's object only ---------------------
    expect((await putManifest("old/app", "v2", sig.manifest.bytes)).status).toBe(201);
    const after = (await (await req("/v2/old/app/tags/list")).json()) as { tags: string[] };
    expect(after.tags).toEqual(["v1", "v2"]);
    const legacyTags = await runInDurableObject(legacy(), (_i, s) => s.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM tags WHERE repo = 'old/app'`).one().n);
    expect(legacyTags).toBe(1);

    // ---- an object answers for its own repository only; the legacy object for none -----------
    // (called in the object, not over RPC, so the refusal is this test's to catch)
    await runInDurableObject(trust("old/app"), async (i) => {
      await expect(i.blob("old/big", big[0].digest)).rejects.toThrow(/asked about old\/big/);
    });
    await runInDurableObject(legacy(), async (i) => {
      await expect(i.blob("old/app", app.layer.digest)).rejects.toThrow(/serves only the index migration/);
    });
  });

  it("LEGACY_INDEX=off: a new repository object skips the legacy index (set it only after the migration is done)", async () => {
    const late = await oldBlob(bytes(64, 77));
    // Two repositories the legacy object (made legacy by the test above) still holds, unmigrated.
    await runInDurableObject(legacy(), async (_i, state) => {
      for (const repo of ["old/late-on", "old/late-off"]) {
        state.storage.sql.exec(`INSERT INTO repos (repo, created_at) VALUES (?, 1000)`, repo);
        member(state.storage.sql, repo, late, "blob");
      }
    });
    const found = async (repo: string, vars: Record<string, string>) =>
      runInDurableObject(trust(repo), async (instance) => {
        const i = instance as unknown as { env: Env; blob: TrustStore["blob"] };
        i.env = { ...i.env, ...vars };
        return (await i.blob(repo, late.digest)) !== null;
      });
    expect(await found("old/late-on", {})).toBe(true);
    expect(await found("old/late-off", { LEGACY_INDEX: "off" })).toBe(false);
  });
});
