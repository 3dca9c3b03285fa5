// build-cache/v1 end to end: 4 MiB chunks pushed under their BLAKE3 claim (sha256:<blake3 hex>)
// vs the same-size chunks under their real SHA-256, single-request POST ?digest=, sequential.
import { createBLAKE3 } from "hash-wasm";
import { pushPostDigest, pullBlob } from "../lib/oci.mjs";
import { randomBlobs } from "../lib/data.mjs";
import { BenchError, MB } from "../lib/http.mjs";

const COUNT = 32;
const SIZE = 4 * 1024 * 1024;

async function push(ctx, name, blobs, claim) {
  const agent = ctx.agent(1);
  try {
    const t0 = performance.now();
    for (const b of blobs) {
      const res = await pushPostDigest(ctx.cloister.base, name, b, claim(b), agent);
      if (res.headers["docker-content-digest"] !== claim(b)) throw new BenchError(`Docker-Content-Digest ${res.headers["docker-content-digest"]} != claim ${claim(b)}`);
    }
    return (blobs.length * SIZE) / MB / ((performance.now() - t0) / 1000);
  } finally {
    agent.destroy();
  }
}

export default {
  id: "buildcache",
  title: "build-cache/v1: BLAKE3-claim pushes vs SHA-256 pushes",
  needs: ["cloisterRegistry"],
  async run(ctx) {
    const hasher = await createBLAKE3();
    const b3 = (buf) => "sha256:" + hasher.init().update(buf).digest("hex");
    const a = randomBlobs(COUNT, SIZE);
    const b = randomBlobs(COUNT, SIZE);
    const claims = new Map(b.map((x) => [x, b3(x.buffer)]));
    const sha = await push(ctx, "bench/cache-sha256", a, (x) => x.digest);
    const blake = await push(ctx, "bench/cache-blake3", b, (x) => claims.get(x));
    const back = await pullBlob(ctx.cloister.base, "bench/cache-blake3", claims.get(b[0]), ctx.agent(1));
    if (back.status !== 200) throw new BenchError(`pull of a BLAKE3-claimed chunk answered ${back.status}`);
    return {
      rows: [
        { label: `${COUNT} × 4 MiB chunks, POST ?digest=<sha256>`, unit: "MB/s", values: { cloister: sha } },
        { label: `${COUNT} × 4 MiB chunks, POST ?digest=sha256:<blake3> (build-cache/v1)`, unit: "MB/s", values: { cloister: blake } },
      ],
      metrics: { "buildcache.sha256_MBps": sha, "buildcache.blake3_MBps": blake },
      notes: ["both hashes run while the body streams when the overload is on (BLAKE3_IN_SHA256); compare with hash.* for the in-Worker hash rates"],
    };
  },
};
