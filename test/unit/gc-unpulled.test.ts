// "Unpulled for N days" retention (issue 17, docs/proxy.md "Retention"): a manifest GET stamps the
// UTC day in the lookup it already makes (HEAD does not); GC drops manifests, with their tags, not
// pulled (nor stored) for N days — by default 30 in proxy namespaces, elsewhere only when a rule
// says so. The clock is controlled: GC runs take a retention "now", and pulls on other days go
// through the same TrustStore.manifest call the route makes, with that day.
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { makeImage, putManifest, req, reqWith, sha256 } from "./helpers";
import { E, runGc } from "./gc-helpers";
import { trustStoreFor } from "../../src/stores";
import { pullDay } from "../../src/stores/trust-store";
import { saveApiNamespaces, apiNamespaces } from "../../src/proxy/config";
import type { AuditEvent } from "../../src/audit/events";

const DAY = 86_400_000;
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const ACCEPT = { Accept: `${MANIFEST}, ${INDEX}` };
const json = (method: string, body: unknown) => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

/** A pull of `ref` on day `at` (ms): the route's own lookup, with that day. */
const pullOn = async (repo: string, ref: string, at: number) => {
  const got = await trustStoreFor(E, repo).manifest(repo, ref, ref.startsWith("sha256:"), pullDay(at));
  expect(got, `${repo}@${ref}`).not.toBeNull();
};
const status = async (repo: string, ref: string) => (await req(`/v2/${repo}/manifests/${ref}`, { method: "HEAD", headers: ACCEPT })).status;
/** Whether the repository holds `ref` (in a proxy repository a HEAD would go to the upstream). */
const cached = async (repo: string, ref: string) => (await trustStoreFor(E, repo).manifest(repo, ref, ref.startsWith("sha256:"))) !== null;
const planOf = (run: { stats: { retention: { repository: string; tag?: string; digest: string; why: string }[] } }, repo: string) =>
  run.stats.retention.filter((r) => r.repository === repo).map((r) => `${r.tag ?? r.digest} ${r.why}`).sort();

async function eventsOf(query: string, want: (evs: AuditEvent[]) => boolean): Promise<AuditEvent[]> {
  let evs: AuditEvent[] = [];
  for (let i = 0; i < 50; i++) {
    evs = ((await (await req(`/admin/audit?limit=500&${query}`)).json()) as { events: AuditEvent[] }).events;
    if (want(evs)) return evs;
    await new Promise((r) => setTimeout(r, 50));
  }
  return evs;
}

async function pushIndexOf(repo: string, tag: string, child: { digest: string; manifest: Uint8Array }) {
  const index = new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: [{ mediaType: MANIFEST, digest: child.digest, size: child.manifest.length }] }));
  expect((await putManifest(repo, tag, index, INDEX)).status).toBe(201);
  return sha256(index);
}

describe("pull tracking", () => {
  it("a manifest GET stamps today's day, by tag or digest; a HEAD does not", async () => {
    const R = "pulltrack/app";
    const a = await makeImage(R, { seed: 1 });
    const b = await makeImage(R, { seed: 2 });
    expect((await putManifest(R, "a", a.manifest)).status).toBe(201);
    expect((await putManifest(R, "b", b.manifest)).status).toBe(201);
    const trust = trustStoreFor(E, R);
    expect(await trust.pulledDays(R, [a.digest, b.digest])).toEqual({ [a.digest]: null, [b.digest]: null });
    expect((await req(`/v2/${R}/manifests/a`, { headers: ACCEPT })).status).toBe(200);
    expect(await status(R, "b")).toBe(200);
    expect(await status(R, b.digest)).toBe(200);
    expect(await trust.pulledDays(R, [a.digest, b.digest])).toEqual({ [a.digest]: pullDay(), [b.digest]: null });
    expect((await req(`/v2/${R}/manifests/${b.digest}`, { headers: ACCEPT })).status).toBe(200);
    expect((await trust.pulledDays(R, [b.digest]))[b.digest]).toBe(pullDay());
    // A later day moves the stamp; an earlier one never moves it back.
    await pullOn(R, "a", Date.now() + 3 * DAY);
    await pullOn(R, "a", Date.now() + 1 * DAY);
    expect((await trust.pulledDays(R, [a.digest]))[a.digest]).toBe(pullDay() + 3);
  });

  it("an upgrade stamps existing manifests with the upgrade day, so it drops nothing at once", async () => {
    const R = "pullupgrade/app";
    const old = await makeImage(R, { seed: 3 });
    expect((await putManifest(R, "v1", old.manifest)).status).toBe(201);
    const stub = trustStoreFor(E, R);
    // Back to the layout before pull tracking: no pulled_day column, a manifest stored long ago.
    await runInDurableObject(stub, (instance, state) => {
      state.storage.sql.exec(`ALTER TABLE members DROP COLUMN pulled_day`);
      state.storage.sql.exec(`UPDATE members SET created_at = 1000`);
      (instance as unknown as { init(): void }).init();
    });
    expect((await stub.pulledDays(R, [old.digest]))[old.digest]).toBe(pullDay());
    const rule = { pattern: "pullupgrade/**", unpulledDays: 30 };
    expect((await req("/admin/retention", json("PUT", rule))).status).toBe(200);
    expect(planOf(await runGc({ dryRun: true }), R)).toEqual([]);
    expect(planOf(await runGc({ dryRun: true, clock: Date.now() + 32 * DAY }), R)).toEqual([`${old.digest} unpulled`, "v1 unpulled"].sort());
  });
});

describe("unpulled-days retention", () => {
  it("proxy namespaces default to 30 days: pulled images stay, unpulled ones go after N days, a pull resets the window; dry run exact; audited", async () => {
    const P = "pxret";
    const R = `${P}/app`;
    const T0 = Date.now();
    // Cached content as a fill leaves it (stored while the prefix was not yet a namespace).
    const a = await makeImage(R, { seed: 11 });
    const b = await makeImage(R, { seed: 12 });
    const c = await makeImage(R, { seed: 13 });
    const d = await makeImage(R, { seed: 14 }); // an index's child
    for (const [tag, img] of [["a", a], ["b", b], ["c", c]] as const) expect((await putManifest(R, tag, img.manifest)).status).toBe(201);
    expect((await putManifest(R, d.digest, d.manifest)).status).toBe(201);
    const index = await pushIndexOf(R, "multi", d);
    await saveApiNamespaces(E, [...(await apiNamespaces(E)).filter((n) => n.prefix !== P), { prefix: P, upstream: "http://127.0.0.1:1", libraryPrefix: false, tagTtlSeconds: 300, timeoutSeconds: 1, unpulledDays: 30 }]);
    expect(((await (await reqWith({}, "/admin/proxies")).json()) as { proxies: { prefix: string; unpulledDays: number }[] }).proxies.find((p) => p.prefix === P)?.unpulledDays).toBe(30);

    for (const tag of ["a", "b"]) await E.BUCKET.put(`_proxy/tags/${R}/${tag}`, "", { customMetadata: { checkedAt: String(T0), digest: "x" } });
    await pullOn(R, "a", T0 + 20 * DAY);
    await pullOn(R, "c", T0 + 5 * DAY);
    await pullOn(R, "multi", T0 + 20 * DAY); // the index; its child never by itself

    // Day 31: b (stored day 0, never pulled) goes with its tag; the rest stays — the child d too,
    // its index still references it.
    const dry = await runGc({ dryRun: true, clock: T0 + 31 * DAY });
    expect(planOf(dry, R)).toEqual([`${b.digest} unpulled`, "b unpulled"].sort());
    const real = await runGc({ clock: T0 + 31 * DAY });
    expect(planOf(real, R)).toEqual(planOf(dry, R));
    expect(await cached(R, "b")).toBe(false);
    expect(await E.BUCKET.head(`_proxy/tags/${R}/b`)).toBeNull(); // its upstream-check state went with it
    expect(await E.BUCKET.head(`_proxy/tags/${R}/a`)).not.toBeNull();
    expect(await cached(R, b.digest)).toBe(false);
    for (const ref of ["a", "c", "multi", d.digest]) expect(await cached(R, ref), ref).toBe(true);
    const evs = await eventsOf(`repository=${R}`, (e) => e.filter((x) => x.details?.run === real.id).length >= 2);
    const mine = evs.filter((e) => e.details?.run === real.id).map((e) => `${e.action} ${e.target.tag ?? e.target.digest} ${e.details?.why}`).sort();
    expect(mine).toEqual([`retention.manifest ${b.digest} unpulled`, "retention.tag b unpulled"].sort());

    // c was pulled on day 5 (it would go from day 36); a pull on day 30 resets its window.
    await pullOn(R, "c", T0 + 30 * DAY);
    const day40 = await runGc({ clock: T0 + 40 * DAY });
    expect(planOf(day40, R)).toEqual([]);
    for (const ref of ["a", "c", "multi", d.digest]) expect(await cached(R, ref), ref).toBe(true);

    // Day 52: a and the index (last pulled day 20) go, and the child with its index, in one run; c stays.
    const day52 = await runGc({ clock: T0 + 52 * DAY });
    expect(planOf(day52, R)).toEqual([`${a.digest} unpulled`, "a unpulled", `${index} unpulled`, "multi unpulled", `${d.digest} unpulled`].sort());
    for (const ref of ["a", "multi", d.digest]) expect(await cached(R, ref), ref).toBe(false);
    expect(await cached(R, "c")).toBe(true);
    // GC reclaims what only the dropped manifests held: a's layer is no longer a member here.
    expect(await trustStoreFor(E, R).blob(R, a.layers[0])).toBeNull();
    expect(await trustStoreFor(E, R).blob(R, c.layers[0])).not.toBeNull();
  });

  it("ordinary repositories are untouched unless a rule says so; a rule keeps its kept tags and overrides a namespace's default", async () => {
    const R = "plainret/app";
    const T0 = Date.now();
    const x = await makeImage(R, { seed: 21 });
    const y = await makeImage(R, { seed: 22 });
    expect((await putManifest(R, "x", x.manifest)).status).toBe(201);
    expect((await putManifest(R, "keep-y", y.manifest)).status).toBe(201);
    const quiet = await runGc({ clock: T0 + 400 * DAY });
    expect(planOf(quiet, R)).toEqual([]);
    expect(await status(R, "x")).toBe(200);

    const bad = await req("/admin/retention", json("PUT", { pattern: "plainret/**", unpulledDays: 0 }));
    expect(bad.status).toBe(400);
    const rule = { pattern: "plainret/**", keepTags: ["keep-*"], unpulledDays: 100 };
    expect((await req("/admin/retention", json("PUT", rule))).status).toBe(200);
    expect(planOf(await runGc({ dryRun: true, clock: T0 + 99 * DAY }), R)).toEqual([]);
    const run = await runGc({ clock: T0 + 102 * DAY });
    expect(planOf(run, R)).toEqual([`${x.digest} unpulled`, "x unpulled"].sort());
    expect(await status(R, "x")).toBe(404);
    expect(await status(R, "keep-y")).toBe(200);

    // A rule on a proxy namespace's repositories sets their window instead of the default 30.
    const P = "pxrule";
    const PR = `${P}/app`;
    const z = await makeImage(PR, { seed: 23 });
    expect((await putManifest(PR, "z", z.manifest)).status).toBe(201);
    await saveApiNamespaces(E, [...(await apiNamespaces(E)).filter((n) => n.prefix !== P), { prefix: P, upstream: "http://127.0.0.1:1", libraryPrefix: false, tagTtlSeconds: 300, timeoutSeconds: 1, unpulledDays: 30 }]);
    expect((await req("/admin/retention", json("PUT", { pattern: "pxrule/**", unpulledDays: 365 }))).status).toBe(200);
    expect(planOf(await runGc({ dryRun: true, clock: T0 + 60 * DAY }), PR)).toEqual([]);
    expect(planOf(await runGc({ dryRun: true, clock: T0 + 367 * DAY }), PR)).toEqual([`${z.digest} unpulled`, "z unpulled"].sort());
    // unpulledDays: null on the namespace (and no rule): kept forever.
    expect((await req("/admin/retention?pattern=pxrule/**", { method: "DELETE" })).status).toBe(204);
    await saveApiNamespaces(E, (await apiNamespaces(E)).map((n) => (n.prefix === P ? { ...n, unpulledDays: null } : n)));
    expect(planOf(await runGc({ dryRun: true, clock: T0 + 3000 * DAY }), PR)).toEqual([]);
  });
});
