import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyModule, computeDelta } from '../engine/lora/delta.ts';
import { parseLoraTensors } from '../engine/lora/parse.ts';
import { kohyaPathToDotted } from '../engine/lora/names.ts';
import type { F32Tensor, LoraModule } from '../engine/lora/types.ts';

// Independent references: each ΔW is computed from its defining index formula in float64, element by element.

let seed = 12345;
function rand(shape: number[]): F32Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    data[i] = seed / 2147483648 - 0.5;
  }
  return { shape, data };
}

function close(actual: Float32Array, expected: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const e = Math.abs(actual[i]! - expected[i]!) / (1 + Math.abs(expected[i]!));
    worst = Math.max(worst, e);
  }
  assert.ok(worst <= tol, `${what}: max error ${worst}`);
}

function module(kind: LoraModule['kind'], tensors: Record<string, F32Tensor>, scale: number, extra: Partial<LoraModule> = {}): LoraModule {
  return { name: 'lora_unet_test', part: 'unet', path: 'test', kind, tensors, scale, ...extra };
}

test('LoCon 3x3: ΔW[o,i,y,x] = s·Σ_r up[o,r]·down[r,i,y,x]', () => {
  const [out, inn, r, k] = [5, 3, 2, 3];
  const up = rand([out, r, 1, 1]), down = rand([r, inn, k, k]);
  const d = computeDelta(module('locon', { up, down }, 0.5), [out, inn, k, k]);
  const ref: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) {
    let s = 0;
    for (let q = 0; q < r; q++) s += up.data[o * r + q]! * down.data[((q * inn + i) * k + y) * k + x]!;
    ref.push(0.5 * s);
  }
  close(d, ref, 'locon');
});

test('Tucker (lora_mid): ΔW[o,i,y,x] = Σ_{n,m} mid[n,m,y,x]·up[o,n]·down[m,i]', () => {
  const [out, inn, r, k] = [4, 3, 2, 3];
  const up = rand([out, r, 1, 1]), down = rand([r, inn, 1, 1]), mid = rand([r, r, k, k]);
  const d = computeDelta(module('locon', { up, down, mid }, 1), [out, inn, k, k]);
  const ref: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) {
    let s = 0;
    for (let n = 0; n < r; n++) for (let m = 0; m < r; m++) s += mid.data[((n * r + m) * k + y) * k + x]! * up.data[o * r + n]! * down.data[m * inn + i]!;
    ref.push(s);
  }
  close(d, ref, 'tucker');
});

test('1x1 conv LoRA on a Linear target (and the reverse) only needs equal element counts', () => {
  const up = rand([6, 2, 1, 1]), down = rand([2, 4, 1, 1]);
  const a = computeDelta(module('lora', { up, down }, 1), [6, 4]);
  const b = computeDelta(module('lora', { up: { shape: [6, 2], data: up.data }, down: { shape: [2, 4], data: down.data } }, 1), [6, 4, 1, 1]);
  assert.deepEqual(a, b);
  assert.throws(() => computeDelta(module('lora', { up, down }, 1), [6, 5]), /lora_unet_test gives 24 values/);
});

test('LoHa: ΔW = (w1a@w1b) ⊙ (w2a@w2b), and with Tucker cores', () => {
  const [out, inn, r] = [4, 5, 3];
  const a1 = rand([out, r]), b1 = rand([r, inn]), a2 = rand([out, r]), b2 = rand([r, inn]);
  const d = computeDelta(module('loha', { hada_w1_a: a1, hada_w1_b: b1, hada_w2_a: a2, hada_w2_b: b2 }, 2), [out, inn]);
  const ref: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) {
    let s1 = 0, s2 = 0;
    for (let q = 0; q < r; q++) {
      s1 += a1.data[o * r + q]! * b1.data[q * inn + i]!;
      s2 += a2.data[o * r + q]! * b2.data[q * inn + i]!;
    }
    ref.push(2 * s1 * s2);
  }
  close(d, ref, 'loha');

  // einsum('ijkl,jr,ip->prkl', t, wb, wa) with wa [R, out], wb [R, in]
  const k = 3;
  const t1 = rand([r, r, k, k]), t2 = rand([r, r, k, k]);
  const ta1 = rand([r, out]), tb1 = rand([r, inn]), ta2 = rand([r, out]), tb2 = rand([r, inn]);
  const dt = computeDelta(module('loha', { hada_w1_a: ta1, hada_w1_b: tb1, hada_w2_a: ta2, hada_w2_b: tb2, hada_t1: t1, hada_t2: t2 }, 1), [out, inn, k, k]);
  const cp = (t: F32Tensor, wb: F32Tensor, wa: F32Tensor, p: number, q: number, y: number, x: number) => {
    let s = 0;
    for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) s += t.data[((i * r + j) * k + y) * k + x]! * wb.data[j * inn + q]! * wa.data[i * out + p]!;
    return s;
  };
  const reft: number[] = [];
  for (let p = 0; p < out; p++) for (let q = 0; q < inn; q++) for (let y = 0; y < k; y++) for (let x = 0; x < k; x++)
    reft.push(cp(t1, tb1, ta1, p, q, y, x) * cp(t2, tb2, ta2, p, q, y, x));
  close(dt, reft, 'loha tucker');
});

test('LoKr: ΔW = kron(w1, w2), for Linear and for conv (w1 gets 1x1 dims)', () => {
  const w1 = rand([2, 3]), w2a = rand([4, 2]), w2b = rand([2, 5]);
  const d = computeDelta(module('lokr', { lokr_w1: w1, lokr_w2_a: w2a, lokr_w2_b: w2b }, 1), [8, 15]);
  const w2 = (p: number, q: number) => { let s = 0; for (let z = 0; z < 2; z++) s += w2a.data[p * 2 + z]! * w2b.data[z * 5 + q]!; return s; };
  const ref: number[] = [];
  for (let row = 0; row < 8; row++) for (let col = 0; col < 15; col++)
    ref.push(w1.data[Math.floor(row / 4) * 3 + Math.floor(col / 5)]! * w2(row % 4, col % 5));
  close(d, ref, 'lokr linear');

  const c1 = rand([2, 2]), c2 = rand([3, 2, 3, 3]);
  const dc = computeDelta(module('lokr', { lokr_w1: c1, lokr_w2: c2 }, 1), [6, 4, 3, 3]);
  const refc: number[] = [];
  for (let o = 0; o < 6; o++) for (let i = 0; i < 4; i++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++)
    refc.push(c1.data[Math.floor(o / 3) * 2 + Math.floor(i / 2)]! * c2.data[(((o % 3) * 2 + (i % 2)) * 3 + y) * 3 + x]!);
  close(dc, refc, 'lokr conv');
});

test('LoKr scale: alpha/dim when a factor is decomposed, 1 when neither is', () => {
  const alpha = { shape: [], data: new Float32Array([4]) };
  const p1 = parseLoraTensors(new Map([
    ['lora_unet_x_to_q.lokr_w1', rand([2, 2])], ['lora_unet_x_to_q.lokr_w2_a', rand([3, 2])],
    ['lora_unet_x_to_q.lokr_w2_b', rand([2, 3])], ['lora_unet_x_to_q.alpha', alpha],
  ]), {});
  assert.equal(p1.modules[0]!.kind, 'lokr');
  assert.equal(p1.modules[0]!.scale, 2);
  const p2 = parseLoraTensors(new Map([['lora_unet_x_to_q.lokr_w1', rand([2, 2])], ['lora_unet_x_to_q.lokr_w2', rand([3, 3])], ['lora_unet_x_to_q.alpha', alpha]]), {});
  assert.equal(p2.modules[0]!.scale, 1);
});

test('DoRA (A1111 dora_scale [1,in]): W + m·(W″ − W), W″ = (W + sΔW)·dora/‖W + sΔW‖ per input column', () => {
  const [out, inn, r] = [4, 3, 2];
  const W = rand([out, inn]), up = rand([out, r]), down = rand([r, inn]), dora = rand([1, inn]);
  const w = W.data.slice();
  applyModule(w, [out, inn], module('lora', { up, down }, 1.5, { dora: { magnitude: dora, axis: 'in' } }), 0.7);
  const wp: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) {
    let s = 0;
    for (let q = 0; q < r; q++) s += up.data[o * r + q]! * down.data[q * inn + i]!;
    wp.push(W.data[o * inn + i]! + 1.5 * s);
  }
  const ref: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) {
    let n = 0;
    for (let oo = 0; oo < out; oo++) n += wp[oo * inn + i]! ** 2;
    const w2 = wp[o * inn + i]! * dora.data[i]! / Math.sqrt(n);
    ref.push(W.data[o * inn + i]! + 0.7 * (w2 - W.data[o * inn + i]!));
  }
  close(w, ref, 'dora in');

  // PEFT lora_magnitude_vector [out]: norm per output row.
  const mag = rand([out]);
  const w3 = W.data.slice();
  applyModule(w3, [out, inn], module('lora', { up, down }, 1.5, { dora: { magnitude: mag, axis: 'out' } }), 1);
  const ref3: number[] = [];
  for (let o = 0; o < out; o++) {
    let n = 0;
    for (let i = 0; i < inn; i++) n += wp[o * inn + i]! ** 2;
    for (let i = 0; i < inn; i++) ref3.push(wp[o * inn + i]! * mag.data[o]! / Math.sqrt(n));
  }
  close(w3, ref3, 'dora out');
});

test('parse: every naming scheme gives the same module path; unknown keys are listed, not thrown', () => {
  const d = rand([2, 4]), u = rand([4, 2]);
  const path = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0';
  const variants: [string, string][] = [
    ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_down.weight', '.lora_up.weight'],
    [`unet.${path}.lora_A.weight`, '.lora_B.weight'],
    [`unet.${path}.lora.down.weight`, '.lora.up.weight'],
    [`unet.${path}.lora_A.default.weight`, '.lora_B.default.weight'],
    [`${path}.lora_linear_layer.down.weight`, '.lora_linear_layer.up.weight'],
  ];
  // ComfyUI names modules by LDM path; the target index resolves those by the LDM key itself.
  const comfy = parseLoraTensors(new Map([['diffusion_model.input_blocks.1.1.proj_in.lora_A.weight', d], ['diffusion_model.input_blocks.1.1.proj_in.lora_B.weight', u]]), {});
  assert.deepEqual([comfy.modules[0]!.part, comfy.modules[0]!.path], ['unet', 'input_blocks.1.1.proj_in']);
  for (const [downKey, upSuffix] of variants) {
    const module = downKey.slice(0, downKey.lastIndexOf('.lora'));
    const p = parseLoraTensors(new Map([[downKey, d], [module + upSuffix, u], ['junk.tensor', d]]), {});
    assert.equal(p.modules.length, 1, downKey);
    assert.equal(p.modules[0]!.path, path, downKey);
    assert.equal(p.modules[0]!.part, 'unet');
    assert.deepEqual(p.unknownKeys, ['junk.tensor']);
  }
  const attnProcs = parseLoraTensors(new Map([
    ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight', d],
    ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight', u],
  ]), {});
  assert.equal(attnProcs.modules[0]!.path, path);
  const te = parseLoraTensors(new Map([['text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight', d], ['text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight', u]]), {});
  assert.equal(te.modules[0]!.part, 'te');
  assert.equal(te.modules[0]!.path, 'text_model.encoder.layers.0.mlp.fc1');
});

test('parse: scale from alpha/r, from PEFT metadata (incl. alpha_pattern, rslora), 1 without alpha', () => {
  const d = rand([4, 8]), u = rand([8, 4]);
  const k = 'lora_unet_mid_block_attentions_0_proj_in';
  const withAlpha = parseLoraTensors(new Map([[`${k}.lora_down.weight`, d], [`${k}.lora_up.weight`, u], [`${k}.alpha`, { shape: [], data: new Float32Array([2]) }]]), {});
  assert.equal(withAlpha.modules[0]!.scale, 0.5);
  const noAlpha = parseLoraTensors(new Map([[`${k}.lora_down.weight`, d], [`${k}.lora_up.weight`, u]]), {});
  assert.equal(noAlpha.modules[0]!.scale, 1);
  const pk = 'unet.mid_block.attentions.0.proj_in';
  const meta = (o: object) => ({ lora_adapter_metadata: JSON.stringify(o) });
  const peft = (m: Record<string, string>) => parseLoraTensors(new Map([[`${pk}.lora_A.weight`, d], [`${pk}.lora_B.weight`, u]]), m).modules[0]!.scale;
  assert.equal(peft(meta({ 'unet.r': 4, 'unet.lora_alpha': 16 })), 4);
  assert.equal(peft(meta({ 'unet.r': 4, 'unet.lora_alpha': 16, 'unet.alpha_pattern': { proj_in: 2 } })), 0.5);
  assert.equal(peft(meta({ 'unet.r': 4, 'unet.lora_alpha': 16, 'unet.use_rslora': true })), 8);
  assert.equal(peft({}), 1);
});

test('parse: bundled embeddings are listed apart; unsupported LyCORIS kinds (GLoRA, OFT) are unknown keys', () => {
  const d = rand([2, 4]), u = rand([4, 2]);
  const p = parseLoraTensors(new Map([
    ['lora_unet_mid_block_attentions_0_proj_in.lora_down.weight', d],
    ['lora_unet_mid_block_attentions_0_proj_in.lora_up.weight', u],
    ['bundle_emb.mychar.string_to_param.*', rand([2, 8])],
    ['lora_unet_mid_block_attentions_0_proj_out.a1.weight', rand([4, 2])],
    ['lora_unet_mid_block_attentions_0_to_q.oft_blocks', rand([2, 2, 2])],
    ['lora_unet_mid_block_attentions_0_to_k.weight', rand([4])],
  ]), {});
  assert.equal(p.modules.length, 1);
  assert.deepEqual(p.bundledEmbeddings, ['mychar']);
  assert.deepEqual(p.unknownKeys, [
    'lora_unet_mid_block_attentions_0_proj_out.a1.weight',
    'lora_unet_mid_block_attentions_0_to_k.weight',
    'lora_unet_mid_block_attentions_0_to_q.oft_blocks',
  ]);
});

test('IA3: W += m·(W ⊙ w), w per output row, or per input column with on_input', () => {
  const W = rand([3, 4]);
  for (const onInput of [0, 1]) {
    const w = rand([onInput ? 4 : 3]);
    const p = parseLoraTensors(new Map([
      ['lora_te_text_model_encoder_layers_0_mlp_fc1.weight', w],
      ['lora_te_text_model_encoder_layers_0_mlp_fc1.on_input', { shape: [], data: new Float32Array([onInput]) }],
    ]), {});
    assert.equal(p.modules[0]!.kind, 'ia3');
    const got = W.data.slice();
    applyModule(got, [3, 4], p.modules[0]!, 0.5);
    const ref: number[] = [];
    for (let o = 0; o < 3; o++) for (let i = 0; i < 4; i++) ref.push(W.data[o * 4 + i]! * (1 + 0.5 * w.data[onInput ? i : o]!));
    close(got, ref, `ia3 on_input=${onInput}`);
  }
});

test("kohya's flattened names turn back into dotted paths for every SD1/SD2/SDXL module kind", () => {
  const cases = [
    'down_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj',
    'down_blocks.1.resnets.0.conv_shortcut',
    'down_blocks.0.downsamplers.0.conv',
    'up_blocks.1.upsamplers.0.conv',
    'mid_block.resnets.1.time_emb_proj',
    'up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0',
    'time_embedding.linear_1',
    'conv_in',
    'text_model.encoder.layers.11.self_attn.out_proj',
    'text_model.encoder.layers.0.mlp.fc2',
    'input_blocks.4.1.transformer_blocks.1.attn2.to_k',
    'input_blocks.1.0.in_layers.2',
    'input_blocks.3.0.op',
    'output_blocks.2.2.conv',
    'middle_block.2.emb_layers.1',
    'input_blocks.4.0.skip_connection',
    'label_emb.0.0',
  ];
  for (const c of cases) assert.equal(kohyaPathToDotted(c.replaceAll('.', '_')), c);
});

test('a 4-channel conv_in LoRA on a 9-channel inpainting conv_in changes only the first 4 input channels', () => {
  const [out, r, k] = [5, 2, 3];
  const up = rand([out, r, 1, 1]), down = rand([r, 4, k, k]);
  const W = rand([out, 9, k, k]);
  const got = W.data.slice();
  applyModule(got, [out, 9, k, k], module('locon', { up, down }, 1), 2);
  const d = computeDelta(module('locon', { up, down }, 1), [out, 4, k, k]);
  const ref: number[] = [];
  for (let o = 0; o < out; o++) for (let i = 0; i < 9; i++) for (let yx = 0; yx < k * k; yx++) {
    const base = W.data[(o * 9 + i) * k * k + yx]!;
    ref.push(i < 4 ? base + 2 * d[(o * 4 + i) * k * k + yx]! : base);
  }
  close(got, ref, 'padded conv_in');
});
