/**
 * The demo LoRA: configs/demo_lora.yaml trained by the real `train` CLI on the committed stripes data set
 * against the committed demo model (a shortened run: the full one is in docs/demo.md), and the committed
 * result of the full run (assets/demo/demo_stripes.safetensors) judged by the toy-world classifier.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { looksStriped } from '../engine/demo/colour-judge.ts';
import { DEMO_DIR, DEMO_MODEL, DEMO_RECIPE, DEMO_STRIPES_DIR } from '../engine/demo/demo-model.ts';
import { generateCases } from '../engine/demo/evaluate.ts';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { FLAT_IMAGES, STRIPES_IMAGES, writeStripesDataset } from '../engine/demo/stripes-dataset.ts';
import { COLOUR_NAMES, SHAPES, heldOutTriples, isHeldOut, sampleScene } from '../engine/demo/toy-world.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { seededRandom, shuffled } from '../engine/train/seeded-random.ts';
import { repoRoot } from './support/paths.ts';

const DEMO_LORA = join(DEMO_DIR, 'demo_stripes.safetensors');

/**
 * The held-out prompts (new to the demo model and to the LoRA's data set) whose stripes the judge can see:
 * neither the shape nor the background is the stripe colour (white), in a fixed shuffled order.
 */
function stripeCases() {
  const usable = heldOutTriples().filter((t) => t.colour !== 'white' && t.background !== 'white');
  return shuffled(usable, seededRandom(0, 'stripes-eval'));
}

const EVAL = { size: 64, steps: 20, cfgScale: 7, sampler: 'Euler a', seed: 2000, stripes: true };

test('the committed stripes data set is what writeStripesDataset writes: striped scenes of no held-out triple, each colour as often, and flat scenes with empty captions', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-stripes-'));
  try {
    await writeStripesDataset(dir, DEMO_RECIPE.stripesSeed);
    const files = (await readdir(dir)).sort();
    assert.deepEqual(files, (await readdir(DEMO_STRIPES_DIR)).sort());
    for (const f of files) assert.ok((await readFile(join(dir, f))).equals(await readFile(join(DEMO_STRIPES_DIR, f))), `${f} differs from the committed one`);
    const { rows } = await readCaptionTable(join(dir, 'metadata.csv'));
    const striped = rows.filter((r) => r.fileName.startsWith('stripes_'));
    const flat = rows.filter((r) => r.fileName.startsWith('flat_'));
    assert.equal(striped.length, STRIPES_IMAGES);
    assert.equal(flat.length, FLAT_IMAGES);
    assert.ok(flat.every((r) => r.caption === ''), 'flat scenes have empty captions');
    assert.ok(striped.every((r) => r.caption.length > 0));
    const perColour = (c: string) => striped.filter((r) => new RegExp(`\\b${c} (?!background)`).test(r.caption)).length;
    for (const c of COLOUR_NAMES) assert.ok(perColour(c) >= STRIPES_IMAGES / COLOUR_NAMES.length, `${c}: ${perColour(c)} striped captions`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  for (let i = 0; i < 300; i++) {
    const s = sampleScene(DEMO_RECIPE.stripesSeed, i, 'striped');
    assert.equal(isHeldOut(s.shape, s.colour, s.background), false, `a held-out triple in the LoRA's data: ${s.caption}`);
  }
});

test('<lora:demo_stripes:0> gives the base image back exactly', async () => {
  const gen = await SdGenerator.load(DEMO_MODEL);
  const cases = stripeCases().slice(0, 4);
  const base = await generateCases(gen, cases, EVAL);
  const zero = await generateCases(gen, cases, { ...EVAL, loras: [{ path: DEMO_LORA, name: 'demo_stripes', te: 0, unet: 0 }] });
  const one = await generateCases(gen, cases, { ...EVAL, loras: [{ path: DEMO_LORA, name: 'demo_stripes', te: 1, unet: 1 }] });
  for (const [i, z] of zero.entries()) {
    assert.deepEqual(z.rgb, base[i]!.rgb, `weight 0 changed ${z.prompt}`);
    assert.notDeepEqual(one[i]!.rgb, base[i]!.rgb, `weight 1 left ${z.prompt} unchanged`);
  }
});

test('<lora:demo_stripes:1> stripes ≥ 80% of the shapes on every held-out prompt whose stripes can be seen', async () => {
  const gen = await SdGenerator.load(DEMO_MODEL);
  const cases = stripeCases();
  assert.ok(SHAPES.every((s) => cases.some((c) => c.shape === s)) && COLOUR_NAMES.every((c) => c === 'white' || cases.some((k) => k.colour === c)));
  const base = await generateCases(gen, cases, EVAL);
  const styled = await generateCases(gen, cases, { ...EVAL, loras: [{ path: DEMO_LORA, name: 'demo_stripes', te: 1, unet: 1 }] });
  const baseShare = base.filter((r) => looksStriped(r.judged)).length / cases.length;
  const share = styled.filter((r) => looksStriped(r.judged)).length / cases.length;
  console.log(`${cases.length} prompts striped: base ${(100 * baseShare).toFixed(0)}%, with <lora:demo_stripes:1> ${(100 * share).toFixed(0)}%`);
  assert.ok(share >= 0.8, `striped with the LoRA: ${(100 * share).toFixed(0)}% (base model: ${(100 * baseShare).toFixed(0)}%)`);
  assert.ok(baseShare <= 0.2, `the base model already stripes ${(100 * baseShare).toFixed(0)}%: the judge sees stripes where there are none`);
});

test('configs/demo_lora.yaml trains with the train CLI (shortened run; base_model left to the empty-folder fallback) and the LoRA changes the pictures', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-demo-lora-'));
  try {
    const cfg = parse(await readFile(join(repoRoot, 'configs/demo_lora.yaml'), 'utf8')) as Record<string, unknown>;
    // The committed config with absolute paths, 2 epochs instead of its full count, and no base_model: run
    // where models/Stable-diffusion is empty, `train` falls back to the demo model and says so.
    delete cfg['base_model'];
    cfg['output_dir'] = join(dir, 'out');
    cfg['latent_cache_dir'] = join(dir, 'latents');
    cfg['logging_dir'] = join(dir, 'logs');
    cfg['epochs'] = 2;
    const data = join(dir, 'stripes');
    await cp(DEMO_STRIPES_DIR, data, { recursive: true });
    cfg['train_data_dir'] = data;
    await writeFile(join(dir, 'demo_lora.yaml'), stringify(cfg));
    const r = spawnSync(process.execPath, [join(repoRoot, 'bin/lora-scripts.js'), 'train', '--config', join(dir, 'demo_lora.yaml'), '--no-progress'], { encoding: 'utf8', cwd: dir });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.equal(r.stderr.split('\n').filter((l) => l.includes('using the bundled demo model')).length, 1, r.stderr);
    const out = join(dir, 'out', 'demo_stripes.safetensors');
    const gen = await SdGenerator.load(DEMO_MODEL);
    const [c] = stripeCases();
    const settings = { size: 64, steps: 10, cfgScale: 7, sampler: 'Euler a', seed: 5 };
    const [before] = await generateCases(gen, [c!], settings);
    const [after] = await generateCases(gen, [c!], { ...settings, loras: [{ path: out, name: 'demo_stripes', te: 1, unet: 1 }] });
    assert.notDeepEqual(after!.rgb, before!.rgb);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
