// Deterministic pseudo-random test data, written to files fast (AES-128-CTR keystream over
// zeros, ~1 GB/s) and hashed while writing, so multi-GiB blobs never sit in memory.
import { createCipheriv, createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { createReadStream } from "node:fs";

export interface DataFile {
  path: string;
  size: number;
  sha256: string;
  digest: string;
}

export async function writeDeterministicFile(path: string, size: number, seed: string): Promise<DataFile> {
  const key = createHash("sha256").update(`cloister-e2e:${seed}`).digest();
  const cipher = createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  const hash = createHash("sha256");
  const zeros = Buffer.alloc(8 << 20);
  const fh = await open(path, "w");
  try {
    let left = size;
    let pending: Promise<unknown> = Promise.resolve();
    while (left > 0) {
      const n = Math.min(left, zeros.length);
      const chunk = cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
      hash.update(chunk);
      // Overlap the write (thread pool) with generating and hashing the next chunk.
      await pending;
      pending = fh.write(chunk);
      left -= n;
    }
    await pending;
  } finally {
    await fh.close();
  }
  const sha = hash.digest("hex");
  return { path, size, sha256: sha, digest: `sha256:${sha}` };
}

export async function hashFile(path: string, start?: number, end?: number): Promise<{ sha256: string; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path, { start, end, highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: h.digest("hex"), size };
}

export async function fileSize(path: string) {
  return (await stat(path)).size;
}

export const MiB = 1 << 20;
export const GiB = 1 << 30;
