// Shared by the GC tests: drive a manual GC run (grace 0 unless told) step by step.
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import type { Env } from "../../src/env";
import { gcCoordinator, blobStoreFor } from "../../src/stores";
import type { RunRecord } from "../../src/gc/coordinator";
import { req, sha256 } from "./helpers";

export const E = env as unknown as Env;
export const gc = () => gcCoordinator(E);

/** `clock`: the run's retention "now" (ms), to age content without waiting. */
export async function startGc(opts: { dryRun?: boolean; reconcile?: boolean; graceSeconds?: number; clock?: number } = {}): Promise<RunRecord> {
  await gc().runToEnd(); // a run left paused by an earlier failed test must not fail this one
  const r = await gc().start({ dryRun: opts.dryRun ?? false, reconcile: opts.reconcile ?? false, graceSeconds: opts.graceSeconds ?? 0, manual: true, trigger: "test", clock: opts.clock });
  if (!r.ok) throw new Error(`gc did not start: ${r.message}`);
  return r.run;
}

/** A whole manual run. */
export async function runGc(opts: { dryRun?: boolean; reconcile?: boolean; graceSeconds?: number; clock?: number } = {}): Promise<RunRecord> {
  await startGc(opts);
  const r = await gc().runToEnd();
  expect(r?.state).toBe("done");
  return r!;
}

/** Step the running run until the step about to run is `phase` (GC paused there). */
export async function stepUntil(phase: RunRecord["phase"]): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const s = await gc().status();
    if (!s.current) throw new Error(`run ended before phase ${phase}`);
    if (s.current.phase === phase) return;
    await gc().step();
  }
  throw new Error(`phase ${phase} never reached`);
}

export async function finishGc(): Promise<RunRecord> {
  const r = await gc().runToEnd();
  expect(r?.state).toBe("done");
  return r!;
}

export async function r2Has(key: string): Promise<boolean> {
  return (await E.BUCKET.head(key)) !== null;
}

export async function keyOf(digest: string): Promise<string | null> {
  return (await blobStoreFor(E, digest).get(digest))?.r2Key ?? null;
}

/** GET a blob and check its bytes hash to its digest. */
export async function pullsVerified(repo: string, digest: string): Promise<boolean> {
  const res = await req(`/v2/${repo}/blobs/${digest}`);
  if (res.status !== 200) {
    await res.body?.cancel();
    return false;
  }
  const body = new Uint8Array(await res.arrayBuffer());
  return !digest.startsWith("sha256:") || (await sha256(body)) === digest;
}

export async function manifestPulls(repo: string, ref: string, want?: string): Promise<string | null> {
  const res = await req(`/v2/${repo}/manifests/${ref}`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json" } });
  if (res.status !== 200) {
    await res.body?.cancel();
    return null;
  }
  const body = new Uint8Array(await res.arrayBuffer());
  const d = await sha256(body);
  if (want && d !== want) return null;
  return d === res.headers.get("Docker-Content-Digest") ? d : null;
}
