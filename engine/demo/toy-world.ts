/**
 * The "toy world" the demo model is trained on: flat shapes in named colours on flat coloured backgrounds,
 * at a few sizes, positions and counts, each picture with a plain-English caption. Everything is derived from
 * a seed, so the data set (and with it the demo model) can be made again bit for bit.
 */
import { seededRandom, type Random } from '../train/seeded-random.ts';

/** Named colours, far enough apart in RGB that the nearest one identifies a pixel. */
export const COLOURS = {
  red: [220, 30, 35],
  orange: [250, 135, 20],
  yellow: [245, 220, 40],
  green: [35, 165, 60],
  cyan: [40, 205, 225],
  blue: [30, 60, 215],
  purple: [130, 45, 175],
  pink: [250, 140, 200],
  white: [245, 245, 245],
  black: [20, 20, 25],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'diamond', 'hexagon'] as const;
export type ShapeName = (typeof SHAPES)[number];

/**
 * Radii as a fraction of the image. At 64² an f8 latent is 8×8: a medium shape spans about three latent
 * pixels, so the codec and the UNet have room to carry its colour apart from the background's.
 */
export const SIZES = { small: 0.15, medium: 0.21, large: 0.28 } as const;
export type SizeName = keyof typeof SIZES;

/** Where a lone shape sits, as a fraction of the image (centre x, centre y). */
export const POSITIONS = {
  'in the center': [0.5, 0.5],
  'in the top left corner': [0.3, 0.3],
  'in the top right corner': [0.7, 0.3],
  'in the bottom left corner': [0.3, 0.7],
  'in the bottom right corner': [0.7, 0.7],
  'on the left': [0.3, 0.5],
  'on the right': [0.7, 0.5],
} as const;
export type PositionName = keyof typeof POSITIONS;

/**
 * How a shape is filled. The base world only knows flat fills. 'striped' is the demo LoRA's style: horizontal
 * stripes one latent row tall (an eighth of the picture), on the latent grid, so each latent pixel holds one
 * colour. 'diagonal' stripes, 12 pixels per period at 64², are a texture the autoencoder learns besides flat
 * fills, so that it is a general codec; the UNet never sees either.
 */
export type Fill = 'flat' | 'striped' | 'diagonal';

export interface Scene {
  shape: ShapeName;
  colour: ColourName;
  background: ColourName;
  size: SizeName;
  count: 1 | 2 | 3;
  /** Named placement of a lone shape; undefined: placed at random (and not mentioned). */
  position?: PositionName;
  /** Shape centres in [0, 1]². */
  centres: [number, number][];
  fill: Fill;
  caption: string;
}

/** The colour of the second stripe: white, or black on white shapes. */
export function stripeColour(colour: ColourName): ColourName {
  return colour === 'white' ? 'black' : 'white';
}

const COUNT_WORDS = { 2: 'two', 3: 'three' } as const;

/** "a" or "an" before `word`, and the word. */
function a(word: string): string {
  return `${/^[aeiou]/.test(word) ? 'an' : 'a'} ${word}`;
}

/** The sentence a person would write for a scene; `variant` picks one of a few phrasings. */
export function captionFor(s: Omit<Scene, 'caption' | 'centres'>, variant = 0): string {
  const size = s.size === 'medium' ? '' : `${s.size} `;
  const noun = s.count === 1 ? s.shape : `${s.shape}s`;
  const subject = s.count === 1 ? a(`${size}${s.colour} ${noun}`) : `${COUNT_WORDS[s.count]} ${size}${s.colour} ${noun}`;
  const where = s.position ? ` ${s.position}` : '';
  const bg = a(`${s.background} background`);
  switch (variant % 3) {
    case 1:
      return `${subject}${where} against ${bg}`;
    case 2:
      return `${bg} with ${subject}${where}`;
    default:
      return `${subject}${where} on ${bg}`;
  }
}

/** The test prompt form, and the form the README uses: "a red star on a blue background". */
export function plainPrompt(shape: ShapeName, colour: ColourName, background: ColourName): string {
  return captionFor({ shape, colour, background, size: 'medium', count: 1, fill: 'flat' });
}

/** A scene's caption with its colours, shape and count alone (size and place left unsaid), in the test prompts' form. */
export function plainCaption(s: Omit<Scene, 'caption' | 'centres'>): string {
  return captionFor({ ...s, size: 'medium', position: undefined });
}

/**
 * Colour pairings kept out of training: every (shape, shape colour, background) triple whose hash falls in
 * one fifth. Prompts made of these triples never occur in a training caption, so they measure whether the
 * model composes colours and shapes instead of remembering captions.
 */
export function isHeldOut(shape: ShapeName, colour: ColourName, background: ColourName): boolean {
  const r = seededRandom(0, 'held-out', shape, colour, background)();
  return r < 0.2;
}

/** Every held-out triple, in a fixed order. */
export function heldOutTriples(): { shape: ShapeName; colour: ColourName; background: ColourName }[] {
  const out: { shape: ShapeName; colour: ColourName; background: ColourName }[] = [];
  for (const shape of SHAPES)
    for (const colour of COLOUR_NAMES)
      for (const background of COLOUR_NAMES) if (colour !== background && isHeldOut(shape, colour, background)) out.push({ shape, colour, background });
  return out;
}

function pick<T>(items: readonly T[], random: Random): T {
  return items[Math.min(items.length - 1, Math.floor(random() * items.length))]!;
}

/**
 * One training scene for (seed, index). `fill` 'striped' makes the LoRA data set's scenes and 'diagonal' the
 * autoencoder's textured ones (any triple: the autoencoder learns pixels, not pairings). Flat and striped
 * scenes are never a held-out triple, so the prompts that measure the demo model and the demo LoRA are new
 * to both.
 */
export function sampleScene(seed: number, index: number, fill: Fill = 'flat'): Scene {
  const random = seededRandom(seed, 'scene', index);
  for (;;) {
    const shape = pick(SHAPES, random);
    const colour = pick(COLOUR_NAMES, random);
    const background = pick(COLOUR_NAMES, random);
    if (colour === background) continue;
    if (fill !== 'diagonal' && isHeldOut(shape, colour, background)) continue;
    if (fill !== 'flat' && background === stripeColour(colour)) continue;
    const count = pick([1, 1, 1, 2, 3] as const, random);
    // Three shapes fit side by side only when small.
    const size: SizeName = count === 1 ? pick(['small', 'medium', 'medium', 'large'] as const, random) : count === 2 ? pick(['small', 'medium'] as const, random) : 'small';
    const position = count === 1 && random() < 0.6 ? pick(Object.keys(POSITIONS) as PositionName[], random) : undefined;
    const centres = placeShapes(count, SIZES[size], position, random);
    const base = { shape, colour, background, size, count, position, fill };
    return { ...base, centres, caption: captionFor(base, Math.floor(random() * 3)) };
  }
}

/** Centres for `count` shapes of radius `r`, inside the frame and not overlapping. */
function placeShapes(count: number, r: number, position: PositionName | undefined, random: Random): [number, number][] {
  if (position) return [[...POSITIONS[position]] as [number, number]];
  for (;;) {
    const out: [number, number][] = [];
    for (let i = 0; i < count; i++) out.push([r + random() * (1 - 2 * r), r + random() * (1 - 2 * r)]);
    const apart = out.every((a, i) => out.slice(i + 1).every((b) => Math.hypot(a[0] - b[0], a[1] - b[1]) > 2.1 * r));
    if (apart) return out;
  }
}

/** Whether the point (u, v), relative to a shape's centre in units of its radius, lies inside it. */
export function insideShape(shape: ShapeName, u: number, v: number): boolean {
  switch (shape) {
    case 'circle':
      return u * u + v * v <= 1;
    case 'square':
      return Math.abs(u) <= 0.82 && Math.abs(v) <= 0.82;
    case 'diamond':
      return Math.abs(u) + Math.abs(v) <= 1.05;
    case 'triangle':
      return insidePolygon(regularPolygon(3, 1.1, -Math.PI / 2), u, v + 0.15);
    case 'hexagon':
      return insidePolygon(regularPolygon(6, 1, 0), u, v);
    case 'star':
      return insidePolygon(STAR, u, v);
  }
}

function regularPolygon(n: number, r: number, phase: number): [number, number][] {
  return Array.from({ length: n }, (_, i) => [r * Math.cos(phase + (2 * Math.PI * i) / n), r * Math.sin(phase + (2 * Math.PI * i) / n)] as [number, number]);
}

/** Five points, inner radius 0.45 of the outer: the usual drawn star. */
const STAR: [number, number][] = Array.from({ length: 10 }, (_, i) => {
  const r = i % 2 === 0 ? 1.1 : 0.5;
  const a = -Math.PI / 2 + (Math.PI * i) / 5;
  return [r * Math.cos(a), r * Math.sin(a)] as [number, number];
});

function insidePolygon(pts: [number, number][], x: number, y: number): boolean {
  let inside = false;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    const [xi, yi] = pts[i]!;
    const [xj, yj] = pts[j]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/**
 * The scene as RGB bytes [size, size, 3] (row-major, interleaved), 2×2 supersampled so edges are smooth.
 * Stripes (see `Fill`): horizontal bands of size / 8 pixels, or diagonal ones 12 pixels per period at 64².
 */
export function renderScene(s: Scene, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  const bg = COLOURS[s.background];
  const fg = COLOURS[s.colour];
  const stripe = COLOURS[stripeColour(s.colour)];
  const r = SIZES[s.size];
  const band = size / 8;
  const period = (12 / 64) * size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const acc = [0, 0, 0];
      for (const [dy, dx] of [[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]] as const) {
        const px = (x + dx) / size;
        const py = (y + dy) / size;
        let c: readonly number[] = bg;
        for (const [cx, cy] of s.centres) {
          if (insideShape(s.shape, (px - cx) / r, (py - cy) / r)) {
            const second = s.fill === 'striped' ? Math.floor((y + dy) / band) % 2 === 1 : s.fill === 'diagonal' && Math.floor(((x + dx + y + dy) / period) % 2) === 1;
            c = second ? stripe : fg;
            break;
          }
        }
        for (let k = 0; k < 3; k++) acc[k]! += c[k]!;
      }
      for (let k = 0; k < 3; k++) out[(y * size + x) * 3 + k] = Math.round(acc[k]! / 4);
    }
  }
  return out;
}
