// Just enough tar for docker archives: an index of a tarball's regular files (name → byte range,
// read in place, never extracted), and a writer of plain ustar files. Understands ustar, pax
// `path`/`size` records and GNU long names, which is what `docker save` and skopeo write.
import { open } from "node:fs/promises";
import { RegistryError } from "../../lib/registry-client.mjs";

const BLOCK = 512;

function field(buf, off, len) {
  const s = buf.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z < 0 ? s : s.subarray(0, z)).toString("utf8");
}

function octal(buf, off, len, what) {
  if (buf[off] & 0x80) {
    // base-256 (GNU) for sizes ≥ 8 GiB
    let n = 0;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + buf[i];
    return n;
  }
  const t = field(buf, off, len).trim();
  const n = t === "" ? 0 : parseInt(t, 8);
  if (!Number.isFinite(n)) throw new RegistryError(`not a tar archive (bad ${what} field)`);
  return n;
}

const normalize = (name) => name.replace(/^(\.\/)+/, "").replace(/\/+$/, "");

/** name → { offset, size } of every regular file in the tarball at `path`. */
export async function indexTar(path) {
  const fh = await open(path, "r");
  const entries = new Map();
  try {
    const { size: total } = await fh.stat();
    const hdr = Buffer.alloc(BLOCK);
    let pos = 0;
    let longName = null;
    let pax = {};
    while (pos + BLOCK <= total) {
      const { bytesRead } = await fh.read(hdr, 0, BLOCK, pos);
      if (bytesRead < BLOCK) break;
      if (hdr.every((b) => b === 0)) break;
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : hdr[i];
      if (sum !== octal(hdr, 148, 8, "checksum")) throw new RegistryError(`${path}: not a tar archive (header checksum mismatch at byte ${pos})`);
      const type = String.fromCharCode(hdr[156] || 48);
      let size = octal(hdr, 124, 12, "size");
      const dataAt = pos + BLOCK;
      const readData = async () => {
        if (size > 1 << 20) throw new RegistryError(`${path}: oversized tar extension header`);
        const b = Buffer.alloc(size);
        await fh.read(b, 0, size, dataAt);
        return b;
      };
      if (type === "L") longName = (await readData()).toString("utf8").replace(/\0+$/, "");
      else if (type === "x") {
        const text = (await readData()).toString("utf8");
        for (const rec of text.split("\n")) {
          const m = /^\d+ ([^=]+)=(.*)$/s.exec(rec);
          if (m) pax[m[1]] = m[2];
        }
      } else if (type !== "g") {
        const prefix = field(hdr, 345, 155);
        let name = pax.path ?? longName ?? (prefix ? `${prefix}/${field(hdr, 0, 100)}` : field(hdr, 0, 100));
        if (pax.size !== undefined) size = Number(pax.size);
        if (type === "0" || type === "7") entries.set(normalize(name), { offset: dataAt, size });
        else if (type === "1" || type === "2") entries.set(normalize(name), { link: normalize(pax.linkpath ?? field(hdr, 157, 100)), size: 0 });
        longName = null;
        pax = {};
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
    }
  } finally {
    await fh.close();
  }
  // Resolve hard and symbolic links to files (docker save links repeated layers).
  for (const [name, e] of entries) {
    if (!e.link) continue;
    let t = e;
    for (let i = 0; t?.link && i < 8; i++) t = entries.get(t.link) ?? entries.get(normalize(new URL(t.link, `file:///${name}`).pathname.slice(1)));
    if (t && !t.link) entries.set(name, t);
    else entries.delete(name);
  }
  return entries;
}

/** A ustar header block for a regular file (names ≤ 100 bytes; ours are digests). */
export function tarHeader(name, size, mtime = 0) {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, "utf8");
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write(Math.floor(mtime).toString(8).padStart(11, "0") + "\0", 136);
  h.write("        ", 148);
  h.write("0", 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

export const tarPadding = (size) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
export const TAR_END = Buffer.alloc(BLOCK * 2);
