// Resumable streaming hashers backed by hash-wasm's compiled WebAssembly (see scripts/extract-wasm.mjs).
// Resumable matters: a chunked upload's PATCH requests may land on different isolates, so the
// hash state after each request is saved in the UploadSession and loaded by the next request.
import sha256Module from "./wasm/sha256.wasm";
import sha512Module from "./wasm/sha512.wasm";
import blake3Module from "./wasm/blake3.wasm";
import { toHex } from "../util/encoding";

export type HashAlgorithm = "sha256" | "sha512" | "blake3";

interface HashExports {
  memory: WebAssembly.Memory;
  Hash_GetBuffer(): number;
  Hash_Init(param: number): void;
  Hash_Update(length: number): void;
  Hash_Final(param: number): void;
  Hash_GetState(): number;
  STATE_SIZE: WebAssembly.Global;
}

const SPECS: Record<HashAlgorithm, { module: WebAssembly.Module; init: number; final: number; size: number; tag: number }> = {
  sha256: { module: sha256Module, init: 256, final: 0, size: 32, tag: 1 },
  sha512: { module: sha512Module, init: 512, final: 0, size: 64, tag: 2 },
  blake3: { module: blake3Module, init: 0, final: 32, size: 32, tag: 3 },
};

/** hash-wasm's I/O window inside WASM memory is 16 KiB. */
const WINDOW = 16 * 1024;
/** Saved state format: [version=1][algorithm tag][raw WASM state]. */
const STATE_VERSION = 1;

export class Hasher {
  private readonly x: HashExports;
  private view: Uint8Array;

  private constructor(readonly algorithm: HashAlgorithm) {
    const spec = SPECS[algorithm];
    this.x = new WebAssembly.Instance(spec.module, {}).exports as unknown as HashExports;
    this.view = new Uint8Array(this.x.memory.buffer, this.x.Hash_GetBuffer(), WINDOW);
    this.x.Hash_Init(spec.init);
  }

  static create(algorithm: HashAlgorithm): Hasher {
    return new Hasher(algorithm);
  }

  /** Restore a hasher from `save()` output. */
  static resume(algorithm: HashAlgorithm, state: Uint8Array): Hasher {
    const h = new Hasher(algorithm);
    const spec = SPECS[algorithm];
    if (state[0] !== STATE_VERSION || state[1] !== spec.tag) throw new Error(`hash state is not a ${algorithm} state`);
    const raw = state.subarray(2);
    if (raw.length !== h.stateSize()) throw new Error(`hash state has ${raw.length} bytes, expected ${h.stateSize()}`);
    new Uint8Array(h.x.memory.buffer, h.x.Hash_GetState(), raw.length).set(raw);
    return h;
  }

  update(data: Uint8Array): void {
    for (let off = 0; off < data.length; off += WINDOW) {
      const piece = data.subarray(off, Math.min(off + WINDOW, data.length));
      this.view.set(piece);
      this.x.Hash_Update(piece.length);
    }
  }

  save(): Uint8Array {
    const size = this.stateSize();
    const out = new Uint8Array(2 + size);
    out[0] = STATE_VERSION;
    out[1] = SPECS[this.algorithm].tag;
    out.set(new Uint8Array(this.x.memory.buffer, this.x.Hash_GetState(), size), 2);
    return out;
  }

  /** Finish and return lowercase hex. The hasher must not be used afterwards. */
  digestHex(): string {
    const spec = SPECS[this.algorithm];
    this.x.Hash_Final(spec.final);
    return toHex(this.view.subarray(0, spec.size));
  }

  private stateSize(): number {
    return new DataView(this.x.memory.buffer).getUint32(this.x.STATE_SIZE.value as number, true);
  }
}

export function hashHex(algorithm: HashAlgorithm, data: Uint8Array): string {
  const h = Hasher.create(algorithm);
  h.update(data);
  return h.digestHex();
}

/**
 * SHA-256 by workerd's native crypto.DigestStream, for a body that arrives whole in one request
 * (POST ?digest=, a PUT with the whole blob): no resumable state is needed there (ADR 0003), and
 * native hashing takes the JS thread ~4× less than the WASM one (docs/roundtrips.md "Speed").
 */
export class NativeSha256 {
  readonly algorithm = "sha256" as const;
  private readonly stream = new crypto.DigestStream("SHA-256");
  private readonly writer = this.stream.getWriter();
  private failed: unknown = null;

  update(data: Uint8Array): void {
    // The stream hashes as it accepts writes; a failure surfaces at digestHex().
    this.writer.write(data).catch((e: unknown) => { this.failed ??= e; });
  }

  async digestHex(): Promise<string> {
    await this.writer.close();
    if (this.failed) throw this.failed;
    return toHex(new Uint8Array(await this.stream.digest));
  }
}
