// The audit log end to end inside workerd: events written by the domain layer through the real
// Worker app, the AuditLog Durable Objects (hash chain, retention checkpoints), the admin query,
// export, live tail and verify routes, the R2 spool when the log fails, and the request log.
import { env } from "cloudflare:workers";
import { createExecutionContext, runDurableObjectAlarm, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { auditIndexFor, auditLogFor, trustStoreFor } from "../../src/stores";
import { dayOf, type AuditLog } from "../../src/stores/audit-log";
import type { AuditEvent } from "../../src/audit/events";
import { auditForwarded, BASE, bytes, sha256 } from "./helpers";

const app = buildApp();
const ADMIN_PW = "audit-admin-password";
const TOKEN = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };
const asAdmin = { Authorization: `Basic ${btoa(`admin:${ADMIN_PW}`)}` };

async function call(path: string, init: RequestInit = {}, vars: Record<string, string> = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(BASE + path, init), { ...(env as unknown as Env), ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  // A registry mutation's event reaches the log through its repository's outbox (docs/adr/0021):
  // wait for that forward, so the queries below see it.
  const repo = /^\/v2\/(.+?)\/(?:blobs|manifests)\//.exec(path)?.[1];
  if (repo && res.ok && !["GET", "HEAD"].includes(init.method ?? "GET")) await auditForwarded(repo);
  return res;
}

async function events(query: string, vars: Record<string, string> = {}): Promise<AuditEvent[]> {
  const res = await call(`/admin/audit?limit=500&${query}`, { headers: vars.AUTH_MODE ? asAdmin : {} }, vars);
  expect(res.status).toBe(200);
  return ((await res.json()) as { events: AuditEvent[] }).events;
}

async function pushBlob(repo: string, data: Uint8Array): Promise<string> {
  const d = await sha256(data);
  const res = await call(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: { "Content-Length": String(data.length) } });
  expect(res.status).toBe(201);
  return d;
}

async function pushManifest(repo: string, tag: string, layerSeed: number): Promise<string> {
  const config = new TextEncoder().encode(`{"seed":${layerSeed}}`);
  const layer = bytes(100, layerSeed);
  const cd = await pushBlob(repo, config);
  const ld = await pushBlob(repo, layer);
  const m = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cd, size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: ld, size: layer.length }],
  });
  const res = await call(`/v2/${repo}/manifests/${tag}`, { method: "PUT", body: m, headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" } });
  expect(res.status).toBe(201);
  return res.headers.get("Docker-Content-Digest")!;
}

const today = () => auditLogFor(env as unknown as Env, dayOf(Date.now()));

afterEach(() => vi.restoreAllMocks());

describe("events from the registry", () => {
  it("manifest PUT records repository, tag and old → new digest; deletes of tag, manifest and blob are recorded", async () => {
    const repo = "audit/mf";
    const first = await pushManifest(repo, "latest", 11);
    const second = await pushManifest(repo, "latest", 12);
    const puts = await events(`repository=${repo}&action=manifest.put`);
    expect(puts.map((e) => e.target.digest)).toEqual([second, first]); // newest first
    expect(puts[0].target).toEqual({ repository: repo, tag: "latest", digest: second });
    expect(puts[0].details).toMatchObject({ previous: first });
    expect(puts[1].details).toMatchObject({ previous: null });
    expect(puts[0].outcome).toEqual({ status: 201, code: null });
    expect(puts[0].actor.principal).toBe("open");
    expect(puts[0].requestId).toMatch(/[0-9a-f-]{36}/);

    expect((await call(`/v2/${repo}/manifests/latest`, { method: "DELETE" })).status).toBe(202);
    expect((await call(`/v2/${repo}/manifests/${first}`, { method: "DELETE" })).status).toBe(202);
    const blob = await pushBlob(repo, bytes(50, 99));
    expect((await call(`/v2/${repo}/blobs/${blob}`, { method: "DELETE" })).status).toBe(202);
    const del = await events(`repository=${repo}&action=tag.delete`);
    expect(del).toHaveLength(1);
    expect(del[0].target).toEqual({ repository: repo, tag: "latest", digest: null });
    const mdel = await events(`repository=${repo}&action=manifest.delete`);
    expect(mdel.map((e) => e.target.digest)).toEqual([first]);
    const bdel = await events(`repository=${repo}&action=blob.delete`);
    expect(bdel.map((e) => e.target.digest)).toEqual([blob]);
  });

  it("each blob upload is summarised (size, dedupe) and mounts name their source", async () => {
    const data = bytes(3000, 7);
    const d = await pushBlob("audit/up", data);
    const up = await events("repository=audit/up&action=blob.upload");
    expect(up).toHaveLength(1);
    expect(up[0].target.digest).toBe(d);
    expect(up[0].details).toEqual({ size: 3000, deduplicated: false });

    const res = await call(`/v2/audit/mounted/blobs/uploads/?mount=${d}&from=audit/up`, { method: "POST" });
    expect(res.status).toBe(201);
    const m = await events("repository=audit/mounted&action=blob.mount");
    expect(m).toHaveLength(1);
    expect(m[0].details).toEqual({ from: "audit/up", size: 3000 });
  });

  it("pulls follow AUDIT_PULLS: off records none, all records each manifest GET, sampled records 1 in AUDIT_PULL_SAMPLE", async () => {
    const repo = "audit/pulls";
    const digest = await pushManifest(repo, "v1", 21);
    const pull = (vars: Record<string, string>) => call(`/v2/${repo}/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } }, vars).then((r) => r.arrayBuffer());
    await pull({ AUDIT_PULLS: "off" });
    expect(await events(`repository=${repo}&action=pull`)).toHaveLength(0);
    await pull({ AUDIT_PULLS: "all" });
    await pull({ AUDIT_PULLS: "all" });
    expect(await events(`repository=${repo}&action=pull`)).toHaveLength(2);
    await pull({ AUDIT_PULLS: "sampled", AUDIT_PULL_SAMPLE: "1" });
    const all = await events(`repository=${repo}&action=pull.manifest`);
    expect(all).toHaveLength(3);
    expect(all[0].target).toEqual({ repository: repo, tag: "v1", digest });
    // A 1-in-a-billion sample records (practically) nothing over 20 pulls.
    for (let i = 0; i < 20; i++) await pull({ AUDIT_PULLS: "sampled", AUDIT_PULL_SAMPLE: "1000000000" });
    expect(await events(`repository=${repo}&action=pull`)).toHaveLength(3);
  });
});

describe("events from auth and the admin API", () => {
  it("sign-in success and failure carry account, address and user agent, never the password; tokens list granted scopes", async () => {
    const headers = (u: string, p: string) => ({ Authorization: `Basic ${btoa(`${u}:${p}`)}`, "User-Agent": "docker/27 audit-test", "CF-Connecting-IP": "192.0.2.7" });
    const ok = await call("/token?service=registry.test&scope=repository:audit/x:pull,push", { headers: headers("admin", ADMIN_PW) }, TOKEN);
    expect(ok.status).toBe(200);
    const bad = await call("/token?service=registry.test", { headers: headers("admin", "wrong-password-123") }, TOKEN);
    expect(bad.status).toBe(401);
    const signins = await events("action=auth.signin", TOKEN);
    const fail = signins.find((e) => e.outcome.status === 401)!;
    const good = signins.find((e) => e.outcome.status === 200)!;
    expect(good.actor).toEqual({ principal: "user:admin", address: "192.0.2.7", userAgent: "docker/27 audit-test" });
    expect(fail.actor).toEqual({ principal: "anonymous", address: "192.0.2.7", userAgent: "docker/27 audit-test" });
    expect(fail.details).toMatchObject({ account: "admin" });
    expect(fail.outcome.code).toBe("UNAUTHORIZED");
    const failures = await events("action=auth.signin&outcome=failure", TOKEN);
    expect(failures.map((e) => e.id)).toEqual([fail.id]);
    const tokens = await events("action=auth.token&actor=user:admin", TOKEN);
    expect(tokens[0].details).toMatchObject({ granted: ["repository:audit/x:pull,push"] });
    const everything = JSON.stringify(await events("", TOKEN));
    expect(everything).not.toContain(ADMIN_PW);
    expect(everything).not.toContain("wrong-password-123");
  });

  it("authorization denials with credentials are recorded with the scope asked for", async () => {
    const res = await call("/v2/audit/denied/tags/list", { headers: { Authorization: `Basic ${btoa("admin:not-the-password")}` } }, TOKEN);
    expect(res.status).toBe(401);
    const d = await events("action=auth.denied&repository=audit/denied", TOKEN);
    expect(d).toHaveLength(1);
    expect(d[0].details).toMatchObject({ scope: "repository:audit/denied:pull", method: "GET" });
    expect(d[0].outcome).toEqual({ status: 401, code: "UNAUTHORIZED" });
    // The admin API's gate too.
    const a = await call("/admin/users", { headers: { Authorization: `Basic ${btoa("admin:nope-nope-nope")}` } }, TOKEN);
    expect(a.status).toBe(401);
    expect((await events("action=auth.denied", TOKEN)).some((e) => e.details?.scope === "registry:admin:*")).toBe(true);
  });

  it("user, robot, policy, key and lock changes are recorded, robot secrets are not", async () => {
    const post = (path: string, body: unknown, method = "POST") =>
      call(path, { method, headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify(body) }, TOKEN);
    expect((await post("/admin/users", { name: "audituser", password: "password-1234" })).status).toBe(201);
    expect((await post("/admin/users/audituser/password", { password: "password-5678" }, "PUT")).status).toBe(204);
    const robot = await post("/admin/robots", { owner: "audituser", name: "ci", access: [{ repositories: "audituser/**", actions: ["pull"] }] });
    expect(robot.status).toBe(201);
    const secret = ((await robot.json()) as { secret: string }).secret;
    expect((await call("/admin/robots/robot$audituser+ci", { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(200);
    const rule = { id: "audit-rule", effect: "allow", subjects: ["user:audituser"], actions: ["pull"], repositories: ["public/**"] };
    expect((await post("/admin/policies", rule)).status).toBe(201);
    expect((await post("/admin/policies/audit-rule", { ...rule, actions: ["pull", "push"] }, "PUT")).status).toBe(200);
    expect((await call("/admin/policies/audit-rule", { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(204);
    const rot = await call("/admin/keys/rotate", { method: "POST", headers: asAdmin }, TOKEN);
    expect(rot.status).toBe(201);
    const rot2 = await call("/admin/keys/rotate", { method: "POST", headers: asAdmin }, TOKEN);
    const { kid: newest } = (await rot2.json()) as { kid: string };
    const { keys } = (await (await call("/admin/keys", { headers: asAdmin }, TOKEN)).json()) as { keys: { kid: string }[] };
    const retired = keys.find((k) => k.kid !== newest)!.kid;
    expect((await call(`/admin/keys/${retired}`, { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(204);
    expect((await call("/admin/locks/audituser", { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(204);
    expect((await call("/admin/users/audituser", { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(200);

    const got = (await events("actor=user:admin", TOKEN)).map((e) => e.action);
    for (const a of ["user.create", "user.password", "robot.create", "robot.delete", "policy.create", "policy.update", "policy.delete", "key.rotate", "key.delete", "lock.unlock", "user.delete"]) {
      expect(got, a).toContain(a);
    }
    const upd = (await events("action=policy.update", TOKEN))[0];
    expect(upd.details).toMatchObject({ rule: { id: "audit-rule", actions: ["pull", "push"] } });
    expect(JSON.stringify(await events("", TOKEN))).not.toContain(secret);
  });

  it("repeated failed sign-ins that lock an address out are recorded", async () => {
    for (let i = 0; i < 5; i++) {
      await call("/token?service=registry.test", { headers: { Authorization: `Basic ${btoa("admin:bad-guess-" + i)}`, "CF-Connecting-IP": "198.51.100.9" } }, TOKEN);
    }
    const locks = await events("action=lock.lock", TOKEN);
    expect(locks.length).toBeGreaterThanOrEqual(1);
    expect(locks[0].details).toMatchObject({ account: "admin", address: "198.51.100.9" });
    expect((await call("/admin/locks/admin", { method: "DELETE", headers: asAdmin }, TOKEN)).status).toBe(204);
  });

  it("the audit API is admin only", async () => {
    expect((await call("/admin/audit", {}, TOKEN)).status).toBe(401);
    const create = await call("/admin/users", { method: "POST", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify({ name: "notadmin", password: "password-1234" }) }, TOKEN);
    expect(create.status).toBe(201);
    const r = await call("/admin/audit/verify", { headers: { Authorization: `Basic ${btoa("notadmin:password-1234")}` } }, TOKEN);
    expect(r.status).toBe(403);
  });
});

describe("query, export and live tail", () => {
  it("pages with a cursor through every matching event exactly once; bad paging input is a 400 in the OCI envelope", async () => {
    for (let i = 0; i < 7; i++) await pushBlob("audit/paging", bytes(10, 300 + i));
    const seen: string[] = [];
    let cursor = "";
    for (let n = 0; n < 10; n++) {
      const res = await call(`/admin/audit?repository=audit/paging&limit=3${cursor ? `&cursor=${cursor}` : ""}`);
      const page = (await res.json()) as { events: AuditEvent[]; next: string | null };
      expect(page.events.length).toBeLessThanOrEqual(3);
      seen.push(...page.events.map((e) => e.id));
      if (!page.next) break;
      cursor = page.next;
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
    for (const q of ["limit=0", "limit=501", "cursor=nope", "since=yesterday", "outcome=maybe"]) {
      const res = await call(`/admin/audit?${q}`);
      expect(res.status, q).toBe(400);
      expect(((await res.json()) as { errors: { message: string }[] }).errors[0].message.length).toBeGreaterThan(5);
    }
  });

  it("filters by since/until", async () => {
    const before = Date.now();
    await pushBlob("audit/time", bytes(10, 500));
    expect(await events(`repository=audit/time&since=${before}`)).toHaveLength(1);
    expect(await events(`repository=audit/time&until=${new Date(before - 1000).toISOString()}`)).toHaveLength(0);
  });

  it("exports NDJSON oldest first", async () => {
    await pushBlob("audit/export", bytes(10, 600));
    await pushBlob("audit/export", bytes(10, 601));
    const res = await call(`/admin/audit/export?since=0&repository=audit/export`);
    expect(res.headers.get("Content-Type")).toMatch(/^application\/x-ndjson/);
    const lines = (await res.text()).trim().split("\n").map((l) => JSON.parse(l) as AuditEvent);
    expect(lines).toHaveLength(2);
    expect(Date.parse(lines[0].time)).toBeLessThanOrEqual(Date.parse(lines[1].time));
    expect((await call("/admin/audit/export")).status).toBe(400);
  });

  it("streams new events as server-sent events", async () => {
    const res = await app.fetch(new Request(`${BASE}/admin/audit/stream?repository=audit/live`), env as unknown as Env, createExecutionContext());
    expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let text = "";
    const until = async (needle: string) => {
      while (!text.includes(needle)) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        text += dec.decode(value);
      }
    };
    await until("event: ready");
    const d = await pushBlob("audit/live", bytes(10, 700));
    await until(d);
    expect(text).toMatch(/event: audit\ndata: \{.*"action":"blob.upload"/);
    await reader.cancel();
  });
});

describe("hash chain, retention and durability", () => {
  it("verify passes on an untouched log and names the first edited entry", async () => {
    await pushBlob("audit/chain", bytes(10, 800));
    await pushBlob("audit/chain", bytes(10, 801));
    const ok = (await (await call("/admin/audit/verify")).json()) as { ok: boolean; verifiedDays: { count: number }[] };
    expect(ok.ok).toBe(true);
    expect(ok.verifiedDays[0].count).toBeGreaterThan(2);

    const target = (await events("repository=audit/chain"))[1]; // the older of the two
    const seq = await runInDurableObject(today(), (_i: AuditLog, state) => {
      const row = state.storage.sql.exec<{ seq: number }>(`SELECT seq FROM events WHERE body LIKE ?`, `%${target.id}%`).one();
      state.storage.sql.exec(`UPDATE events SET body = replace(body, '"size":10', '"size":11') WHERE seq = ?`, row.seq);
      return row.seq;
    });
    const bad = (await (await call("/admin/audit/verify")).json()) as { ok: boolean; firstMismatch: { seq: number; id: string; reason: string } };
    expect(bad.ok).toBe(false);
    expect(bad.firstMismatch).toMatchObject({ seq, id: target.id, reason: "its content does not match its hash" });

    // Restore, then break the link instead (a row deleted from the middle).
    await runInDurableObject(today(), (_i: AuditLog, state) => {
      state.storage.sql.exec(`UPDATE events SET body = replace(body, '"size":11', '"size":10') WHERE seq = ?`, seq);
    });
    expect(((await (await call("/admin/audit/verify")).json()) as { ok: boolean }).ok).toBe(true);
    await runInDurableObject(today(), (_i: AuditLog, state) => {
      const row = state.storage.sql.exec<{ body: string; prev: string; hash: string }>(`SELECT body, prev, hash FROM events WHERE seq = ?`, seq).one();
      state.storage.sql.exec(`DELETE FROM events WHERE seq = ?`, seq);
      return row;
    }).then(async (row) => {
      const gone = (await (await call("/admin/audit/verify")).json()) as { ok: boolean; firstMismatch: { seq: number; reason: string } };
      expect(gone.ok).toBe(false);
      expect(gone.firstMismatch).toMatchObject({ seq, reason: `entry ${seq} is missing` });
      await runInDurableObject(today(), (_i: AuditLog, state) => {
        state.storage.sql.exec(`INSERT INTO events (seq, time, actor, action, repository, outcome, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          seq, Date.parse(target.time), target.actor.principal, target.action, target.target.repository, "success", row.body, row.prev, row.hash);
      });
    });
    expect(((await (await call("/admin/audit/verify")).json()) as { ok: boolean }).ok).toBe(true);
  });

  it("retention drops old days into a checkpoint chain that verify still checks", async () => {
    const e = env as unknown as Env;
    // Write an event dated 200 days ago straight into its day's partition, as record() would.
    const old = Date.now() - 200 * 86400_000;
    const oldDay = dayOf(old);
    const body = JSON.stringify({ id: "old-1", time: new Date(old).toISOString(), actor: { principal: "open", address: "unknown", userAgent: null }, action: "blob.delete", target: { repository: "audit/old", tag: null, digest: null }, outcome: { status: 202, code: null }, requestId: null, details: null });
    await auditLogFor(e, oldDay).append([{ body, fields: { time: old, actor: "open", action: "blob.delete", repository: "audit/old", outcome: "success" } }]);
    await auditIndexFor(e).addDay(oldDay);
    expect(await auditIndexFor(e).listDays()).toContain(oldDay);

    const pruned = await auditIndexFor(e).prune(Date.now(), 90);
    expect(pruned).toEqual([oldDay]);
    expect(await auditIndexFor(e).listDays()).not.toContain(oldDay);
    expect((await auditLogFor(e, oldDay).summary()).count).toBe(0);
    const v = (await (await call("/admin/audit/verify")).json()) as { ok: boolean; checkpoints: number; checkpoint: string };
    expect(v).toMatchObject({ ok: true, checkpoints: 1 });
    expect(v.checkpoint).toMatch(/^[0-9a-f]{64}$/);

    await runInDurableObject(auditIndexFor(e), (_i: AuditLog, state) => {
      state.storage.sql.exec(`UPDATE pruned SET count = count + 1`);
    });
    const bad = (await (await call("/admin/audit/verify")).json()) as { ok: boolean; firstMismatch: { day: string } };
    expect(bad).toMatchObject({ ok: false, firstMismatch: { day: oldDay } });
    await runInDurableObject(auditIndexFor(e), (_i: AuditLog, state) => {
      state.storage.sql.exec(`UPDATE pruned SET count = count - 1`);
    });
  });

  it("a push's event is written with the push (refused: none) and is queryable within the outbox's delay", async () => {
    const repo = "audit/outbox";
    const data = bytes(20, 880);
    const d = await sha256(data);
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${BASE}/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data }), env as unknown as Env, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(201);
    // Durable before the 2xx: the event is in the repository's object, in the push's transaction.
    const queued = await runInDurableObject(trustStoreFor(env as unknown as Env, repo), (_i: unknown, state: DurableObjectState) =>
      state.storage.sql.exec<{ body: string }>(`SELECT body FROM audit_outbox`).toArray().map((r) => JSON.parse(r.body) as AuditEvent));
    const mine = queued.filter((e) => e.target.digest === d);
    // (Already forwarded when the alarm beat this read; then it is in the log below.)
    expect(mine.length).toBeLessThanOrEqual(1);
    // No helper, no forced alarm: the query sees it once the alarm ran (FORWARD_DELAY_MS).
    const t0 = Date.now();
    let got: AuditEvent[] = [];
    while (Date.now() - t0 < 5000) {
      got = await events(`repository=${repo}&action=blob.upload`);
      if (got.length) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(got.map((e) => e.target.digest)).toEqual([d]);
    if (mine.length) expect(got[0].id).toBe(mine[0].id);
    // A refused push (a manifest naming a blob the repository lacks) writes no event.
    const m = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: 20 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: `sha256:${"e".repeat(64)}`, size: 1 }] });
    expect((await call(`/v2/${repo}/manifests/refused`, { method: "PUT", body: m, headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" } })).status).toBe(400);
    await new Promise((r) => setTimeout(r, 300));
    expect(await events(`repository=${repo}&action=manifest.put`)).toHaveLength(0);
  });

  it("when the AuditLog fails, a push still answers 201, its event waits in the outbox (no spool) and arrives once after the log is back", async () => {
    const e = env as unknown as Env;
    const repo = "audit/spool";
    const trust = trustStoreFor(e, repo);
    const outbox = () => runInDurableObject(trust, (_i: unknown, state: DurableObjectState) =>
      state.storage.sql.exec<{ id: string; body: string }>(`SELECT id, body FROM audit_outbox`).toArray());
    // Break today's partition for real: its table disappears, so every append throws.
    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events RENAME TO events_away`));
    const data = bytes(10, 900);
    const d = await sha256(data);
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${BASE}/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data }), e, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(201);
    expect((await env.BUCKET.list({ prefix: "audit-spool/" })).objects).toHaveLength(0);
    // Let the alarm try (and fail): the event stays, and a retry is scheduled.
    await runDurableObjectAlarm(trust);
    const kept = await outbox();
    expect(kept).toHaveLength(1);
    expect(JSON.parse(kept[0].body)).toMatchObject({ action: "blob.upload", target: { repository: repo, digest: d } });
    const retryAt = await runInDurableObject(trust, (_i: unknown, state: DurableObjectState) => state.storage.getAlarm());
    expect(retryAt).not.toBeNull();

    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events_away RENAME TO events`));
    await runDurableObjectAlarm(trust); // the scheduled retry, run now
    await auditForwarded(repo);
    expect((await events(`repository=${repo}`)).map((x) => x.id)).toEqual([kept[0].id]);

    // At least once: a forward whose outbox delete was lost is sent again, and the AuditLog drops it.
    await runInDurableObject(trust, async (_i: unknown, state: DurableObjectState) => {
      state.storage.sql.exec(`INSERT INTO audit_outbox (id, body) VALUES (?, ?)`, kept[0].id, kept[0].body);
      await state.storage.setAlarm(Date.now());
    });
    await auditForwarded(repo);
    expect((await events(`repository=${repo}`)).map((x) => x.id)).toEqual([kept[0].id]);
    expect(((await (await call("/admin/audit/verify")).json()) as { ok: boolean }).ok).toBe(true);
  });

  it("other mutations: when the AuditLog fails, the event is spooled to R2 first and drained into the log later", async () => {
    const rule = { id: "spool-rule", effect: "allow", subjects: ["user:nobody"], actions: ["pull"], repositories: ["spool/**"] };
    const put = (actions: string[]) => call("/admin/policies/spool-rule", { method: "PUT", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify({ ...rule, actions }) }, TOKEN);
    expect((await call("/admin/policies", { method: "POST", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify(rule) }, TOKEN)).status).toBe(201);
    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events RENAME TO events_away`));
    expect((await put(["pull", "push"])).status).toBe(200); // still 2xx
    const spooled = await env.BUCKET.list({ prefix: "audit-spool/" });
    expect(spooled.objects).toHaveLength(1);
    const ev = JSON.parse(await (await env.BUCKET.get(spooled.objects[0].key))!.text()) as AuditEvent;
    expect(ev).toMatchObject({ action: "policy.update", details: { rule: { id: "spool-rule" } } });

    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events_away RENAME TO events`));
    const drained = (await (await call("/admin/audit/drain", { method: "POST", headers: asAdmin }, TOKEN)).json()) as { moved: number };
    expect(drained.moved).toBe(1);
    expect((await env.BUCKET.list({ prefix: "audit-spool/" })).objects).toHaveLength(0);
    expect((await events("action=policy.update", TOKEN)).filter((x) => x.details?.rule && (x.details.rule as { id: string }).id === "spool-rule").map((x) => x.id)).toEqual([ev.id]);
    expect(((await (await call("/admin/audit/verify")).json()) as { ok: boolean }).ok).toBe(true);
  });
});

describe("durability when the R2 spool fails too", () => {
  it("answers 503 with Retry-After and the event id; the change is applied, nothing half-written, and a retry is recorded", async () => {
    // An admin mutation (registry pushes use the outbox instead, above). The AuditLog fails for
    // real (its table is gone) and R2 refuses the spool write: R2 stays real for everything else,
    // only put() under audit-spool/ is made to fail (fault injection).
    const rule = { id: "nospool-rule", effect: "allow", subjects: ["user:nobody"], actions: ["pull"], repositories: ["nospool/**"] };
    expect((await call("/admin/policies", { method: "POST", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify(rule) }, TOKEN)).status).toBe(201);
    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events RENAME TO events_away`));
    const real = env.BUCKET;
    const failingSpool = new Proxy(real, {
      get(t, p) {
        if (p === "put") return (key: string, ...rest: unknown[]) => (key.startsWith("audit-spool/") ? Promise.reject(new Error("R2 unavailable (test)")) : (t.put as (...a: unknown[]) => unknown)(key, ...rest));
        const v = (t as unknown as Record<string | symbol, unknown>)[p];
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const update = async (bucket: R2Bucket) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(new Request(`${BASE}/admin/policies/nospool-rule`, { method: "PUT", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify({ ...rule, actions: ["pull", "push"] }) }), { ...(env as unknown as Env), ...TOKEN, BUCKET: bucket }, ctx);
      await waitOnExecutionContext(ctx);
      return res;
    };
    const res = await update(failingSpool as R2Bucket);
    expect(res.status).toBe(503);
    expect(res.headers.get("Retry-After")).toBe("5");
    const err = ((await res.json()) as { errors: { code: string; message: string; detail: { auditEventId: string; requestId: string } }[] }).errors[0];
    expect(err.code).toBe("UNKNOWN");
    expect(err.message).toMatch(/applied but could not be recorded/);
    expect(err.detail.auditEventId).toMatch(/^[0-9a-f-]{36}$/);
    expect(err.detail.requestId).toBe(res.headers.get("X-Request-Id"));
    // The change itself was applied (documented: every mutation is idempotent to retry), and no
    // spool object was half-written.
    const now = (await (await call("/admin/policies/nospool-rule", { headers: asAdmin }, TOKEN)).json()) as { actions: string[] };
    expect(now.actions).toEqual(["pull", "push"]);
    expect((await env.BUCKET.list({ prefix: "audit-spool/" })).objects).toHaveLength(0);

    // Once the log is back, the client's retry answers 200 and is recorded.
    await runInDurableObject(today(), (_i: AuditLog, state) => state.storage.sql.exec(`ALTER TABLE events_away RENAME TO events`));
    expect((await update(real)).status).toBe(200);
    const ev = (await events("action=policy.update", TOKEN)).filter((x) => (x.details?.rule as { id?: string } | undefined)?.id === "nospool-rule");
    expect(ev).toHaveLength(1);
    expect(ev[0].id).not.toBe(err.detail.auditEventId); // the lost attempt's event was never written
    expect(((await (await call("/admin/audit/verify")).json()) as { ok: boolean }).ok).toBe(true);
  });
});

describe("request log and request id", () => {
  it("one JSON line per request with path and query, bytes in/out, principal, repository and digest, timed to the response", async () => {
    const data = bytes(4096, 1000);
    const d = await pushBlob("audit/log", data);
    const lines: Record<string, unknown>[] = [];
    vi.spyOn(console, "log").mockImplementation((s: unknown) => {
      try {
        lines.push(JSON.parse(String(s)) as Record<string, unknown>);
      } catch {
        /* not ours */
      }
    });
    const res = await call(`/v2/audit/log/blobs/${d}?x=1`, { headers: { "X-Request-Id": "client-supplied-id-1" } }, { REQUEST_LOG: "on" });
    expect(res.headers.get("X-Request-Id")).toBe("client-supplied-id-1");
    expect(res.headers.get("Content-Length")).toBe("4096");
    expect((await res.arrayBuffer()).byteLength).toBe(4096);
    await new Promise((r) => setTimeout(r, 10));
    const line = lines.find((l) => l.requestId === "client-supplied-id-1")!;
    expect(line).toMatchObject({ type: "request", method: "GET", path: `/v2/audit/log/blobs/${d}?x=1`, status: 200, bytesIn: 0, bytesOut: 4096, principal: "open", repository: "audit/log", digest: d });
    expect(typeof line.durationMs).toBe("number");

    const put = await call(`/v2/audit/log/blobs/uploads/?digest=${await sha256(bytes(77, 1))}`, { method: "POST", body: bytes(77, 1), headers: { "Content-Length": "77" } }, { REQUEST_LOG: "on" });
    expect(put.status).toBe(201);
    await new Promise((r) => setTimeout(r, 10));
    expect(lines.find((l) => l.requestId === put.headers.get("X-Request-Id"))).toMatchObject({ method: "POST", status: 201, bytesIn: 77 });

    // REQUEST_LOG=off (as the workerd suites run): the request id stays, the line goes
    const quiet = await call(`/v2/audit/log/blobs/${d}`, { headers: { "X-Request-Id": "client-supplied-id-2" } }, { REQUEST_LOG: "off" });
    expect(quiet.headers.get("X-Request-Id")).toBe("client-supplied-id-2");
    await quiet.arrayBuffer();
    await new Promise((r) => setTimeout(r, 10));
    expect(lines.find((l) => l.requestId === "client-supplied-id-2")).toBeUndefined();
  });

  it("error bodies carry the request id in detail", async () => {
    const res = await call("/v2/audit/log/manifests/nope");
    expect(res.status).toBe(404);
    const id = res.headers.get("X-Request-Id");
    expect(id).toMatch(/[0-9a-f-]{36}/);
    const body = (await res.json()) as { errors: { detail: { requestId: string } }[] };
    expect(body.errors[0].detail.requestId).toBe(id);
  });
});
