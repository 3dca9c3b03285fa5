// A seeded PRNG (mulberry32) so the corpus is the same on every run and a failure reproduces.
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  hex(n: number): string {
    let s = "";
    for (let i = 0; i < n; i++) s += "0123456789abcdef"[this.int(0, 15)];
    return s;
  }
  /** A syntactically valid repository name component. */
  component(): string {
    const alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
    let s = "";
    const n = this.int(1, 8);
    for (let i = 0; i < n; i++) s += alnum[this.int(0, alnum.length - 1)];
    return s;
  }
}
