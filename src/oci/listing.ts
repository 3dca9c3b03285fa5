// GET /v2/<name>/tags/list (the repository's TrustStore) and GET /v2/_catalog (the Catalog index).
import type { Ctx } from "../app";
import { oci } from "./errors";
import { catalogShard, catalogShards, trustStoreFor } from "../stores";
import { mayPull } from "../auth";
import { nextLink, parsePage } from "./pagination";
import { MAX_PAGE_ENTRIES as MAX_PAGE } from "./limits";

export async function tags(c: Ctx, name: string): Promise<Response> {
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const page = await trustStoreFor(c.env, name).tags(name, n ?? MAX_PAGE, last);
  if (!page) throw oci("NAME_UNKNOWN", `repository ${name} is not known to this registry`, { name });
  const headers: Record<string, string> = {};
  if (page.next !== null) headers.Link = nextLink(`/v2/${name}/tags/list`, { n: String(n ?? MAX_PAGE), last: page.next });
  return c.json({ name, tags: page.items }, 200, headers);
}

/**
 * Only repositories the caller may pull, filtered before paging: a page, its length and its
 * Link cursor say nothing about repositories the caller cannot see.
 */
export async function catalog(c: Ctx): Promise<Response> {
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const want = n ?? MAX_PAGE;
  const visible: string[] = [];
  let more = false;
  if (want > 0) {
    // Shards are walked in name order; each page is read from one shard only.
    const shards = catalogShards();
    scan: for (const shard of shards) {
      const store = catalogShard(c.env, shard);
      let cursor = last;
      for (;;) {
        const page = await store.page(MAX_PAGE, cursor);
        for (const repo of page.items) {
          if (!(await mayPull(c, repo))) continue;
          if (visible.length === want) {
            more = true; // one more visible repository exists: offer a next page
            break scan;
          }
          visible.push(repo);
        }
        if (page.next === null) break;
        cursor = page.next;
      }
    }
  }
  const headers: Record<string, string> = {};
  if (more) headers.Link = nextLink("/v2/_catalog", { n: String(want), last: visible[visible.length - 1] });
  return c.json({ repositories: visible }, 200, headers);
}
