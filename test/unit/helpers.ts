// Shared helpers for tests that run inside workerd against the real Worker, R2 and DOs.
import { env, exports } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { expect } from "vitest";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";

export const BASE = "http://registry.test";

/**
 * Credentials every request carries when the suite runs in token mode (vitest.auth.config.ts
 * sets TEST_CREDENTIALS): the same tests then prove the API works through the auth gate.
 */
function withCredentials(init: RequestInit): RequestInit {
  const creds = (env as unknown as { TEST_CREDENTIALS?: string }).TEST_CREDENTIALS;
  if (!creds) return init;
  const headers = new Headers(init.headers);
  if (!headers.has("Authorization")) headers.set("Authorization", "Basic " + btoa(creds));
  return { ...init, headers };
}

/** A request through the deployed Worker entry (wrangler.toml + test bindings). */
export function req(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(BASE + path, withCredentials(init)));
}

/** A request through a fresh app with some variables overridden (e.g. body caps). */
export async function reqWith(vars: Partial<Record<string, string>>, path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await buildApp().fetch(new Request(BASE + path, withCredentials(init)), { ...(env as unknown as Env), ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

export async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return "sha256:" + [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export async function ociError(res: Response): Promise<{ code: string; message: string; detail?: unknown }> {
  expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
  const j = (await res.json()) as { errors: { code: string; message: string; detail?: unknown }[] };
  expect(Array.isArray(j.errors)).toBe(true);
  expect(j.errors.length).toBeGreaterThan(0);
  expect(typeof j.errors[0].message).toBe("string");
  return j.errors[0];
}

export async function expectError(res: Response | Promise<Response>, status: number, code: string): Promise<string> {
  const r = await res;
  if (r.status !== status) throw new Error(`expected ${status} ${code}, got ${r.status}: ${await r.text()}`);
  const e = await ociError(r);
  expect(e.code).toBe(code);
  return e.message;
}

export async function pushBlob(repo: string, data: Uint8Array): Promise<string> {
  const digest = await sha256(data);
  const res = await req(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data, headers: { "Content-Type": "application/octet-stream" } });
  if (res.status !== 201) throw new Error(`push blob: ${res.status} ${await res.text()}`);
  return digest;
}

export async function startUpload(repo: string): Promise<string> {
  const res = await req(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
  expect(res.status).toBe(202);
  return res.headers.get("Location")!;
}

export function patch(location: string, chunk: Uint8Array, start: number | null): Promise<Response> {
  const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
  if (start !== null) headers["Content-Range"] = `${start}-${start + chunk.length - 1}`;
  return req(location, { method: "PATCH", headers, body: chunk });
}

/** A stream with no declared length, as docker sends a layer. */
export function streamOf(data: Uint8Array, piece = 64 * 1024): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(ctl) {
      if (off >= data.length) return ctl.close();
      ctl.enqueue(data.slice(off, off + piece));
      off += piece;
    },
  });
}

export function withQuery(location: string, q: string) {
  return location + (location.includes("?") ? "&" : "?") + q;
}

export interface ImageParts {
  manifest: Uint8Array;
  digest: string;
  config: string;
  layers: string[];
}

/** Push config + layers and return an OCI image manifest over them (not yet pushed). */
export async function makeImage(repo: string, opts: { layers?: number; seed?: number; mediaType?: boolean; extra?: Record<string, unknown> } = {}): Promise<ImageParts> {
  const seed = opts.seed ?? 7;
  const cfgBytes = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", seed }));
  const config = await pushBlob(repo, cfgBytes);
  const layers: string[] = [];
  const descs = [];
  for (let i = 0; i < (opts.layers ?? 1); i++) {
    const data = bytes(1000 + i, seed * 100 + i);
    const d = await pushBlob(repo, data);
    layers.push(d);
    descs.push({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d, size: data.length });
  }
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    ...(opts.mediaType === false ? {} : { mediaType: "application/vnd.oci.image.manifest.v1+json" }),
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: cfgBytes.length },
    layers: descs,
    ...opts.extra,
  };
  const manifest = new TextEncoder().encode(JSON.stringify(m));
  return { manifest, digest: await sha256(manifest), config, layers };
}

export function putManifest(repo: string, ref: string, body: Uint8Array, contentType = "application/vnd.oci.image.manifest.v1+json") {
  return req(`/v2/${repo}/manifests/${ref}`, { method: "PUT", headers: { "Content-Type": contentType }, body });
}

/** Compare large byte arrays by length and digest (a toEqual diff of MiBs would exhaust memory). */
export async function expectBytes(got: Uint8Array, want: Uint8Array) {
  expect(got.length).toBe(want.length);
  expect(await sha256(got)).toBe(await sha256(want));
}

/**
 * Wait until the repository's TrustStore has forwarded its audit outbox to the AuditLog (its alarm,
 * docs/adr/0021): a registry mutation's event is then queryable. The outbox row is deleted only
 * after the append, so "empty" means "appended".
 */
export async function auditForwarded(repo: string, timeoutMs = 10_000): Promise<void> {
  const { runInDurableObject } = await import("cloudflare:test");
  const { trustStoreFor } = await import("../../src/stores");
  const stub = trustStoreFor(env as unknown as Env, repo);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = await runInDurableObject(stub, (_i: unknown, state: DurableObjectState) => {
      const t = state.storage.sql.exec(`SELECT 1 FROM sqlite_master WHERE name = 'audit_outbox'`).toArray().length;
      return t ? state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM audit_outbox`).one().n : 0;
    });
    if (pending === 0) return;
    if (Date.now() > deadline) throw new Error(`${repo}: ${pending} audit events still in the outbox after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
