// Randomized, bounded stress (docs/adr/0011): pushes, re-pushes, manifest and blob deletes,
// mounts and dedupe hits run concurrently with back-to-back GC runs at grace 0 for a fixed
// time. No request may fail with a 5xx, and afterwards every tag must pull digest-verified,
// manifest and blobs. The seed is printed so a failure reproduces.
import { describe, expect, it } from "vitest";
import { bytes, putManifest, req, sha256 } from "./helpers";
import { finishGc, gc, manifestPulls, pullsVerified, startGc } from "./gc-helpers";

const DURATION_MS = 12_000;
const REPOS = ["st/a", "st/b", "st/c"];
const TAGS = ["t0", "t1", "t2", "t3"];
const POOL = 6; // layer contents shared by every repository: dedupe hits and re-pushes

describe("GC stress", () => {
  it("concurrent pushes, deletes, mounts and GC leave every tag pulling digest-verified", async () => {
    const seed = (Date.now() % 100000) + 1;
    console.log(`gc stress seed ${seed}`);
    let x = seed;
    const rand = (n: number) => {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      return x % n;
    };
    const bad: string[] = [];
    const counts: Record<string, number> = {};
    const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
    const check = async (what: string, res: Response) => {
      if (res.status >= 500) bad.push(`${what}: ${res.status} ${await res.text()}`);
      else await res.body?.cancel();
      count(`${what} ${res.status}`);
      return res.status;
    };
    const layer = (i: number) => bytes(3000 + i, 1000 + i);
    const config = (i: number) => new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", layer: i }));
    const push = async (repo: string, data: Uint8Array) => {
      const d = await sha256(data);
      await check("blob push", await req(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data }));
      return d;
    };
    const manifestFor = async (i: number) => new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", annotations: { v: String(rand(8)) },
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await sha256(config(i)), size: config(i).length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: await sha256(layer(i)), size: layer(i).length }],
    }));
    const end = Date.now() + DURATION_MS;

    const pusher = async () => {
      while (Date.now() < end) {
        const repo = REPOS[rand(REPOS.length)];
        const i = rand(POOL);
        for (let attempt = 0; attempt < 3; attempt++) {
          await push(repo, config(i));
          await push(repo, layer(i));
          const s = await check("manifest put", await putManifest(repo, TAGS[rand(TAGS.length)], await manifestFor(i)));
          if (s === 201) break; // 400 MANIFEST_BLOB_UNKNOWN: GC took the layers meanwhile; push again
        }
        // a loose blob from a small pool: unreferenced, so collected and pushed again and again
        const loose = bytes(1500, 5000 + rand(10));
        const d = await push(repo, loose);
        const got = await req(`/v2/${repo}/blobs/${d}`);
        if (got.status === 200) {
          if ((await sha256(new Uint8Array(await got.arrayBuffer()))) !== d) bad.push(`loose ${d} in ${repo}: wrong bytes`);
        } else await check("loose blob get", got);
      }
    };
    const deleter = async () => {
      while (Date.now() < end) {
        const repo = REPOS[rand(REPOS.length)];
        if (rand(2) === 0) {
          const head = await req(`/v2/${repo}/manifests/${TAGS[rand(TAGS.length)]}`, { method: "HEAD" });
          await check("manifest head", head);
          const d = head.headers.get("Docker-Content-Digest");
          if (head.status === 200 && d) await check("manifest delete", await req(`/v2/${repo}/manifests/${d}`, { method: "DELETE" }));
        } else {
          // only loose blobs: deleting a layer a tag still references breaks that tag by the
          // client's own hand, which would hide what this test looks for (GC losing bytes)
          const d = await sha256(bytes(1500, 5000 + rand(10)));
          await check("blob delete", await req(`/v2/${repo}/blobs/${d}`, { method: "DELETE" }));
        }
        await new Promise((ok) => setTimeout(ok, 5));
      }
    };
    const mounter = async () => {
      while (Date.now() < end) {
        const [from, to] = [REPOS[rand(REPOS.length)], REPOS[rand(REPOS.length)]];
        const d = await sha256(layer(rand(POOL)));
        const s = await check("mount", await req(`/v2/${to}/blobs/uploads/?mount=${d}&from=${from}`, { method: "POST" }));
        if (s === 201) {
          // readable right away, unless GC (grace 0) or the deleter took it since: 404, never 5xx or wrong bytes
          const got = await req(`/v2/${to}/blobs/${d}`);
          if (got.status === 200) {
            if ((await sha256(new Uint8Array(await got.arrayBuffer()))) !== d) bad.push(`mounted ${d} into ${to}: wrong bytes`);
          } else await check("mounted blob get", got);
        }
      }
    };
    let runs = 0;
    let condemned = 0;
    const collector = async () => {
      while (Date.now() < end) {
        await startGc();
        const r = await finishGc();
        runs++;
        condemned += r.stats.condemned;
        if (r.stats.errors.length) bad.push(`gc errors: ${r.stats.errors.join("; ")}`);
      }
    };
    await Promise.all([pusher(), pusher(), pusher(), deleter(), mounter(), collector()]);
    // settle: two more complete runs, then every tag must pull, digest-verified, with its blobs
    await startGc();
    await finishGc();
    await startGc();
    await finishGc();
    expect((await gc().status()).state).toBe("idle");
    let tags = 0;
    for (const repo of REPOS) {
      const res = await req(`/v2/${repo}/tags/list`);
      if (res.status === 404) continue;
      for (const tag of ((await res.json()) as { tags: string[] }).tags) {
        const d = await manifestPulls(repo, tag);
        if (!d) {
          bad.push(`${repo}:${tag} does not pull`);
          continue;
        }
        const m = JSON.parse(new TextDecoder().decode(new Uint8Array(await (await req(`/v2/${repo}/manifests/${d}`)).arrayBuffer()))) as { config: { digest: string }; layers: { digest: string }[] };
        for (const b of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
          if (!(await pullsVerified(repo, b))) bad.push(`${repo}:${tag} blob ${b} does not pull`);
        }
        tags++;
      }
    }
    console.log(`gc stress: ${runs} GC runs condemned ${condemned}; ${tags} tags verified`, JSON.stringify(counts));
    expect(bad).toEqual([]);
    expect(runs).toBeGreaterThan(1);
    expect(condemned).toBeGreaterThan(0);
    expect(counts["manifest put 201"] ?? 0).toBeGreaterThan(10);
    expect(tags).toBeGreaterThan(0);
  });
});
