// Signature repository links (docs/signatures.md, cloister-spec/signatures.md): the referrers
// listing merged across linked repositories — annotations naming the source, cosign's
// sha256-<hex>.sig tags, filters and paging across the merge — and the link rule's validation.
import { describe, expect, it } from "vitest";
import { reqWith, sha256 } from "./helpers";
import { linkedRepositories, MAX_SIGNATURE_LINKS, parseRule, withBuiltins } from "../../src/auth/policy";
import { isValidName } from "../../src/oci/grammar";

const ADMIN_PW = "signature-links-admin-password";
const admin = (path: string, init: RequestInit = {}) => {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Basic ${btoa(`admin:${ADMIN_PW}`)}`);
  return reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW }, path, { ...init, headers });
};
const uid = () => "s" + crypto.randomUUID().replace(/-/g, "").slice(0, 12);
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const EMPTY = new TextEncoder().encode("{}");
const COSIGN_AT = "application/vnd.dev.cosign.artifact.sig.v1+json";
const REPO_KEY = "dev.cloister.referrer.repository";

async function blob(repo: string, data: Uint8Array) {
  const d = await sha256(data);
  const r = await admin(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data });
  expect(r.status, await r.clone().text()).toBe(201);
  return d;
}
async function manifest(repo: string, ref: string | null, m: Record<string, unknown>) {
  const body = enc(m);
  const digest = await sha256(body);
  const r = await admin(`/v2/${repo}/manifests/${ref ?? digest}`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body });
  expect(r.status, await r.clone().text()).toBe(201);
  return { digest, size: body.length };
}
async function image(repo: string) {
  const cfg = enc({ nonce: uid() });
  return manifest(repo, "v1", { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await blob(repo, cfg), size: cfg.length }, layers: [] });
}
async function referrer(repo: string, subject: { digest: string; size: number }, artifactType: string, annotations: Record<string, string>) {
  await blob(repo, EMPTY);
  return manifest(repo, null, { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config: { mediaType: "application/vnd.oci.empty.v1+json", digest: await sha256(EMPTY), size: 2 }, layers: [], subject: { mediaType: OCI_MANIFEST, ...subject }, annotations });
}
async function policy(rule: Record<string, unknown>) {
  return admin("/admin/policies", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) });
}
type Desc = { digest: string; artifactType?: string; annotations?: Record<string, string> };
async function list(path: string) {
  const r = await admin(path);
  expect(r.status, await r.clone().text()).toBe(200);
  return { manifests: ((await r.json()) as { manifests: Desc[] }).manifests, link: r.headers.get("Link"), filters: r.headers.get("OCI-Filters-Applied") };
}

describe("linked signature repositories in the referrers listing", () => {
  it("merges referrers and sha256-<hex>.sig signatures from the linked repository, naming it; filters apply across the merge", async () => {
    const p = uid();
    const img = `${p}/app`;
    const sigs = `${p}-sigs/app`;
    const subject = await image(img);
    const own = await referrer(img, subject, "application/vnd.example.sbom", { "org.example.kind": "sbom" });
    const alice = await referrer(sigs, subject, COSIGN_AT, { "org.example.signer": "alice" });
    const bob = await referrer(sigs, subject, "application/vnd.cncf.notary.signature", { "org.example.signer": "bob" });
    const cfg = enc({ sig: uid() });
    const tagged = await manifest(sigs, `sha256-${subject.digest.slice(7)}.sig`, { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await blob(sigs, cfg), size: cfg.length }, layers: [] });
    const base = `/v2/${img}/referrers/${subject.digest}`;

    expect((await list(base)).manifests.map((m) => m.digest)).toEqual([own.digest]);
    expect((await policy({ id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` })).status).toBe(201);

    const all = (await list(base)).manifests;
    expect(all.map((m) => m.digest)).toEqual([own.digest, alice.digest, bob.digest, tagged.digest].sort());
    const by = Object.fromEntries(all.map((m) => [m.digest, m]));
    expect(by[own.digest].annotations).toEqual({ "org.example.kind": "sbom" });
    expect(by[alice.digest].annotations).toEqual({ "org.example.signer": "alice", [REPO_KEY]: sigs });
    expect(by[tagged.digest]).toMatchObject({ artifactType: COSIGN_AT, annotations: { [REPO_KEY]: sigs, "dev.cloister.referrer.tag": `sha256-${subject.digest.slice(7)}.sig` } });

    const cosign = await list(`${base}?artifactType=${encodeURIComponent(COSIGN_AT)}`);
    expect(cosign.manifests.map((m) => m.digest)).toEqual([alice.digest, tagged.digest].sort());
    expect(cosign.filters).toBe("artifactType");
    expect((await list(`${base}?annotation=${encodeURIComponent("org.example.signer=bob")}`)).manifests.map((m) => m.digest)).toEqual([bob.digest]);
    expect((await list(`${base}?annotation=${encodeURIComponent(`${REPO_KEY}=${sigs}`)}`)).manifests.map((m) => m.digest)).toEqual([alice.digest, bob.digest, tagged.digest].sort());
    expect((await list(`${base}?artifactType=${encodeURIComponent(COSIGN_AT)}&annotation=${encodeURIComponent("org.example.signer=alice")}`)).manifests.map((m) => m.digest)).toEqual([alice.digest]);
  });

  it("pages across the merge in digest order, each referrer exactly once", async () => {
    const p = uid();
    const img = `${p}/app`;
    const subject = await image(img);
    const want: string[] = [];
    for (let i = 0; i < 3; i++) want.push((await referrer(img, subject, "application/vnd.example.a", { i: String(i) })).digest);
    for (let i = 0; i < 4; i++) want.push((await referrer(`${p}-sigs/app`, subject, "application/vnd.example.a", { i: `l${i}` })).digest);
    // the same referrer in both repositories is listed once, from the image's repository
    const both = await referrer(img, subject, "application/vnd.example.a", { i: "both" });
    await referrer(`${p}-sigs/app`, subject, "application/vnd.example.a", { i: "both" });
    want.push(both.digest);
    expect((await policy({ id: `${p}-link`, kind: "signature-repository", repositories: `${p}/**`, target: `${p}-sigs/{1}` })).status).toBe(201);
    const seen: Desc[] = [];
    let next: string | null = `/v2/${img}/referrers/${subject.digest}?n=3`;
    let pages = 0;
    while (next) {
      const page = await list(next);
      expect(page.manifests.length).toBeLessThanOrEqual(3);
      seen.push(...page.manifests);
      next = page.link ? /<([^>]+)>/.exec(page.link)![1] : null;
      expect(++pages).toBeLessThan(10);
    }
    expect(seen.map((m) => m.digest)).toEqual([...want].sort());
    expect(seen.find((m) => m.digest === both.digest)!.annotations).toEqual({ i: "both" });
  });

  it("a stored dev.cloister.referrer.* annotation is never served: cloister sets those keys", async () => {
    const p = uid();
    const img = `${p}/app`;
    const subject = await image(img);
    const spoof = await referrer(img, subject, "application/vnd.example.a", { [REPO_KEY]: "trusted/sigs", keep: "yes" });
    const page = await list(`/v2/${img}/referrers/${subject.digest}`);
    expect(page.manifests.find((m) => m.digest === spoof.digest)!.annotations).toEqual({ keep: "yes" });
    expect((await list(`/v2/${img}/referrers/${subject.digest}?annotation=${encodeURIComponent(`${REPO_KEY}=trusted/sigs`)}`)).manifests).toEqual([]);
  });

  it("a sha256-<hex>.sig tag in the image's own repository counts as a signature of that digest", async () => {
    const p = uid();
    const img = `${p}/app`;
    const subject = await image(img);
    const cfg = enc({ sig: uid() });
    const sig = await manifest(img, `sha256-${subject.digest.slice(7)}.sig`, { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await blob(img, cfg), size: cfg.length }, layers: [] });
    const page = await list(`/v2/${img}/referrers/${subject.digest}?artifactType=${encodeURIComponent(COSIGN_AT)}`);
    expect(page.manifests).toEqual([{ mediaType: OCI_MANIFEST, digest: sig.digest, size: sig.size, artifactType: COSIGN_AT, annotations: { "dev.cloister.referrer.tag": `sha256-${subject.digest.slice(7)}.sig` } }]);
    // not a signature of any other digest
    expect((await list(`/v2/${img}/referrers/${sig.digest}`)).manifests).toEqual([]);
  });

  it("the admin API refuses malformed link rules with 400", async () => {
    for (const bad of [
      { kind: "signature-repository", repositories: "prod/*", target: "prod-sigs/{2}" },
      { kind: "signature-repository", repositories: "prod/*", target: "Prod/{1}" },
      { kind: "signature-repository", repositories: "{user}/*", target: "sigs/{1}" },
      { kind: "signature-repository", repositories: "prod/*" },
    ]) {
      const r = await policy({ id: uid(), ...bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(((await r.json()) as { errors: { code: string }[] }).errors[0].code).toBe("BAD_REQUEST");
    }
  });
});

describe("linkedRepositories (pure)", () => {
  const rules = (...rs: Record<string, unknown>[]) => withBuiltins(rs.map((r, i) => parseRule({ id: `r${i}`, kind: "signature-repository", ...r })));
  it("expands {N} from the glob's wildcards and {repo} from the whole name", () => {
    expect(linkedRepositories(rules({ repositories: "prod/*", target: "prod-sigs/{1}" }), "prod/app", isValidName)).toEqual(["prod-sigs/app"]);
    expect(linkedRepositories(rules({ repositories: "prod/*", target: "prod-sigs/{1}" }), "prod/a/b", isValidName)).toEqual([]);
    expect(linkedRepositories(rules({ repositories: "*/**", target: "{1}-sigs/{2}" }), "team/a/b", isValidName)).toEqual(["team-sigs/a/b"]);
    expect(linkedRepositories(rules({ repositories: "**", target: "sigs/{repo}" }), "x/y", isValidName)).toEqual(["sigs/x/y"]);
  });
  it("skips self-links, invalid names and duplicates, and caps the count", () => {
    expect(linkedRepositories(rules({ repositories: "a/*", target: "a/{1}" }), "a/b", isValidName)).toEqual([]);
    expect(linkedRepositories(rules({ repositories: "a*", target: "sigs/{1}" }), "a", isValidName)).toEqual([]);
    expect(linkedRepositories(rules({ repositories: "a/*", target: "s/{1}" }, { repositories: "a/**", target: "s/{1}" }), "a/b", isValidName)).toEqual(["s/b"]);
    const many = Array.from({ length: 12 }, (_, i) => ({ repositories: "a/*", target: `s${i}/{1}` }));
    expect(linkedRepositories(rules(...many), "a/b", isValidName)).toHaveLength(MAX_SIGNATURE_LINKS);
  });
});
