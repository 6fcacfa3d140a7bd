import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, copyFile, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, dirname } from 'node:path';
import { repoRoot, fixturesDir } from './support/paths.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../engine/safetensors/index.ts';
import { inspectFile, renderText, groupByPrefix, type InspectReport } from '../engine/inspect/report.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');

function run(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function walk(d: string): string[] {
  return readdirSync(d).sort().flatMap((n) => {
    const p = join(d, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.safetensors') ? [p] : [];
  });
}

/** The kind each fixture must get, by where it lives; files outside these rules only need to inspect cleanly. */
function expectedKind(rel: string): string | undefined {
  const rules: Array<[RegExp, string]> = [
    [/(^|\/)golden\//, 'tensors'],
    [/lora-kohya\//, 'kohya-lora'],
    [/lora-diffusers\//, 'diffusers-lora'],
    [/diffusers\/unet\//, 'diffusers-unet'],
    [/diffusers\/vae\//, 'diffusers-vae'],
    [/diffusers\/text_encoder\//, 'diffusers-text-encoder'],
    [/llama-tiny\/model\//, 'llm'],
    [/(^|\/)lora\/adapter_model\.safetensors$/, 'peft-lora'],
    [/(^|\/)sd-tiny\.safetensors$/, 'sd-checkpoint'],
  ];
  return rules.find(([re]) => re.test(rel))?.[1];
}

const sorted = (xs: Array<number | null>) => [...xs].sort((a, b) => (a ?? -1) - (b ?? -1));
const expand = (cs: Array<{ value: number | null; count: number }>) => sorted(cs.flatMap((c) => Array(c.count).fill(c.value)));

/** Ranks and alphas per module, read here straight from the tensors / metadata / adapter config. */
async function expectedLora(path: string, kind: string): Promise<{ ranks: number[]; alphas: Array<number | null>; parts: Record<string, number> }> {
  const f = await SafetensorsFile.open(path);
  try {
    const ranks: number[] = [];
    const alphas: Array<number | null> = [];
    const parts: Record<string, number> = {};
    if (kind === 'kohya-lora') {
      for (const n of f.names().filter((k) => k.endsWith('.lora_down.weight'))) {
        const mod = n.slice(0, -'.lora_down.weight'.length);
        ranks.push(f.info(n).shape[0]!);
        alphas.push(f.has(`${mod}.alpha`) ? (await f.readFloat32(`${mod}.alpha`))[0]! : null);
        // SDXL files name their two text encoders lora_te1_ / lora_te2_.
        const part = mod.startsWith('lora_unet_') ? 'unet' : mod.startsWith('lora_te1_') ? 'text_encoder_1' : mod.startsWith('lora_te2_') ? 'text_encoder_2' : 'text_encoder';
        parts[part] = (parts[part] ?? 0) + 1;
      }
      if (f.metadata.ss_network_dim) assert.ok(ranks.every((r) => r === Number(f.metadata.ss_network_dim)), 'fixture: ss_network_dim');
      if (f.metadata.ss_network_alpha) assert.ok(alphas.every((a) => a === Number(f.metadata.ss_network_alpha)), 'fixture: ss_network_alpha');
    } else if (kind === 'diffusers-lora') {
      const meta = JSON.parse(f.metadata.lora_adapter_metadata ?? '{}') as Record<string, unknown>;
      for (const n of f.names().filter((k) => k.endsWith('.lora_A.weight'))) {
        const comp = n.split('.')[0]!;
        const r = f.info(n).shape[0]!;
        ranks.push(r);
        if (meta[`${comp}.r`] !== undefined) assert.equal(meta[`${comp}.r`], r, 'fixture: metadata r matches lora_A rows');
        alphas.push((meta[`${comp}.lora_alpha`] as number | undefined) ?? r);
        parts[comp] = (parts[comp] ?? 0) + 1;
      }
    } else {
      const cfg = JSON.parse(await readFile(join(dirname(path), 'adapter_config.json'), 'utf8')) as { r: number; lora_alpha: number };
      for (const n of f.names().filter((k) => k.endsWith('.lora_A.weight'))) {
        assert.equal(f.info(n).shape[0], cfg.r, 'fixture: adapter r matches lora_A rows');
        ranks.push(cfg.r);
        alphas.push(cfg.lora_alpha);
        parts.model = (parts.model ?? 0) + 1;
      }
    }
    return { ranks, alphas, parts };
  } finally {
    await f.close();
  }
}

test('`inspect --json` reads every fixture .safetensors and classifies it; LoRA rank/alpha match the files', async () => {
  const files = walk(fixturesDir);
  assert.ok(files.length > 0, `no .safetensors under ${fixturesDir}`);
  const r = await run('inspect', '--json', ...files);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  const reports = JSON.parse(r.stdout) as InspectReport[];
  assert.equal(reports.length, files.length);
  const seen = new Set<string>();
  for (const [i, file] of files.entries()) {
    const rep = reports[i]!;
    const rel = relative(fixturesDir, file);
    assert.equal(rep.file, file);
    const want = expectedKind(rel);
    if (want) assert.equal(rep.kind, want, `${rel} classified as ${rep.kind} (${rep.label})`);
    seen.add(rep.kind);
    const f = await SafetensorsFile.open(file);
    assert.deepEqual(rep.tensors.map((t) => t.name), f.names(), `${rel}: every tensor listed`);
    assert.deepEqual(rep.metadata, f.metadata, `${rel}: metadata`);
    await f.close();
    const f32Only = Object.keys(rep.dtypes).length === 1 && rep.dtypes.F32 !== undefined;
    if (f32Only) assert.equal(rep.parameters * 4, rep.bytes, `${rel}: parameter count agrees with the F32 data size`);
    if (rep.kind === 'kohya-lora' || rep.kind === 'diffusers-lora' || rep.kind === 'peft-lora') {
      assert.ok(rep.lora, `${rel}: LoRA summary`);
      const exp = await expectedLora(file, rep.kind);
      assert.equal(rep.lora.targets, exp.ranks.length, `${rel}: targets`);
      assert.deepEqual(expand(rep.lora.ranks), sorted(exp.ranks), `${rel}: ranks`);
      assert.deepEqual(expand(rep.lora.alphas), sorted(exp.alphas), `${rel}: alphas`);
      assert.deepEqual(rep.lora.parts, exp.parts, `${rel}: parts`);
    }
  }
  // The stock fixture set holds one of each of these; a different set (LORA_SCRIPTS_FIXTURES) may not.
  if (files.some((f) => f.endsWith('sd-tiny.safetensors'))) {
    for (const k of ['sd-checkpoint', 'kohya-lora', 'diffusers-lora', 'diffusers-unet', 'diffusers-vae', 'diffusers-text-encoder', 'tensors']) {
      assert.ok(seen.has(k), `no fixture classified as ${k}`);
    }
  }
});

test('`inspect` on a corrupted copy exits non-zero with a one-line error naming the file', async () => {
  const src = walk(fixturesDir).find((f) => /lora/.test(f)) ?? walk(fixturesDir)[0]!;
  const dir = await mkdtemp(join(tmpdir(), 'inspect-'));
  try {
    const truncated = join(dir, 'truncated.safetensors');
    await copyFile(src, truncated);
    const bytes = await readFile(truncated);
    await writeFile(truncated, bytes.subarray(0, bytes.length - 100));
    const badJson = join(dir, 'bad-json.safetensors');
    const b = Buffer.from(bytes);
    b[8] = 0x5b; // "[" instead of "{"
    await writeFile(badJson, b);
    const [r1, r2] = await Promise.all([run('inspect', truncated), run('inspect', '--json', badJson)]);
    for (const [r, p] of [[r1, truncated], [r2, badJson]] as const) {
      assert.notEqual(r.status, 0);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, /^error: /);
      assert.ok(lines[0]!.includes(p), lines[0]);
    }
    assert.match(r1.stderr, /truncated/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Synthetic files for formats the fixtures lack.
const f32 = (shape: number[], v = 0.5): TensorToWrite => ({ dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v) });
const f16Alpha = (a: number): TensorToWrite => ({ dtype: 'F16', shape: [], data: Uint16Array.of(a === 2 ? 0x4000 : a === 1 ? 0x3c00 : 0x4800) });

test('LyCORIS LoHa and LoKr files are recognised with rank and alpha read from the tensors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lyco-'));
  try {
    const loha = join(dir, 'loha.safetensors');
    const t: Record<string, TensorToWrite> = {};
    for (const [i, mod] of ['lora_unet_down_blocks_0_attentions_0_proj_in', 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q', 'lora_te_text_model_encoder_layers_0_mlp_fc1'].entries()) {
      const r = i === 0 ? 8 : 4;
      t[`${mod}.hada_w1_a`] = f32([16, r]);
      t[`${mod}.hada_w1_b`] = f32([r, 12]);
      t[`${mod}.hada_w2_a`] = f32([16, r]);
      t[`${mod}.hada_w2_b`] = f32([r, 12]);
      t[`${mod}.alpha`] = f16Alpha(2);
    }
    await writeSafetensors(loha, t, { ss_network_module: 'lycoris.kohya', ss_network_args: '{"algo": "loha"}' });
    const a = await inspectFile(loha);
    assert.equal(a.kind, 'lycoris');
    assert.match(a.label, /LoHa/);
    assert.deepEqual(a.lora?.algorithms, ['loha']);
    assert.equal(a.lora?.targets, 3);
    assert.deepEqual(a.lora?.parts, { unet: 2, text_encoder: 1 });
    assert.deepEqual(expand(a.lora!.ranks), [4, 4, 8]);
    assert.deepEqual(expand(a.lora!.alphas), [2, 2, 2]);
    assert.deepEqual(expand(a.lora!.scales), [0.25, 0.5, 0.5]);

    const lokr = join(dir, 'lokr.safetensors');
    await writeSafetensors(lokr, {
      // Decomposed second factor: dim = lokr_w2_b rows, alpha applies.
      'lora_unet_up_blocks_1_attentions_0_proj_out.lokr_w1': f32([4, 4]),
      'lora_unet_up_blocks_1_attentions_0_proj_out.lokr_w2_a': f32([8, 2]),
      'lora_unet_up_blocks_1_attentions_0_proj_out.lokr_w2_b': f32([2, 8]),
      'lora_unet_up_blocks_1_attentions_0_proj_out.alpha': f16Alpha(1),
      // Both factors full: no rank, scale 1 whatever alpha says.
      'lora_te1_text_model_encoder_layers_3_self_attn_k_proj.lokr_w1': f32([2, 2]),
      'lora_te1_text_model_encoder_layers_3_self_attn_k_proj.lokr_w2': f32([16, 16]),
      'lora_te1_text_model_encoder_layers_3_self_attn_k_proj.alpha': f16Alpha(8),
    });
    const k = await inspectFile(lokr);
    assert.equal(k.kind, 'lycoris');
    assert.match(k.label, /LoKr/);
    assert.deepEqual(k.lora?.parts, { unet: 1, text_encoder_1: 1 });
    assert.deepEqual(expand(k.lora!.ranks), [2]);
    assert.deepEqual(expand(k.lora!.alphas), [null, 1]);
    assert.deepEqual(expand(k.lora!.scales), [0.5]);
    assert.match(renderText(k), /LyCORIS \(LoKr\)[\s\S]*rank 2/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('LoRA edge cases: kohya without alpha, diffusers without metadata, PEFT alpha_pattern, mixed ranks', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-'));
  try {
    const kohya = join(dir, 'k.safetensors');
    await writeSafetensors(kohya, {
      'lora_unet_a_to_q.lora_down.weight': f32([4, 8]),
      'lora_unet_a_to_q.lora_up.weight': f32([8, 4]),
      'lora_unet_b_to_k.lora_down.weight': f32([2, 8]),
      'lora_unet_b_to_k.lora_up.weight': f32([8, 2]),
      'lora_unet_b_to_k.alpha': f16Alpha(1),
    });
    const k = await inspectFile(kohya);
    assert.equal(k.kind, 'kohya-lora');
    assert.deepEqual(expand(k.lora!.ranks), [2, 4]);
    assert.deepEqual(expand(k.lora!.alphas), [null, 1], 'missing .alpha reported as none');
    assert.deepEqual(expand(k.lora!.scales), [0.5, 1], 'no alpha means scale 1');
    assert.match(renderText(k), /rank 4 \(×1\), 2 \(×1\)|rank 2 \(×1\), 4 \(×1\)/);

    const diff = join(dir, 'd.safetensors');
    await writeSafetensors(diff, {
      'unet.down_blocks.0.attentions.0.proj_in.lora_A.weight': f32([6, 8]),
      'unet.down_blocks.0.attentions.0.proj_in.lora_B.weight': f32([8, 6]),
    });
    const d = await inspectFile(diff);
    assert.equal(d.kind, 'diffusers-lora');
    assert.deepEqual(expand(d.lora!.alphas), [6], 'diffusers assumes alpha = rank');
    assert.match(d.lora!.alphaSource, /assumes alpha = rank/);

    const adir = join(dir, 'adapter');
    const peft = join(adir, 'adapter_model.safetensors');
    await writeSafetensors(peft, {
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': f32([4, 8]),
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': f32([8, 4]),
      'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight': f32([4, 8]),
      'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight': f32([8, 4]),
    });
    await writeFile(join(adir, 'adapter_config.json'), JSON.stringify({ r: 4, lora_alpha: 16, alpha_pattern: { v_proj: 4 }, use_rslora: true }));
    const p = await inspectFile(peft);
    assert.equal(p.kind, 'peft-lora');
    assert.deepEqual(expand(p.lora!.alphas), [4, 16]);
    assert.deepEqual(expand(p.lora!.scales), [2, 8], 'rsLoRA: alpha / sqrt(r)');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('model layouts without fixtures: flattened CLIP keys, GPT-style LLM, SDXL checkpoint; large files print grouped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'layouts-'));
  try {
    const clip = join(dir, 'clip.safetensors');
    await writeSafetensors(clip, {
      'embeddings.token_embedding.weight': f32([10, 4]),
      'encoder.layers.0.self_attn.q_proj.weight': f32([4, 4]),
      'encoder.layers.1.self_attn.q_proj.weight': f32([4, 4]),
      'final_layer_norm.weight': f32([4]),
    });
    const c = await inspectFile(clip);
    assert.equal(c.kind, 'diffusers-text-encoder');
    assert.match(c.details.join(' '), /2 layers, hidden 4, vocab 10, keys without the text_model\. prefix/);

    const gpt = join(dir, 'gpt.safetensors');
    await writeSafetensors(gpt, { 'transformer.wte.weight': f32([50, 8]), 'transformer.h.0.attn.c_attn.weight': f32([8, 24]), 'transformer.h.1.attn.c_attn.weight': f32([8, 24]) });
    const g = await inspectFile(gpt);
    assert.equal(g.kind, 'llm');
    assert.match(g.details.join(' '), /2 layers, vocab 50, hidden 8/);

    const xl = join(dir, 'xl.safetensors');
    const t: Record<string, TensorToWrite> = {
      'model.diffusion_model.input_blocks.0.0.weight': f32([320, 4, 3, 3], 0),
      'conditioner.embedders.1.model.ln_final.weight': f32([8]),
      'first_stage_model.decoder.conv_in.weight': f32([8, 4, 1, 1]),
    };
    for (let i = 0; i < 70; i++) t[`model.diffusion_model.output_blocks.${i % 9}.${i}.weight`] = f32([2]);
    await writeSafetensors(xl, t);
    const x = await inspectFile(xl);
    assert.equal(x.kind, 'sd-checkpoint');
    assert.match(x.details.join(' '), /SDXL/);
    assert.match(x.details.join(' '), /in_channels 4, model_channels 320/);
    assert.equal(x.parameters, 320 * 4 * 9 + 8 + 32 + 140);
    const text = renderText(x);
    assert.match(text, /tensors by prefix/);
    assert.ok(!text.includes('output_blocks.3.30.weight'), 'grouped, not listed');
    assert.match(renderText(x, { all: true }), /output_blocks\.3\.30\.weight {2}F32 {2}\[2\]/);
    const groups = groupByPrefix(x.tensors);
    assert.ok(groups.length <= 30);
    assert.equal(groups.reduce((s, gr) => s + gr.tensors, 0), x.tensorCount);
    assert.equal(groups.reduce((s, gr) => s + gr.parameters, 0), x.parameters);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
