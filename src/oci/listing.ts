// GET /v2/<name>/tags/list and GET /v2/_catalog, served from the TrustStore index.
import type { Ctx } from "../app";
import { oci } from "./errors";
import { trustStoreFor } from "../stores";
import { mayPull } from "../auth";
import { nextLink, parsePage } from "./pagination";

const MAX_PAGE = 1000;

export async function tags(c: Ctx, name: string): Promise<Response> {
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const page = await trustStoreFor(c.env, name).tags(name, n ?? MAX_PAGE, last);
  if (!page) throw oci("NAME_UNKNOWN", `repository ${name} is not known to this registry`, { name });
  const headers: Record<string, string> = {};
  if (page.next !== null) headers.Link = nextLink(`/v2/${name}/tags/list`, { n: String(n ?? MAX_PAGE), last: page.next });
  return c.json({ name, tags: page.items }, 200, headers);
}

export async function catalog(c: Ctx): Promise<Response> {
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const page = await trustStoreFor(c.env).catalog(n ?? MAX_PAGE, last);
  const headers: Record<string, string> = {};
  if (page.next !== null) headers.Link = nextLink("/v2/_catalog", { n: String(n ?? MAX_PAGE), last: page.next });
  // Only repositories this principal may pull (a page may come out shorter than n).
  const visible: string[] = [];
  for (const repo of page.items) if (await mayPull(c, repo)) visible.push(repo);
  return c.json({ repositories: visible }, 200, headers);
}
