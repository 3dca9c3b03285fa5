// Random test data: files written with AES-128-CTR keystream (fast, incompressible) and digested.
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { openSync, writeSync, closeSync } from "node:fs";
import { MiB } from "./http.mjs";

/**
 * Writes `size` random bytes to `path`; returns {path, size, digest: "sha256:…", sha512?, blake3?}.
 * extra: ["sha512", "blake3"] computes those hex digests too (blake3 via hash-wasm in Node).
 */
export async function randomFile(path, size, extra = []) {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(4 * MiB);
  const sha256 = createHash("sha256");
  const sha512 = extra.includes("sha512") ? createHash("sha512") : null;
  let blake3 = null;
  if (extra.includes("blake3")) {
    const { createBLAKE3 } = await import("hash-wasm");
    blake3 = await createBLAKE3();
  }
  const fd = openSync(path, "w");
  try {
    for (let off = 0; off < size; off += zeros.length) {
      const n = Math.min(zeros.length, size - off);
      const chunk = cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
      sha256.update(chunk);
      sha512?.update(chunk);
      blake3?.update(chunk);
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
  const out = { path, size, digest: `sha256:${sha256.digest("hex")}` };
  if (sha512) out.sha512 = sha512.digest("hex");
  if (blake3) out.blake3 = blake3.digest("hex");
  return out;
}

/** `count` random in-memory blobs of `size` bytes with their sha256 digests. */
export function randomBlobs(count, size) {
  const all = randomBytes(count * size);
  return Array.from({ length: count }, (_, i) => {
    const buffer = all.subarray(i * size, (i + 1) * size);
    return { buffer, size, digest: `sha256:${createHash("sha256").update(buffer).digest("hex")}` };
  });
}
