// `lora-scripts train --config` end to end as a subprocess on a generated dataset with the sd-tiny fixture:
// the kohya LoRA with ss_* metadata, TensorBoard events and JSON-lines logs, step saves pruned to keep_last_n,
// and the LoRA loading back through the `<lora:…>` merger with every module matched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { repoRoot } from './support/paths.ts';
import { writePatternDataset, tinyConfigYaml, SD_TINY } from './support/train-fixture.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraMerger } from '../engine/lora/merge.ts';

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(repoRoot, 'bin/lora-scripts.js'), ...args], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('train --config: LoRA with metadata, logs, pruned saves, and it loads through <lora:…>', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-cli-'));
  try {
    await writePatternDataset(join(dir, 'data'), 4, 0, 'yellow disk, dark background');
    const out = join(dir, 'out');
    const cfg = join(dir, 'cfg.yaml');
    await writeFile(
      cfg,
      tinyConfigYaml(join(dir, 'data'), out, {
        target_modules: 'attention_mlp_conv',
        train_text_encoder: true,
        text_encoder_lr: 1e-3,
        epochs: 2,
        save_steps: 1,
        keep_last_n: 1,
        validation_split: 0.25,
        sample_prompts: [{ prompt: 'yellow disk', steps: 3, seed: 5 }],
        sample_every_n_steps: 2,
      }),
    );
    const r = await runCli(['train', '--config', cfg, '--no-progress']);
    assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    const logDir = join(out, 'logs');
    assert.ok(r.stdout.includes(`logs: ${logDir}`), r.stdout);
    assert.ok(r.stdout.includes(`tensorboard --logdir "${logDir}"`), r.stdout);
    assert.match(r.stdout, /epoch 2\/2 step 4\/4 loss \d+\.\d{4}/);
    assert.match(r.stdout, /validation loss \d/);

    // Sample images at step 2 and after the last step, kohya-named, rendered with the LoRA merged.
    const samples = (await readdir(join(out, 'sample'))).filter((n) => n.endsWith('.png')).sort();
    assert.equal(samples.length, 2, samples.join(', '));
    assert.match(samples[0]!, /^tiny_000002_00_\d{14}_5\.png$/);
    assert.match(samples[1]!, /^tiny_000004_00_\d{14}_5\.png$/);
    const meta = await sharp(join(out, 'sample', samples[0]!)).metadata();
    assert.deepEqual([meta.width, meta.height], [64, 64]);
    assert.deepEqual((await readdir(join(out, 'sample'))).filter((n) => n.startsWith('.')), [], 'scratch LoRA removed');

    // The final LoRA: kohya names and metadata.
    const lora = join(out, 'tiny.safetensors');
    const f = await SafetensorsFile.open(lora);
    let names: string[];
    try {
      names = f.names();
      const md = f.metadata;
      assert.equal(md.ss_network_module, 'networks.lora');
      assert.equal(md.ss_network_dim, '4');
      assert.equal(md.ss_network_alpha, '4.0');
      assert.equal(md.ss_base_model_version, 'sd_v1');
      assert.equal(md.ss_output_name, 'tiny');
      assert.equal(md.ss_steps, '4');
      assert.match(md.sshs_model_hash ?? '', /^[0-9a-f]{64}$/);
      assert.deepEqual(JSON.parse(md.ss_tag_frequency!), { data: { 'yellow disk': 4, 'dark background': 4 } });
      assert.deepEqual(JSON.parse(md.ss_network_args!), { conv_dim: '4', conv_alpha: '4' });
      // LoCon on a 3×3 ResBlock conv: down keeps the kernel, up is 1×1.
      const conv = names.find((n) => /resnets_0_conv1\.lora_down\.weight$/.test(n))!;
      assert.deepEqual(f.info(conv).shape.slice(2), [3, 3]);
      assert.deepEqual(f.info(conv.replace('lora_down', 'lora_up')).shape.slice(2), [1, 1]);
    } finally {
      await f.close();
    }
    const modules = names.filter((n) => n.endsWith('.alpha')).map((n) => n.slice(0, -'.alpha'.length));
    assert.ok(modules.some((m) => m.startsWith('lora_te_text_model_encoder_layers_0_mlp_fc1')));
    assert.ok(modules.some((m) => m.includes('ff_net_0_proj')));

    // Logs: a TensorBoard event file and the JSON lines with every scalar tag.
    const logFiles = await readdir(logDir);
    const events = logFiles.find((n) => n.startsWith('events.out.tfevents.'));
    assert.ok(events, logFiles.join(', '));
    const eventBytes = await readFile(join(logDir, events));
    for (const tag of ['loss/current', 'lr/textencoder', 'sample/0']) assert.ok(eventBytes.includes(tag), `no ${tag} in the event file`);
    const lines = (await readFile(join(logDir, 'scalars.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    const tags = new Set(lines.flatMap((l) => Object.keys(l)));
    for (const t of ['loss/current', 'loss/average', 'loss/validation', 'lr/unet', 'lr/textencoder', 'grad_norm', 'memory']) assert.ok(tags.has(t), `no ${t}`);
    assert.deepEqual(lines.filter((l) => 'loss/current' in l).map((l) => l.step), [1, 2, 3, 4]);

    // keep_last_n 1: of the step saves 1..3 only the newest LoRA and state remain.
    const outFiles = (await readdir(out)).sort();
    assert.deepEqual(outFiles.filter((n) => n.startsWith('tiny-')), ['tiny-step00000003.safetensors']);
    assert.deepEqual(outFiles.filter((n) => n.startsWith('state-')), ['state-00000003']);

    // Loads through the prompt-tag merger with nothing unmatched, and changes the weights.
    const model = await StableDiffusion.load(SD_TINY, { threads: 1 });
    const warnings: string[] = [];
    const merger = new LoraMerger(model.weights, { log: (m) => warnings.push(m), cacheBytes: 0 });
    const res = await merger.apply([{ path: lora, te: 1, unet: 1, name: 'tiny' }]);
    assert.equal(res.loras.length, 1);
    assert.deepEqual(res.loras[0]!.unmatched, []);
    assert.deepEqual(res.loras[0]!.errors, []);
    assert.equal(res.loras[0]!.applied, modules.length);
    assert.ok(res.changedKeys.some((k) => k.startsWith('cond_stage_model.')) && res.changedKeys.some((k) => k.startsWith('model.diffusion_model.')));
    assert.deepEqual(warnings, []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
