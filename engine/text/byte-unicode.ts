/**
 * GPT-2 / CLIP byte-level alphabet: every byte maps to one printable unicode character, so BPE works on
 * strings without whitespace or control characters. Printable latin-1 bytes map to themselves; the rest
 * are numbered from U+0100 upward in byte order.
 */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const table: string[] = new Array(256);
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = keep(b) ? String.fromCharCode(b) : String.fromCharCode(256 + next++);
  }
  return table;
})();

const encoder = new TextEncoder();

export function bytesToSymbols(text: string): string[] {
  return Array.from(encoder.encode(text), (b) => BYTE_TO_UNICODE[b]!);
}
