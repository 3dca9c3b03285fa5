// Snapshot export of a registry filled by pushes (docs/adr/0016): paging through every table,
// and restore refused because the registry is not empty.
import { describe, expect, test } from "vitest";
import { expectError, makeImage, putManifest, req } from "./helpers";

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

describe("snapshot export", () => {
  test("pages of one row walk every repository, table and blob", async () => {
    const images = [];
    for (const [repo, tag, seed] of [["team/a", "1", 1], ["team/a", "2", 2], ["team/b", "x", 3]] as const) {
      const img = await makeImage(repo, { seed, layers: 2 });
      expect((await putManifest(repo, tag, img.manifest)).status).toBe(201);
      images.push(img);
    }
    const names: string[] = [];
    let last = "";
    for (;;) {
      const p = (await (await req(`/admin/snapshot/repositories?n=1&last=${encodeURIComponent(last)}`)).json()) as { items: string[]; next: string | null };
      names.push(...p.items);
      if (!p.next) break;
      last = p.next;
    }
    expect(names).toEqual(["team/a", "team/b"]);
    // Walk team/a's rows with the cursor; every part is a known table, tags and members all come back.
    const seen: Record<string, Record<string, unknown>[]> = {};
    let cursor: unknown = null;
    let pages = 0;
    do {
      const q = cursor ? `?cursor=${encodeURIComponent(JSON.stringify(cursor))}` : "";
      const p = (await (await req(`/admin/snapshot/repositories/team/a${q}`)).json()) as { parts: { table: string; rows: Record<string, unknown>[] }[]; next: unknown };
      for (const part of p.parts) (seen[part.table] ??= []).push(...part.rows);
      cursor = p.next;
      pages++;
    } while (cursor && pages < 100);
    expect(Object.keys(seen).sort()).toEqual(["members", "refs", "repos", "tags"]);
    expect(seen.tags.map((t) => [t.tag, t.digest])).toEqual([["1", images[0].digest], ["2", images[1].digest]]);
    expect(seen.members.filter((m) => m.kind === "manifest").map((m) => m.digest).sort()).toEqual([images[0].digest, images[1].digest].sort());
    expect(seen.members.filter((m) => m.kind === "blob").length).toBe(6);
    for (const r of seen.members) expect(Object.keys(r).sort()).toEqual(["created_at", "digest", "kind", "media_type", "r2_key", "refs_indexed", "size"]);
    const blobs: string[] = [];
    let after = "";
    for (;;) {
      const p = (await (await req(`/admin/snapshot/blobs?n=2&after=${encodeURIComponent(after)}`)).json()) as { items: { digest: string; r2Key: string }[]; next: string | null };
      blobs.push(...p.items.map((b) => b.digest));
      if (!p.next) break;
      after = p.next;
    }
    expect(new Set(blobs).size).toBe(blobs.length);
    expect(blobs.length).toBe(3 * 3 + 3); // configs + layers (seeded apart), and the manifests
  });

  test("restore refuses a registry that is not empty, and writes nothing", async () => {
    expect(await expectError(req("/admin/restore", json({})), 409, "CONFLICT")).toMatch(/only into an empty registry.*lists repositories/);
    expect(await (await req("/admin/restore")).json()).toEqual({ restore: null });
  });
});
