// Raw R2 routes for `npm run bench` (the ceiling our registry is measured against).
// Mounted only when BENCH_ROUTES=true. Owned by the bench tooling.
import { Hono } from "hono";
import type { Env } from "./env";

export const benchRoutes = new Hono<{ Bindings: Env }>();
benchRoutes.use("*", async (c, next) => {
  if (String(c.env.BENCH_ROUTES ?? "false").toLowerCase() !== "true") return c.notFound();
  await next();
});
