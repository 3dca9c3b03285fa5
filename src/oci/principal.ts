// The caller's identity as far as the OCI routes need it (set by the auth middleware).
import type { Ctx } from "../app";

export function principalId(c: Ctx): string {
  const p = (c.var as { principal?: { id: string } }).principal;
  return p?.id ?? "anonymous";
}
