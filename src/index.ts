// Worker entry: the Hono app plus the Durable Object classes wrangler binds.
import { buildApp } from "./app";
import type { Env } from "./env";

export { BlobStore } from "./stores/blob-store";
export { UploadSession } from "./stores/upload-session";
export { TrustStore } from "./stores/trust-store";
export { AccountStore } from "./stores/account-store";
export { Catalog } from "./stores/catalog";

const app = buildApp();

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Env>;
