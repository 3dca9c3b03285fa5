// Never lose a racing push (docs/adr/0011): one deterministic interleaving per race. GC runs
// manually with grace 0 and is paused between its steps (stepUntil) while a push, mount, dedupe
// hit or manifest PUT lands; afterwards the content must pull digest-verified, or the client
// must have been told to upload again — never a membership pointing at deleted bytes.
import { describe, expect, it } from "vitest";
import { blake3 } from "@noble/hashes/blake3.js";
import { bytes, expectError, makeImage, pushBlob, putManifest, req, sha256 } from "./helpers";
import { E, finishGc, keyOf, manifestPulls, pullsVerified, r2Has, startGc, stepUntil } from "./gc-helpers";
import { blobStoreFor } from "../../src/stores";
import { finishCommit } from "../../src/storage/handoff";

const uid = () => "gr" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const del = (path: string) => req(path, { method: "DELETE" });

/** A blob pushed into `repo`, then deleted there: GC will condemn it. */
async function deletedBlob(repo: string, data: Uint8Array) {
  const d = await pushBlob(repo, data);
  const key = (await keyOf(d))!;
  expect((await del(`/v2/${repo}/blobs/${d}`)).status).toBe(202);
  return { d, key };
}

describe("GC against racing pushes", () => {
  it("a blob re-pushed after condemnation, before GC deletes its object, is resurrected with the new bytes", async () => {
    const r = uid();
    const data = bytes(4000, 1);
    const { d, key } = await deletedBlob(r, data);
    await startGc();
    await stepUntil("delete"); // condemned; R2 delete is next
    expect(await keyOf(d)).toBeNull(); // condemned rows are not handed out
    expect(await pushBlob(r, data)).toBe(d);
    const run = await finishGc();
    expect(run.stats.objectsDeleted).toBeGreaterThanOrEqual(1);
    expect(await r2Has(key)).toBe(false); // the old object went…
    expect(await pullsVerified(r, d)).toBe(true); // …the digest lives on the re-pushed one
    expect(await keyOf(d)).not.toBe(key);
  });

  it("a blob re-pushed after GC deleted the object but before it purged the rows survives the purge", async () => {
    const r = uid();
    const data = bytes(4100, 2);
    const { d } = await deletedBlob(r, data);
    await startGc();
    await stepUntil("purge"); // object deleted, rows still condemned
    expect(await pushBlob(r, data)).toBe(d);
    await finishGc();
    expect(await pullsVerified(r, d)).toBe(true);
  });

  it("a manifest re-pushed while GC deletes it never shares the object being deleted (unique keys)", async () => {
    for (const pause of ["delete", "purge"] as const) {
      const r = uid();
      const seed = pause === "delete" ? 3 : 13; // distinct content per round
      const img = await makeImage(r, { seed });
      expect((await putManifest(r, "v1", img.manifest)).status).toBe(201);
      // a second manifest keeps the layers referenced; the first one is deleted and condemned
      const other = await makeImage(r, { seed, extra: { annotations: { keep: "1" } } });
      expect((await putManifest(r, "keep", other.manifest)).status).toBe(201);
      expect((await del(`/v2/${r}/manifests/${img.digest}`)).status).toBe(202);
      await startGc();
      await stepUntil(pause);
      expect(await keyOf(img.digest)).toBeNull(); // condemned
      expect((await putManifest(r, "v1", img.manifest)).status).toBe(201);
      await finishGc();
      expect(await manifestPulls(r, "v1", img.digest)).toBe(img.digest);
      expect(await manifestPulls(r, img.digest, img.digest)).toBe(img.digest);
    }
  });

  it("a push whose BlobStore step came before GC's selection and whose link comes after the condemnation is fenced, then resurrects", async () => {
    const r = uid();
    const data = bytes(4200, 4);
    const d = await pushBlob(r, data);
    // a second push of the same digest, paused after BlobStore recorded its holder…
    const offered = { digest: d, size: data.length, r2Key: `data/${crypto.randomUUID()}/blob`, contentSha256: d.slice(7) };
    await E.BUCKET.put(offered.r2Key, data);
    const committed = await blobStoreFor(E, d).commit(offered, r);
    expect(committed.adoptedOffered).toBe(false); // deduped onto the first push's object
    // …while a DELETE in the same repository releases the holder
    expect((await del(`/v2/${r}/blobs/${d}`)).status).toBe(202);
    await startGc();
    await stepUntil("delete"); // selected, fenced in r, condemned
    // the paused push links now: the fence refuses the stale link, the retry resurrects
    const final = await finishCommit(E, r, offered, committed);
    expect(final.r2Key).toBe(offered.r2Key);
    await finishGc();
    expect(await pullsVerified(r, d)).toBe(true);
  });

  it("a mount of a condemned digest is refused (the client uploads instead), and a mount before condemnation keeps the bytes", async () => {
    const [a, b, c] = [uid(), uid(), uid()];
    const data = bytes(4300, 5);
    const d = await pushBlob(a, data);
    await pushBlob(b, data);
    expect((await del(`/v2/${a}/blobs/${d}`)).status).toBe(202);
    expect((await del(`/v2/${b}/blobs/${d}`)).status).toBe(202);
    await startGc();
    await stepUntil("delete");
    // no holder is left to mount from, and the condemned row is not held: 202, upload session
    const m = await req(`/v2/${c}/blobs/uploads/?mount=${d}`, { method: "POST" });
    expect(m.status).toBe(202);
    await finishGc();
    expect((await req(`/v2/${c}/blobs/${d}`, { method: "HEAD" })).status).toBe(404);

    // a mount that lands between phase 1 and condemnation re-holds the digest: nothing is condemned
    const data2 = bytes(4301, 6);
    const d2 = await pushBlob(a, data2);
    await startGc();
    await stepUntil("condemn"); // phase 1 dropped a's unreferenced membership
    await pushBlob(b, data2); // re-linked elsewhere before the selection
    expect((await req(`/v2/${c}/blobs/uploads/?mount=${d2}&from=${b}`, { method: "POST" })).status).toBe(201);
    await finishGc();
    expect(await pullsVerified(c, d2)).toBe(true);
    expect(await pullsVerified(b, d2)).toBe(true);
  });

  it("a dedupe hit never lands on a condemned object: same bytes under another digest get their own object", async () => {
    const r = uid();
    const data = bytes(4400, 7);
    const { d, key } = await deletedBlob(r, data);
    await startGc();
    await stepUntil("delete");
    const native = "blake3:" + hex(blake3(data));
    const res = await req(`/v2/${r}/blobs/uploads/?digest=${native}`, { method: "POST", body: data });
    expect(res.status).toBe(201);
    expect(await keyOf(native)).not.toBe(key);
    await finishGc();
    const got = await req(`/v2/${r}/blobs/${native}`);
    expect(got.status).toBe(200);
    expect("blake3:" + hex(blake3(new Uint8Array(await got.arrayBuffer())))).toBe(native);
    expect(await keyOf(d)).toBeNull();
  });

  it("a manifest PUT after phase 1 dropped its layers is refused (push them again), never stored over missing blobs", async () => {
    const r = uid();
    const img = await makeImage(r, { seed: 8 });
    await startGc();
    await stepUntil("condemn"); // the unreferenced config and layer memberships are dropped
    await expectError(putManifest(r, "v1", img.manifest), 400, "MANIFEST_BLOB_UNKNOWN");
    await finishGc();
    const again = await makeImage(r, { seed: 8 });
    expect((await putManifest(r, "v1", again.manifest)).status).toBe(201);
    expect(await manifestPulls(r, "v1", img.digest)).toBe(img.digest);
    for (const x of [img.config, ...img.layers]) expect(await pullsVerified(r, x)).toBe(true);
  });

  it("a push that lands between phase 1 and condemnation keeps its blob", async () => {
    const r = uid();
    const data = bytes(4500, 9);
    const d = await pushBlob(r, data);
    await startGc();
    await stepUntil("condemn"); // membership dropped, holder released
    expect(await pushBlob(r, data)).toBe(d);
    const run = await finishGc();
    expect(await pullsVerified(r, d)).toBe(true);
    expect(await sha256(data)).toBe(d);
    expect(run.stats.errors).toEqual([]);
  });
});
