/**
 * The text cleaning CLIP's reference tokenizer (OpenAI CLIP / open_clip `SimpleTokenizer`) does before BPE:
 * `ftfy.fix_text`, `html.unescape` twice, strip, whitespace runs to one space, lower case. ftfy is a Python
 * library; `fixText` does the subset of its default fixes that changes prompts (see docs/text.md for what
 * differs). transformers' CLIPTokenizer with ftfy installed — what A1111 and ComfyUI call — does the same
 * minus the two explicit unescapes, which only matter for text with '<' in it.
 */
import { decodeHTML } from 'entities';

/** Windows-1252's characters for bytes 0x80–0x9F; bytes it leaves undefined keep their C1 code point, as ftfy's "sloppy" codec does. */
const CP1252_HIGH = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8DŽ\x8F\x90‘’“”•–—˜™š›œ\x9DžŸ';
const CP1252_BYTE = new Map<string, number>([...CP1252_HIGH].map((c, i) => [c, 0x80 + i]));

/** The byte a character was when UTF-8 text was misread as Windows-1252 / Latin-1, or -1. */
function misreadByte(ch: string): number {
  const b = CP1252_BYTE.get(ch);
  if (b !== undefined) return b;
  const c = ch.codePointAt(0)!;
  return c <= 0xff ? c : -1;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Length of the UTF-8 sequence a lead byte starts (2–4), or 0. */
function sequenceLength(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/**
 * Mojibake: UTF-8 bytes that were decoded as Windows-1252 ("cafÃ©", "donâ€™t"). Every run of characters that
 * re-encodes to a valid multi-byte UTF-8 sequence is decoded back; everything else is left alone.
 */
function fixMojibake(text: string): string {
  const chars = [...text];
  let out = '';
  for (let i = 0; i < chars.length; ) {
    const n = sequenceLength(misreadByte(chars[i]!));
    if (n && i + n <= chars.length) {
      const bytes = chars.slice(i, i + n).map(misreadByte);
      if (bytes.slice(1).every((b) => b >= 0x80 && b <= 0xbf)) {
        try {
          out += strictUtf8.decode(Uint8Array.from(bytes));
          i += n;
          continue;
        } catch {
          // overlong or surrogate: not UTF-8 after all
        }
      }
    }
    out += chars[i++];
  }
  return out;
}

/** C1 control characters left over are Windows-1252 characters read as Latin-1 (ftfy's fix_c1_controls). */
const fixC1 = (t: string) => t.replace(/[\x80-\x9f]/g, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80]!);

const LIGATURES: Record<string, string> = {
  Ĳ: 'IJ', ĳ: 'ij', ŉ: 'ʼn', Ǳ: 'DZ', ǲ: 'Dz', ǳ: 'dz', Ǆ: 'DŽ', ǅ: 'Dž', ǆ: 'dž', Ǉ: 'LJ', ǈ: 'Lj', ǉ: 'lj',
  Ǌ: 'NJ', ǋ: 'Nj', ǌ: 'nj', ﬀ: 'ff', ﬁ: 'fi', ﬂ: 'fl', ﬃ: 'ffi', ﬄ: 'ffl', ﬅ: 'ſt', ﬆ: 'st',
};

/** Full-width and half-width forms (U+FF01–U+FFEF) to their usual width; the ideographic space to a space. */
const fixWidth = (t: string) => t.replace(/[\u3000\uff01-\uffef]/g, (c) => (c === '\u3000' ? ' ' : c.normalize('NFKC')));

/** Characters ftfy deletes: C0 controls other than tab / line breaks / form feed, DEL, deprecated format chars, BOM, interlinear annotations. */
const CONTROL = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;
const TERMINAL_ESCAPE = /\x1b\[[\d;]*[A-Za-z]/g;
const ENTITY = /&#?[0-9A-Za-z]{1,24};/g;

/** ftfy.fix_text's default fixes that matter for prompts. */
export function fixText(text: string): string {
  let t = text;
  // ftfy leaves entities alone in text that looks like HTML.
  if (!t.includes('<')) t = t.replace(ENTITY, (e) => decodeHTML(e));
  t = t.replace(TERMINAL_ESCAPE, '');
  t = fixC1(fixMojibake(t));
  t = t.replace(/[Ĳĳŉ\u01c4-\u01ccǱǲǳ\ufb00-\ufb06]/g, (c) => LIGATURES[c] ?? c);
  t = fixWidth(t);
  t = t.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
  t = t.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
  t = t.replace(CONTROL, '');
  return t.normalize('NFC');
}

// Python's str whitespace is Unicode White_Space plus the information separators U+001C–U+001F.
const WHITESPACE = /[\p{White_Space}\x1c-\x1f]+/gu;

/** CLIP's full cleaning: fixText, HTML unescape twice, whitespace collapsed and trimmed, lower case. */
export function cleanClipText(text: string): string {
  const unescaped = decodeHTML(decodeHTML(fixText(text)));
  // Both Python's str.lower and toLowerCase apply Unicode's context rules (a final Σ becomes ς).
  return unescaped.replace(WHITESPACE, ' ').trim().toLowerCase();
}
