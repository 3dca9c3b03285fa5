// copy: walk the source image (an index's every platform, or one manifest), move every blob
// (in parallel, bounded by --jobs), then the child manifests by digest, then the root by tag —
// so a tag never points at something incomplete. Manifest bytes are never re-serialized.
import { RegistryError, EXIT } from "../../lib/registry-client.mjs";
import { isIndex, mediaTypeOf, sha256 } from "./sources.mjs";
import { short } from "./upload.mjs";

/** Run `worker(item)` over items with at most `n` in flight; the first failure stops new work. */
export async function pool(items, n, worker) {
  let next = 0;
  let failed = null;
  const run = async () => {
    while (failed === null && next < items.length) {
      const i = next++;
      try {
        await worker(items[i], i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
  if (failed) throw failed;
}

const NODE_ARCH = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", ia32: "386" };

/** "os/arch[/variant]" → a matcher for index entries. */
export function platformMatcher(text) {
  const [os, arch, variant] = (text ?? `linux/${NODE_ARCH[process.arch] ?? process.arch}`).split("/");
  return (p) => !!p && p.os === os && p.architecture === arch && (!variant || p.variant === variant);
}

/**
 * @param src a source (sources.mjs)   @param dst a destination (upload.mjs, destinations.mjs)
 * @param {{jobs: number, progress: ReturnType<import("./progress.mjs").createProgress>, reference: string|null, platform?: string}} o
 */
export async function copyImage(src, dst, o) {
  let root = await src.root();
  if (dst.singleImage && isIndex(root.mediaType)) {
    // A docker archive holds one image: pick the platform from the index.
    const idx = JSON.parse(root.bytes.toString("utf8"));
    const match = platformMatcher(o.platform);
    const d = idx.manifests.find((m) => match(m.platform));
    if (!d) throw new RegistryError(`${src.name} has no image for ${o.platform ?? "this platform"}; pass --platform OS/ARCH (it has ${idx.manifests.map((m) => m.platform && `${m.platform.os}/${m.platform.architecture}`).filter(Boolean).join(", ")})`, { exitCode: EXIT.NOT_FOUND });
    const bytes = await src.manifest(d);
    root = { mediaType: mediaTypeOf(bytes, d.mediaType), bytes, digest: d.digest };
  }

  const children = []; // manifests below the root, deepest first
  const blobs = new Map();
  const seen = new Set();
  const walk = async (bytes, mediaType, depth) => {
    if (depth > 4) throw new RegistryError("indexes nested more than 4 deep");
    const m = JSON.parse(bytes.toString("utf8"));
    if (isIndex(mediaType)) {
      for (const d of m.manifests ?? []) {
        if (seen.has(d.digest)) continue;
        seen.add(d.digest);
        const b = await src.manifest(d);
        const mt = mediaTypeOf(b, d.mediaType);
        await walk(b, mt, depth + 1);
        children.push({ digest: d.digest, mediaType: mt, bytes: b });
      }
      return;
    }
    if (m.schemaVersion !== 2 || !m.config) throw new RegistryError(`unsupported manifest (${mediaType}); schema 2 image manifests and indexes are supported`);
    for (const d of [m.config, ...(m.layers ?? [])]) if (!blobs.has(d.digest)) blobs.set(d.digest, { digest: d.digest, size: d.size, mediaType: d.mediaType });
  };
  await walk(root.bytes, root.mediaType, 0);

  const list = [...blobs.values()];
  o.progress.setTotal(list.reduce((s, d) => s + d.size, 0));
  await pool(list, o.jobs, async (d) => {
    const bar = o.progress.blob(short(d.digest), d.size);
    const status = await dst.putBlob(d, await src.blob(d), bar);
    bar.finish(status);
  });

  const put = async (reference, m, isRoot) => {
    const got = await dst.putManifest(reference, m.mediaType, m.bytes, { root: isRoot, digest: m.digest });
    if (got && got.startsWith("sha256:") && got !== sha256(m.bytes))
      throw new RegistryError(`the destination stored manifest ${reference} as ${got}, not ${sha256(m.bytes)}: its bytes were changed`);
  };
  for (const c of children) await put(c.digest, c, false);
  const reference = o.reference ?? src.tag ?? root.digest;
  if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/.test(reference) && reference !== root.digest)
    throw new RegistryError(`destination digest ${reference} is not the image's digest ${root.digest}`, { exitCode: EXIT.USAGE });
  await put(reference, root, true);
  return {
    digest: root.digest,
    mediaType: root.mediaType,
    reference,
    manifests: children.length + 1,
    blobs: list.length,
    bytes: list.reduce((s, d) => s + d.size, 0),
  };
}
