// Real clients against the registry: images built with umoci, pushed and pulled with skopeo as
// OCI and as Docker v2s2, a two-platform OCI index pushed with --all, tags listed, manifests
// deleted. Everything is compared by digest and by bytes with what was built locally.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTarget, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients } from "./helpers/exec";
import { request, describe as show, sha256 } from "./helpers/http";
import { buildLayout, readBlob, refDescriptor, type Layout, type BuiltImage, OCI_MANIFEST, OCI_INDEX, DOCKER_V2S2 } from "./helpers/images";

const distribution = process.env.E2E_TARGET === "distribution";
let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let layout: Layout;
const clients = needClients("clients.e2e", ["skopeo", "umoci", ...(distribution ? ["docker-registry"] : [])]);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-clients-"));
  const [r, l] = await Promise.all([startTarget(), buildLayout(join(work, "layout"), work)]);
  reg = r;
  layout = l;
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

const digestOf = (b: Buffer | string) => `sha256:${sha256(b)}`;
const oci = (tag: string) => `oci:${layout.dir}:${tag}`;
const readText = (p: string) => readFileSync(p, "utf8").trim();
let n = 0;
const tmpFile = (name: string) => join(work, `${name}-${++n}`);

/** skopeo copy with --digestfile; returns the digest skopeo reports for the destination. */
async function copy(src: string, dest: string, extra: string[] = []): Promise<string> {
  const df = tmpFile("digest");
  await skopeo.run("copy", ["--digestfile", df, ...extra, src, dest]);
  return readText(df);
}

async function inspectRaw(ref: string): Promise<Buffer> {
  const r = await skopeo.run("inspect", ["--raw", ref]);
  return Buffer.from(r.stdout, "utf8");
}

/** The registry serves every blob of `img` from `repo`, byte-exact. */
async function expectBlobs(repo: string, img: BuiltImage, opts: { skipConfig?: boolean } = {}) {
  const descs = [...(opts.skipConfig ? [] : [img.manifest.config]), ...img.manifest.layers];
  for (const d of descs) {
    const r = await request(reg, "GET", `/v2/${repo}/blobs/${d.digest}`);
    expect(r.status, `GET blob ${d.digest}: ${show(r)}`).toBe(200);
    expect(r.size).toBe(d.size);
    expect(`sha256:${r.sha256}`).toBe(d.digest);
    expect(r.body.equals(readBlob(layout.dir, d.digest))).toBe(true);
  }
}

describe.skipIf(clients.skip)("skopeo with umoci-built images", () => {
  const amd = () => layout.images.amd64;
  const arm = () => layout.images.arm64;

  test("umoci built two single-platform images and an index", () => {
    expect(amd().manifest.layers.length).toBeGreaterThan(0);
    expect(JSON.parse(amd().configBytes.toString()).architecture).toBe("amd64");
    expect(JSON.parse(arm().configBytes.toString()).architecture).toBe("arm64");
    expect(amd().manifest.layers[0].digest).not.toBe(arm().manifest.layers[0].digest);
  });

  test("push an OCI image: the registry keeps the manifest bytes and digest", async () => {
    const pushed = await copy(oci("amd64"), skopeo.ref("e2e/busybox:amd64"), ["--preserve-digests"]);
    expect(pushed).toBe(amd().manifestDigest);
    const raw = await inspectRaw(skopeo.ref("e2e/busybox:amd64"));
    expect(digestOf(raw)).toBe(amd().manifestDigest);
    expect(raw.equals(amd().manifestBytes)).toBe(true);

    for (const ref of ["amd64", amd().manifestDigest]) {
      for (const method of ["GET", "HEAD"]) {
        const r = await request(reg, method, `/v2/e2e/busybox/manifests/${ref}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
        expect(r.status, `${method} manifest ${ref}: ${show(r)}`).toBe(200);
        expect(r.headers["docker-content-digest"]).toBe(amd().manifestDigest);
        expect(r.headers["content-type"]).toBe(OCI_MANIFEST);
        expect(Number(r.headers["content-length"])).toBe(amd().manifestBytes.length);
        if (method === "GET") expect(r.body.equals(amd().manifestBytes)).toBe(true);
      }
    }
    await expectBlobs("e2e/busybox", amd());
  });

  test("skopeo inspect reads the image config through the registry", async () => {
    const r = await skopeo.run("inspect", [skopeo.ref("e2e/busybox:amd64")]);
    const info = JSON.parse(r.stdout);
    expect(info.Digest).toBe(amd().manifestDigest);
    expect(info.Architecture).toBe("amd64");
    expect(info.Os).toBe("linux");
    expect(info.Labels).toMatchObject({ "org.opencontainers.image.title": "cloister-e2e", "dev.cloister.e2e.arch": "amd64" });
    expect(info.Env).toContain("E2E_ARCH=amd64");
    expect(info.Layers).toEqual(amd().manifest.layers.map((l) => l.digest));
    expect(info.RepoTags).toContain("amd64");
  });

  test("list-tags after more pushes and a registry-to-registry copy", async () => {
    expect(await copy(oci("arm64"), skopeo.ref("e2e/busybox:arm64"), ["--preserve-digests"])).toBe(arm().manifestDigest);
    // docker:// → docker://: blobs already in the repository, only a new tag.
    expect(await copy(skopeo.ref("e2e/busybox:amd64"), skopeo.ref("e2e/busybox:latest"), ["--preserve-digests"])).toBe(amd().manifestDigest);
    // Into another repository of the same registry: every blob must become servable there.
    expect(await copy(skopeo.ref("e2e/busybox:arm64"), skopeo.ref("e2e/other/busybox:v1.0.0"), ["--preserve-digests"])).toBe(arm().manifestDigest);
    await expectBlobs("e2e/other/busybox", arm());

    const tags = JSON.parse((await skopeo.run("list-tags", [skopeo.ref("e2e/busybox")])).stdout);
    expect(tags.Repository).toBe(`${reg.host}/e2e/busybox`);
    expect([...tags.Tags].sort()).toEqual(["amd64", "arm64", "latest"]);
    const other = JSON.parse((await skopeo.run("list-tags", [skopeo.ref("e2e/other/busybox")])).stdout);
    expect(other.Tags).toEqual(["v1.0.0"]);

    const r = await request(reg, "GET", "/v2/e2e/busybox/tags/list");
    expect(r.status, show(r)).toBe(200);
    expect(r.json().name).toBe("e2e/busybox");
    if (distribution) {
      // distribution 2.8 lists tags in storage order and paginates differently.
      expect([...r.json().tags].sort()).toEqual(["amd64", "arm64", "latest"]);
      return;
    }
    expect(r.json().tags).toEqual(["amd64", "arm64", "latest"]); // lexical order (spec)
    const page = await request(reg, "GET", "/v2/e2e/busybox/tags/list?n=2");
    expect(page.status, show(page)).toBe(200);
    expect(page.json().tags).toEqual(["amd64", "arm64"]);
    expect(page.headers.link, show(page)).toMatch(/<[^>]*\/v2\/e2e\/busybox\/tags\/list\?[^>]*last=arm64[^>]*>;\s*rel="next"/);
    const next = await request(reg, "GET", "/v2/e2e/busybox/tags/list?n=2&last=arm64");
    expect(next.status, show(next)).toBe(200);
    expect(next.json().tags).toEqual(["latest"]);
  });

  test("pull back to oci: and dir: gives the original manifest, config and layers", async () => {
    const out = join(work, "pulled-oci");
    expect(await copy(skopeo.ref("e2e/busybox:amd64"), `oci:${out}:pulled`, ["--preserve-digests"])).toBe(amd().manifestDigest);
    const d = refDescriptor(out, "pulled");
    expect(d.digest).toBe(amd().manifestDigest);
    expect(readBlob(out, d.digest).equals(amd().manifestBytes)).toBe(true);
    for (const b of [amd().manifest.config, ...amd().manifest.layers]) expect(readBlob(out, b.digest).equals(readBlob(layout.dir, b.digest))).toBe(true);

    const dir = join(work, "pulled-dir");
    await copy(skopeo.ref(`e2e/busybox@${arm().manifestDigest}`), `dir:${dir}`, ["--preserve-digests"]);
    const manifest = readFileSync(join(dir, "manifest.json"));
    expect(digestOf(manifest)).toBe(arm().manifestDigest);
    for (const b of [arm().manifest.config, ...arm().manifest.layers]) {
      const bytes = readFileSync(join(dir, b.digest.slice("sha256:".length)));
      expect(digestOf(bytes)).toBe(b.digest);
      expect(bytes.length).toBe(b.size);
    }
  });

  test("push as Docker v2s2: digest, media type and layers round-trip", async () => {
    const pushed = await copy(oci("amd64"), skopeo.ref("e2e/busybox-v2s2:v1"), ["--format", "v2s2"]);
    const raw = await inspectRaw(skopeo.ref("e2e/busybox-v2s2:v1"));
    expect(digestOf(raw)).toBe(pushed);
    const m = JSON.parse(raw.toString());
    expect(m.mediaType).toBe(DOCKER_V2S2);
    expect(m.layers.map((l: any) => l.digest)).toEqual(amd().manifest.layers.map((l) => l.digest));

    const get = await request(reg, "GET", "/v2/e2e/busybox-v2s2/manifests/v1", { headers: { Accept: `${DOCKER_V2S2}, ${OCI_MANIFEST}` } });
    expect(get.status, show(get)).toBe(200);
    expect(get.headers["content-type"]).toBe(DOCKER_V2S2);
    expect(get.headers["docker-content-digest"]).toBe(pushed);
    expect(get.body.equals(raw)).toBe(true);
    await expectBlobs("e2e/busybox-v2s2", amd(), { skipConfig: true });
    const cfg = await request(reg, "GET", `/v2/e2e/busybox-v2s2/blobs/${m.config.digest}`);
    expect(cfg.status, show(cfg)).toBe(200);
    expect(`sha256:${cfg.sha256}`).toBe(m.config.digest);
    expect(JSON.parse(cfg.text()).architecture).toBe("amd64");

    const dir = join(work, "pulled-v2s2");
    expect(await copy(skopeo.ref("e2e/busybox-v2s2:v1"), `dir:${dir}`, ["--preserve-digests"])).toBe(pushed);
    expect(readFileSync(join(dir, "manifest.json")).equals(raw)).toBe(true);
    for (const l of amd().manifest.layers) expect(digestOf(readFileSync(join(dir, l.digest.slice(7))))).toBe(l.digest);
  });

  test("push a two-platform OCI index with --all and pull it back", async () => {
    const pushed = await copy(oci("multi"), skopeo.ref("e2e/multi:v1"), ["--all", "--preserve-digests"]);
    expect(pushed).toBe(layout.index.digest);
    const raw = await inspectRaw(skopeo.ref("e2e/multi:v1"));
    expect(raw.equals(layout.index.bytes)).toBe(true);

    const get = await request(reg, "GET", "/v2/e2e/multi/manifests/v1", { headers: { Accept: `${OCI_INDEX}, ${OCI_MANIFEST}` } });
    expect(get.status, show(get)).toBe(200);
    expect(get.headers["content-type"]).toBe(OCI_INDEX);
    expect(get.headers["docker-content-digest"]).toBe(layout.index.digest);

    for (const img of [amd(), arm()]) {
      const child = await inspectRaw(skopeo.ref(`e2e/multi@${img.manifestDigest}`));
      expect(child.equals(img.manifestBytes)).toBe(true);
      await expectBlobs("e2e/multi", img);
      const info = JSON.parse((await skopeo.run("inspect", ["--override-arch", img.arch, "--override-os", "linux", "--no-tags", skopeo.ref("e2e/multi:v1")])).stdout);
      // Digest is the index's; the rest describes the platform's image.
      expect(info.Digest).toBe(layout.index.digest);
      expect(info.Architecture).toBe(img.arch);
      expect(info.Layers).toEqual(img.manifest.layers.map((l) => l.digest));
    }

    const out = join(work, "pulled-multi");
    expect(await copy(skopeo.ref("e2e/multi:v1"), `oci:${out}:multi`, ["--all", "--preserve-digests"])).toBe(layout.index.digest);
    expect(refDescriptor(out, "multi").digest).toBe(layout.index.digest);
    expect(readBlob(out, layout.index.digest).equals(layout.index.bytes)).toBe(true);
    for (const img of [amd(), arm()]) {
      expect(readBlob(out, img.manifestDigest).equals(img.manifestBytes)).toBe(true);
      for (const b of [img.manifest.config, ...img.manifest.layers]) expect(digestOf(readBlob(out, b.digest))).toBe(b.digest);
    }
    expect(readdirSync(join(out, "blobs/sha256")).length).toBeGreaterThanOrEqual(7);
  });

  test("skopeo delete by tag and by digest removes the manifest and its tags", async () => {
    await copy(oci("amd64"), skopeo.ref("e2e/delete:a"), ["--preserve-digests"]);
    await copy(oci("arm64"), skopeo.ref("e2e/delete:b"), ["--preserve-digests"]);
    await copy(oci("arm64"), skopeo.ref("e2e/delete:c"), ["--preserve-digests"]);

    // skopeo resolves the tag and deletes the manifest it points to.
    await skopeo.run("delete", [skopeo.ref("e2e/delete:a")]);
    for (const ref of ["a", amd().manifestDigest]) {
      const r = await request(reg, "GET", `/v2/e2e/delete/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      expect(r.status, `GET deleted manifest ${ref}: ${show(r)}`).toBe(404);
      expect(r.json().errors?.[0]?.code).toBe("MANIFEST_UNKNOWN");
    }
    const failed = await skopeo.run("inspect", ["--raw", skopeo.ref("e2e/delete:a")], { allowFail: true });
    expect(failed.code).not.toBe(0);
    expect(JSON.parse((await skopeo.run("list-tags", [skopeo.ref("e2e/delete")])).stdout).Tags.sort()).toEqual(["b", "c"]);

    await skopeo.run("delete", [skopeo.ref(`e2e/delete@${arm().manifestDigest}`)]);
    for (const ref of ["b", "c", arm().manifestDigest]) {
      const r = await request(reg, "HEAD", `/v2/e2e/delete/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      expect(r.status, `HEAD deleted manifest ${ref}: ${show(r)}`).toBe(404);
    }
    const tags = await request(reg, "GET", "/v2/e2e/delete/tags/list");
    if (tags.status === 200) expect(tags.json().tags ?? []).toEqual([]);
    else expect(tags.status, show(tags)).toBe(404);

    // Other repositories holding the same manifests are untouched.
    const still = await inspectRaw(skopeo.ref("e2e/busybox:amd64"));
    expect(still.equals(amd().manifestBytes)).toBe(true);
    expect((await inspectRaw(skopeo.ref("e2e/busybox:arm64"))).equals(arm().manifestBytes)).toBe(true);
  });
});
