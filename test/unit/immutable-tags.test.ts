// Immutable tags through the real manifest routes (PUT and DELETE /v2/<name>/manifests/<ref>)
// in-process, under an immutable-tags policy rule stored through the admin API. The test pool runs
// in open mode (.dev.vars) without ADMIN_PASSWORD, so the admin API is open; the rule applies in
// every mode (docs/auth.md "Immutable tags").
import { describe, expect, it } from "vitest";
import { expectError, makeImage, putManifest, req } from "./helpers";

async function addRule(rule: Record<string, unknown>) {
  const r = await req("/admin/policies", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) });
  expect(r.status, await r.clone().text()).toBe(201);
}

async function digestOf(repo: string, ref: string): Promise<string | null> {
  const r = await req(`/v2/${repo}/manifests/${ref}`, { method: "HEAD" });
  return r.status === 200 ? r.headers.get("Docker-Content-Digest") : null;
}

describe("immutable tags on the real manifest routes", () => {
  it("refuse moving and deleting a covered tag, and deleting its manifest by digest", async () => {
    await addRule({ id: "frozen-releases", kind: "immutable-tags", repositories: ["immut/**"], tags: ["v*"] });
    const repo = "immut/app";
    const one = await makeImage(repo, { seed: 31 });
    const two = await makeImage(repo, { seed: 32 });

    expect((await putManifest(repo, "v1", one.manifest)).status).toBe(201);
    expect((await putManifest(repo, "v1", one.manifest)).status).toBe(201); // same digest again: allowed

    // Moving v1 to another manifest.
    const moved = await expectError(putManifest(repo, "v1", two.manifest), 403, "DENIED");
    expect(moved).toMatch(/tag "v1" in immut\/app is immutable \(policy rule frozen-releases\)/);
    expect(await digestOf(repo, "v1")).toBe(one.digest);

    // Tags the rule does not cover move freely.
    expect((await putManifest(repo, "latest", two.manifest)).status).toBe(201);
    expect((await putManifest(repo, "latest", one.manifest)).status).toBe(201);
    expect(await digestOf(repo, "latest")).toBe(one.digest);

    // Deleting the tag, or its manifest by digest (which would drop the tag with it).
    const delTag = await expectError(req(`/v2/${repo}/manifests/v1`, { method: "DELETE" }), 403, "DENIED");
    expect(delTag).toMatch(/cannot be deleted/);
    const delDigest = await expectError(req(`/v2/${repo}/manifests/${one.digest}`, { method: "DELETE" }), 403, "DENIED");
    expect(delDigest).toMatch(/tagged "v1" in immut\/app, an immutable tag \(policy rule frozen-releases\)/);
    expect(await digestOf(repo, "v1")).toBe(one.digest);
    expect(await digestOf(repo, one.digest)).toBe(one.digest);

    // An untagged manifest and an uncovered tag can still be deleted.
    expect((await req(`/v2/${repo}/manifests/${two.digest}`, { method: "DELETE" })).status).toBe(202);
    expect((await req(`/v2/${repo}/manifests/latest`, { method: "DELETE" })).status).toBe(202);
  });

  it("leave repositories the rule does not cover alone", async () => {
    const repo = "mutable/app";
    const one = await makeImage(repo, { seed: 41 });
    const two = await makeImage(repo, { seed: 42 });
    expect((await putManifest(repo, "v1", one.manifest)).status).toBe(201);
    expect((await putManifest(repo, "v1", two.manifest)).status).toBe(201);
    expect(await digestOf(repo, "v1")).toBe(two.digest);
    expect((await req(`/v2/${repo}/manifests/v1`, { method: "DELETE" })).status).toBe(202);
  });
});
