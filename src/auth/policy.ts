// The policy engine: pure functions, no I/O. Rules are data (stored in the AccountStore, plus
// built-in defaults); a decision collects every matching rule, deny wins over allow, and no
// matching rule means deny. See docs/auth.md for the rule format.
import { z } from "zod";

export const ACTIONS = ["pull", "push", "delete", "catalog", "admin"] as const;
export type Action = (typeof ACTIONS)[number];
/** Actions that are not about one repository; rules for them must not name repositories. */
export const REGISTRY_ACTIONS: readonly Action[] = ["catalog", "admin"];

/** The subject being judged: a user, a robot (name without the "robot$" prefix) or nobody. */
export type Subject =
  | { kind: "user"; name: string }
  | { kind: "robot"; name: string }
  | { kind: "anonymous" };

export interface AccessRule {
  id: string;
  kind: "access";
  priority: number;
  effect: "allow" | "deny";
  subjects: string[];
  actions: Action[];
  /** Repository globs; absent = every repository and the registry-wide actions. */
  repositories?: string[];
  description?: string;
}

export interface ImmutableTagsRule {
  id: string;
  kind: "immutable-tags";
  priority: number;
  repositories: string[];
  tags: string[];
  description?: string;
}

/**
 * Signature repository link (docs/signatures.md): referrers and cosign `sha256-<hex>.sig` tags of
 * repositories matching `repositories` may live in `target`, a template where {1}…{9} stand for
 * what the glob's 1st…9th wildcard matched and {repo} for the whole name ("prod/*" → "prod-sigs/{1}").
 */
export interface SignatureRepositoryRule {
  id: string;
  kind: "signature-repository";
  priority: number;
  repositories: string[];
  target: string;
  description?: string;
}

/**
 * Signature gate (docs/signatures.md): manifests of matching repositories may be pulled only with
 * at least `minimum` valid signatures from distinct keys among `keys` (registered key names).
 */
export interface SignatureGateRule {
  id: string;
  kind: "signature-gate";
  priority: number;
  repositories: string[];
  keys: string[];
  minimum: number;
  description?: string;
}

export type Rule = AccessRule | ImmutableTagsRule | SignatureRepositoryRule | SignatureGateRule;

// ---- validation (zod) -------------------------------------------------------------------------

export const RULE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$/;
/** Repository globs: the repository-name alphabet plus "*" and the "{user}" placeholder. */
export const REPO_GLOB_RE = /^(?:[a-z0-9._\-/*]|\{user\})+$/;
export const TAG_GLOB_RE = /^[A-Za-z0-9._\-*]+$/;
export const SUBJECT_RE = /^(?:\*|anonymous|authenticated|(?:user|robot):[A-Za-z0-9._+\-*$]{1,128})$/;

const oneOrMany = <T extends z.ZodType>(item: T) =>
  z.union([item, z.array(item).min(1).max(64)]).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[]);

const repoGlob = z.string().min(1).max(255).regex(REPO_GLOB_RE, "repository glob may contain a-z 0-9 . _ - / * and {user}");
const tagGlob = z.string().min(1).max(128).regex(TAG_GLOB_RE, "tag glob may contain A-Z a-z 0-9 . _ - *");

const common = {
  id: z.string().regex(RULE_ID_RE, "id: 1-128 of A-Z a-z 0-9 . _ : + -, starting alphanumeric"),
  priority: z.number().int().min(-1_000_000).max(1_000_000).default(100),
  description: z.string().max(1000).optional(),
};

export const accessRuleSchema = z
  .strictObject({
    ...common,
    kind: z.literal("access").default("access"),
    effect: z.enum(["allow", "deny"]),
    subjects: oneOrMany(z.string().regex(SUBJECT_RE, 'subject: "*", "anonymous", "authenticated", "user:<name>" or "robot:<name>"')),
    actions: oneOrMany(z.enum(ACTIONS)),
    repositories: oneOrMany(repoGlob).optional(),
  })
  .refine((r) => !(r.repositories && r.actions.some((a) => REGISTRY_ACTIONS.includes(a))), {
    message: '"catalog" and "admin" are registry-wide actions: a rule granting or denying them must not list repositories',
    path: ["repositories"],
  });

export const immutableTagsRuleSchema = z.strictObject({
  ...common,
  kind: z.literal("immutable-tags"),
  repositories: oneOrMany(repoGlob),
  tags: oneOrMany(tagGlob),
});

/** Link templates: the repository-name alphabet plus {1}…{9} and {repo}. */
export const LINK_TARGET_RE = /^(?:[a-z0-9._\-/]|\{[1-9]\}|\{repo\})+$/;

const wildcards = (glob: string) => (glob.match(/\*+/g) ?? []).length;

export const signatureRepositoryRuleSchema = z
  .strictObject({
    ...common,
    kind: z.literal("signature-repository"),
    repositories: oneOrMany(z.string().min(1).max(255).regex(/^[a-z0-9._\-/*]+$/, "repository glob may contain a-z 0-9 . _ - / * (no {user})")),
    target: z.string().min(1).max(255).regex(LINK_TARGET_RE, "target may contain a-z 0-9 . _ - / and the placeholders {1}…{9} and {repo}"),
  })
  .refine((r) => r.repositories.every((g) => Math.max(0, ...[...r.target.matchAll(/\{([1-9])\}/g)].map((m) => Number(m[1]))) <= wildcards(g)), {
    message: "target names a {N} placeholder beyond the wildcards of a repository glob",
    path: ["target"],
  });

export const signatureGateRuleSchema = z
  .strictObject({
    ...common,
    kind: z.literal("signature-gate"),
    repositories: oneOrMany(z.string().min(1).max(255).regex(/^[a-z0-9._\-/*]+$/, "repository glob may contain a-z 0-9 . _ - / * (no {user})")),
    keys: oneOrMany(z.string().min(1).max(64).regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/, "key names as registered at /admin/trust-keys")).refine((k) => k.length <= 32, "at most 32 keys"),
    minimum: z.number().int().min(1).max(32),
  })
  .refine((r) => r.minimum <= new Set(r.keys).size, { message: "minimum exceeds the number of distinct keys", path: ["minimum"] });

/** A rule as accepted by the admin API (kind defaults to "access"). */
export const ruleSchema = z.union([immutableTagsRuleSchema, signatureRepositoryRuleSchema, signatureGateRuleSchema, accessRuleSchema]);
/** Input shape before defaults are applied. */
export type RuleInput = z.input<typeof ruleSchema>;

export function parseRule(input: unknown): Rule {
  // Pick the branch by kind so error messages talk about the right fields.
  const kind = typeof input === "object" && input !== null ? (input as { kind?: unknown }).kind : undefined;
  if (kind === "immutable-tags") return immutableTagsRuleSchema.parse(input) as Rule;
  if (kind === "signature-repository") return signatureRepositoryRuleSchema.parse(input) as Rule;
  if (kind === "signature-gate") return signatureGateRuleSchema.parse(input) as Rule;
  return accessRuleSchema.parse(input) as Rule;
}

// ---- globs ------------------------------------------------------------------------------------

/**
 * "*" matches within one path segment ([^/]*), "**" matches across segments (.*).
 * Everything else is literal; the whole value must match ("a/cache" does not match "a/cache/sub").
 */
export function globToRegExp(glob: string): RegExp {
  return globRegExp(glob, false);
}

/** globToRegExp with one capture group per wildcard (signature-repository templates). */
function globRegExp(glob: string, capture: boolean): RegExp {
  let src = "^";
  const wrap = (re: string) => (capture ? `(${re})` : re);
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === "*") {
      if (glob[i + 1] === "*") {
        src += wrap(".*");
        while (glob[i + 1] === "*") i++;
      } else src += wrap("[^/]*");
    } else src += ch.replace(/[\\^$.|?+()[\]{}]/g, "\\$&");
  }
  return new RegExp(src + "$");
}

export function matchGlob(glob: string, value: string): boolean {
  return globToRegExp(glob).test(value);
}

/** Expands "{user}" for a user subject; a glob with "{user}" never matches other subjects. */
function expandRepoGlob(glob: string, subject: Subject | null): string | null {
  if (!glob.includes("{user}")) return glob;
  if (!subject || subject.kind !== "user") return null;
  return glob.split("{user}").join(subject.name);
}

// ---- subjects ---------------------------------------------------------------------------------

export function subjectId(s: Subject): string {
  return s.kind === "anonymous" ? "anonymous" : `${s.kind}:${s.name}`;
}

/** "user:alice" / "robot:alice+ci" / "robot:robot$alice+ci" / "anonymous" → Subject, or null. */
export function parseSubject(text: string): Subject | null {
  if (text === "anonymous") return { kind: "anonymous" };
  const m = /^(user|robot):(.+)$/.exec(text);
  if (!m) return null;
  if (m[1] === "user") return { kind: "user", name: m[2] };
  return { kind: "robot", name: m[2].startsWith("robot$") ? m[2].slice(6) : m[2] };
}

/**
 * Whether a rule's subject pattern covers `s`. "anonymous" in an allow rule covers everyone:
 * what an anonymous client may do (public repositories), a signed-in one may do too. In a deny
 * rule it covers only clients that did not sign in.
 */
export function subjectMatches(pattern: string, s: Subject, effect: "allow" | "deny" = "deny"): boolean {
  if (pattern === "*") return true;
  if (pattern === "anonymous") return effect === "allow" || s.kind === "anonymous";
  if (pattern === "authenticated") return s.kind !== "anonymous";
  if (s.kind === "anonymous") return false;
  const i = pattern.indexOf(":");
  if (i < 0 || pattern.slice(0, i) !== s.kind) return false;
  let name = pattern.slice(i + 1);
  if (s.kind === "robot" && name.startsWith("robot$")) name = name.slice(6);
  return name.includes("*") ? matchGlob(name, s.name) : name === s.name;
}

// ---- built-in rules ---------------------------------------------------------------------------

export const ADMIN_USER = "admin";

export const BUILTIN_RULES: readonly AccessRule[] = Object.freeze([
  {
    id: "builtin:admin",
    kind: "access",
    priority: 0,
    effect: "allow",
    subjects: [`user:${ADMIN_USER}`],
    actions: [...ACTIONS],
    description: "the admin account may do everything",
  },
  {
    id: "builtin:user-namespace",
    kind: "access",
    priority: 0,
    effect: "allow",
    subjects: ["user:*"],
    actions: ["pull", "push", "delete"],
    repositories: ["{user}/**"],
    description: "every user may pull, push and delete under <username>/",
  },
  {
    id: "builtin:authenticated-catalog",
    kind: "access",
    priority: 0,
    effect: "allow",
    subjects: ["authenticated"],
    actions: ["catalog"],
    description: "signed-in accounts may list the catalog (it only shows repositories they may pull)",
  },
] satisfies AccessRule[]);

export function isBuiltinId(id: string): boolean {
  return id.startsWith("builtin:");
}

/** Stored rules plus the built-ins, sorted by priority (lower first), then id. */
export function withBuiltins(stored: readonly Rule[]): Rule[] {
  return [...BUILTIN_RULES, ...stored.filter((r) => !isBuiltinId(r.id))].sort(
    (a, b) => a.priority - b.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

// ---- decisions --------------------------------------------------------------------------------

export interface Decision {
  allowed: boolean;
  /** Short reason: "allowed by …", "denied by …", "no rule allows it (default deny)". */
  reason: string;
  /** The rules that decided (the deny rules when denied by rule, the allow rules when allowed). */
  deciding: Rule[];
  /** Every rule that matched subject, action and repository, in priority order. */
  matched: Rule[];
}

function repoMatches(rule: AccessRule, subject: Subject, repo: string | null): boolean {
  if (!rule.repositories || rule.repositories.length === 0) return true;
  if (repo === null) return false;
  return rule.repositories.some((g) => {
    const glob = expandRepoGlob(g, subject);
    return glob !== null && matchGlob(glob, repo);
  });
}

/**
 * Decides whether `subject` may do `action` on `repo` (null for registry-wide actions).
 * `rules` should include the built-ins (see withBuiltins); this function does not add them.
 */
export function evaluate(rules: readonly Rule[], subject: Subject, action: Action, repo: string | null): Decision {
  const matched: Rule[] = [];
  for (const r of rules) {
    if (r.kind !== "access") continue;
    if (!r.actions.includes(action)) continue;
    if (!r.subjects.some((p) => subjectMatches(p, subject, r.effect))) continue;
    if (!repoMatches(r, subject, repo)) continue;
    matched.push(r);
  }
  const denies = matched.filter((r) => r.kind === "access" && r.effect === "deny");
  const allows = matched.filter((r) => r.kind === "access" && r.effect === "allow");
  // The admin account can always reach the admin API, so no rule can lock the operator out.
  if (action === "admin" && subject.kind === "user" && subject.name === ADMIN_USER) {
    return { allowed: true, reason: "the admin account always holds the admin action", deciding: allows, matched };
  }
  if (denies.length) return { allowed: false, reason: `denied by ${denies.map((r) => r.id).join(", ")}`, deciding: denies, matched };
  if (allows.length) return { allowed: true, reason: `allowed by ${allows.map((r) => r.id).join(", ")}`, deciding: allows, matched };
  return { allowed: false, reason: "no rule allows it (default deny)", deciding: [], matched };
}

/** Convenience for the admin API: same as evaluate with the built-ins added. */
export function explain(stored: readonly Rule[], subject: Subject, action: Action, repo: string | null): Decision {
  return evaluate(withBuiltins(stored), subject, action, repo);
}

/** The subset of `requested` the subject may do on `repo`, in the order requested. */
export function allowedActions(rules: readonly Rule[], subject: Subject, repo: string | null, requested: readonly Action[]): Action[] {
  return requested.filter((a) => evaluate(rules, subject, a, repo).allowed);
}

/** The immutable-tags rule that protects `repo:tag`, or null. */
export function immutableRuleFor(rules: readonly Rule[], repo: string, tag: string): ImmutableTagsRule | null {
  for (const r of rules) {
    if (r.kind !== "immutable-tags") continue;
    if (!r.repositories.some((g) => !g.includes("{user}") && matchGlob(g, repo))) continue;
    if (!r.tags.some((g) => matchGlob(g, tag))) continue;
    return r;
  }
  return null;
}

/**
 * Whether moving `repo:tag` from `currentDigest` to `newDigest` (null = deleting the tag) is
 * allowed. Creating a tag (currentDigest null) and re-pushing the same digest always are.
 */
export function tagChangeAllowed(
  rules: readonly Rule[],
  repo: string,
  tag: string,
  currentDigest: string | null,
  newDigest: string | null,
): { allowed: true } | { allowed: false; rule: ImmutableTagsRule } {
  if (currentDigest === null || currentDigest === newDigest) return { allowed: true };
  const rule = immutableRuleFor(rules, repo, tag);
  return rule ? { allowed: false, rule } : { allowed: true };
}

// ---- signature repository links ---------------------------------------------------------------

/** Most linked repositories one referrers request reads (each is one store call). */
export const MAX_SIGNATURE_LINKS = 8;

/**
 * Repositories linked to `repo` by signature-repository rules, in rule order, without `repo`
 * itself or duplicates, at most MAX_SIGNATURE_LINKS. A template that expands to an invalid name
 * is skipped (`isValidName` is the OCI name grammar).
 */
export function linkedRepositories(rules: readonly Rule[], repo: string, isValidName: (n: string) => boolean): string[] {
  const out: string[] = [];
  for (const r of rules) {
    if (r.kind !== "signature-repository") continue;
    for (const g of r.repositories) {
      const m = globRegExp(g, true).exec(repo);
      if (!m) continue;
      const target = r.target.replace(/\{([1-9]|repo)\}/g, (_, k: string) => (k === "repo" ? repo : (m[Number(k)] ?? "")));
      if (target !== repo && isValidName(target) && !out.includes(target)) out.push(target);
      break;
    }
    if (out.length >= MAX_SIGNATURE_LINKS) break;
  }
  return out;
}

// ---- signature gates ----------------------------------------------------------------------------

/** The signature-gate rules covering `repo` (every one must be met). */
export function signatureGatesFor(rules: readonly Rule[], repo: string): SignatureGateRule[] {
  return rules.filter((r): r is SignatureGateRule => r.kind === "signature-gate" && r.repositories.some((g) => matchGlob(g, repo)));
}

/** Distinct keys of `gate` among `signers` (names of the keys that verified a signature). */
export function gateCount(gate: GateRequirement, signers: readonly string[]): number {
  return new Set(signers.filter((s) => gate.keys.includes(s))).size;
}

/** The first gate not met by `signers`, with its count; null when all are met. */
export function unmetGate<G extends GateRequirement>(gates: readonly G[], signers: readonly string[]): { gate: G; found: number } | null {
  for (const gate of gates) {
    const found = gateCount(gate, signers);
    if (found < gate.minimum) return { gate, found };
  }
  return null;
}

// ---- reverse links and gate requirements (docs/signatures.md, ADR 0019 "Session 4") -----------

/**
 * The image repositories whose signature-repository links name `sigRepo` (the reverse of
 * linkedRepositories), at most MAX_SIGNATURE_LINKS, used to record attestations where a signature
 * pushed into `sigRepo` counts. A template is inverted by matching `sigRepo` against it with each
 * {N} standing for its wildcard's pattern and {repo} for any name, then substituting the captures
 * into the glob. Limits: a glob wildcard the template does not use cannot be recovered (the link is
 * many-to-one), so such a link is skipped; a template whose placeholders touch without a literal
 * between them has several splits and only the first one the matcher finds is tried. Every
 * candidate is checked by the forward mapping, so a wrong inversion is dropped, never recorded into.
 */
export function reverseLinkedRepositories(rules: readonly Rule[], sigRepo: string, isValidName: (n: string) => boolean): string[] {
  const out: string[] = [];
  for (const r of rules) {
    if (r.kind !== "signature-repository") continue;
    for (const g of r.repositories) {
      const candidate = invertLink(g, r.target, sigRepo);
      if (candidate === null || candidate === sigRepo || out.includes(candidate) || !isValidName(candidate)) continue;
      if (linkedRepositories(rules, candidate, isValidName).includes(sigRepo)) out.push(candidate);
      if (out.length >= MAX_SIGNATURE_LINKS) return out;
    }
  }
  return out;
}

/** The repository `glob` + `target` maps onto `sigRepo`, or null when none or not unique (see above). */
function invertLink(glob: string, target: string, sigRepo: string): string | null {
  const wild = glob.match(/\*+/g) ?? [];
  const used = new Set<number>();
  let src = "^";
  const order: string[] = [];
  for (const part of target.split(/(\{[1-9]\}|\{repo\})/)) {
    if (part === "") continue;
    const ph = /^\{([1-9]|repo)\}$/.exec(part);
    if (!ph) {
      src += part.replace(/[\\^$.|?*+()[\]{}]/g, "\\$&");
      continue;
    }
    if (ph[1] === "repo") src += "(.+)";
    else {
      const k = Number(ph[1]);
      if (k > wild.length) return null;
      used.add(k);
      src += wild[k - 1].length > 1 ? "(.*)" : "([^/]*)";
    }
    order.push(ph[1]);
  }
  const m = new RegExp(src + "$").exec(sigRepo);
  if (!m) return null;
  const got = new Map<string, string>();
  for (const [i, key] of order.entries()) {
    const v = m[i + 1];
    if (got.has(key) && got.get(key) !== v) return null; // a placeholder used twice must agree
    got.set(key, v);
  }
  if (got.has("repo")) return globToRegExp(glob).test(got.get("repo")!) ? got.get("repo")! : null;
  if (used.size !== wild.length) return null;
  let i = 0;
  return glob.replace(/\*+/g, () => got.get(String(++i)) ?? "");
}

/** What a gated pull checks: the gate (id, keys, minimum). */
export type GateRequirement = Pick<SignatureGateRule, "id" | "keys" | "minimum">;

/**
 * The signature gates of `repo` and the repositories whose signatures count for them (`repo` and
 * its current links), or null when no gate covers it: what the token service embeds in an access
 * token so that a gated Bearer pull needs no policy lookup.
 */
export function gateRequirements(rules: readonly Rule[], repo: string, isValidName: (n: string) => boolean): { gates: GateRequirement[]; links: string[] } | null {
  const gates = signatureGatesFor(rules, repo);
  if (!gates.length) return null;
  return { gates: gates.map((g) => ({ id: g.id, keys: g.keys, minimum: g.minimum })), links: linkedRepositories(rules, repo, isValidName) };
}
