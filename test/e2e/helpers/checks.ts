// Assertions shared by the client tests: what a client reports having pushed is what the registry
// serves, checked over HTTP by digest and size (blobs are hashed while streamed, not kept).
import { expect } from "vitest";
import { request, describe as show } from "./http";
import type { RunningRegistry } from "./registry";
import { DOCKER_V2S2, OCI_INDEX, OCI_MANIFEST, type Descriptor } from "./images";

export interface ServedManifest {
  mediaType: string;
  bytes: Buffer;
  json: { mediaType?: string; config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
}

/** GET the manifest `repo:ref`; it must be served with Docker-Content-Digest `digest` and hash to it. */
export async function servedManifest(reg: RunningRegistry, repo: string, ref: string, digest: string, auth: Record<string, string> = {}): Promise<ServedManifest> {
  const r = await request(reg, "GET", `/v2/${repo}/manifests/${ref}`, { headers: { ...auth, Accept: [OCI_INDEX, OCI_MANIFEST, DOCKER_V2S2].join(", ") } });
  expect(r.status, `GET /v2/${repo}/manifests/${ref}: ${show(r)}`).toBe(200);
  expect(r.headers["docker-content-digest"]).toBe(digest);
  expect(`sha256:${r.sha256}`).toBe(digest);
  return { mediaType: String(r.headers["content-type"]), bytes: r.body, json: r.json() };
}

/** Every descriptor's blob is served whole from `repo` and hashes to its digest. */
export async function expectBlobsServed(reg: RunningRegistry, repo: string, descs: Descriptor[], auth: Record<string, string> = {}) {
  for (const d of descs) {
    const r = await request(reg, "GET", `/v2/${repo}/blobs/${d.digest}`, { headers: auth, discardBody: true });
    expect(r.status, `GET blob ${d.digest}: ${show(r)}`).toBe(200);
    expect(r.size).toBe(d.size);
    expect(`sha256:${r.sha256}`).toBe(d.digest);
  }
}

/** `repo` has no tags (404 for an unknown repository, or an empty list). */
export async function expectNoTags(reg: RunningRegistry, repo: string, auth: Record<string, string>) {
  const r = await request(reg, "GET", `/v2/${repo}/tags/list`, { headers: auth });
  if (r.status === 200) expect(r.json().tags ?? []).toEqual([]);
  else expect(r.status, show(r)).toBe(404);
}

/** The tags the registry lists for `repo`. */
export async function tagsOf(reg: RunningRegistry, repo: string, auth: Record<string, string>): Promise<string[]> {
  const r = await request(reg, "GET", `/v2/${repo}/tags/list`, { headers: auth });
  expect(r.status, show(r)).toBe(200);
  return r.json().tags ?? [];
}
