/**
 * A small classifier for toy-world pictures, by pixel colours alone: every pixel takes the nearest named
 * colour; the background is the commonest colour of the border; the shape is the commonest other colour among
 * the pixels whose four neighbours have their colour; a fill is striped when a good share of those pixels are
 * its stripe colour. It judges the demo model's (and the demo LoRA's) output against the prompt.
 *
 * Only such solid pixels count because a soft edge blends the two colours on either side of it, and a blend
 * is often nearest to a third named colour (red over blue: purple): a person sees a red shape with a soft
 * edge, not a purple one.
 */
import { COLOURS, COLOUR_NAMES, type ColourName } from './toy-world.ts';

export interface Judgement {
  background: ColourName;
  /** The shape's colour, or null when fewer than `minShapePixels` pixels differ from the background. */
  shape: ColourName | null;
  /** Solid pixels (see above) not of the background colour. */
  shapePixels: number;
  /** Share of those pixels that have the stripe colour `stripe` (0 when no stripe colour was given). */
  stripeShare: number;
}

export function nearestColour(r: number, g: number, b: number): ColourName {
  let best: ColourName = COLOUR_NAMES[0]!;
  let bestD = Infinity;
  for (const name of COLOUR_NAMES) {
    const [cr, cg, cb] = COLOURS[name];
    const d = (r - cr) ** 2 + (g - cg) ** 2 + (b - cb) ** 2;
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

function mode(counts: Map<ColourName, number>, except?: ColourName): ColourName | null {
  let best: ColourName | null = null;
  let n = 0;
  for (const [c, k] of counts) if (c !== except && k > n) [best, n] = [c, k];
  return best;
}

/**
 * Judges RGB bytes [size, size, 3]. `stripe`: the colour a striped fill alternates with (it is then not
 * counted as the shape's colour).
 */
export function judgeImage(rgb: Uint8Array, size: number, opts: { stripe?: ColourName; minShapePixels?: number } = {}): Judgement {
  const border = Math.max(1, Math.round(size / 32));
  const edge = new Map<ColourName, number>();
  const classes: ColourName[] = new Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = y * size + x;
      const c = nearestColour(rgb[i * 3]!, rgb[i * 3 + 1]!, rgb[i * 3 + 2]!);
      classes[i] = c;
      if (x < border || y < border || x >= size - border || y >= size - border) edge.set(c, (edge.get(c) ?? 0) + 1);
    }
  }
  const background = mode(edge)!;
  const inside = new Map<ColourName, number>();
  let shapePixels = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const c = classes[y * size + x]!;
      if (c === background) continue;
      const solid = (x === 0 || classes[y * size + x - 1] === c) && (x === size - 1 || classes[y * size + x + 1] === c) && (y === 0 || classes[(y - 1) * size + x] === c) && (y === size - 1 || classes[(y + 1) * size + x] === c);
      if (!solid) continue;
      shapePixels++;
      inside.set(c, (inside.get(c) ?? 0) + 1);
    }
  }
  const minPixels = opts.minShapePixels ?? Math.round((size * size) / 200);
  const stripeShare = opts.stripe && shapePixels > 0 ? (inside.get(opts.stripe) ?? 0) / shapePixels : 0;
  const shape = shapePixels >= minPixels ? mode(inside, opts.stripe) : null;
  return { background, shape, shapePixels, stripeShare };
}

/** Whether a judged picture shows a striped fill: between a tenth and nine tenths of the shape is stripe colour. */
export function looksStriped(j: Judgement): boolean {
  return j.shapePixels > 0 && j.stripeShare >= 0.1 && j.stripeShare <= 0.9;
}
