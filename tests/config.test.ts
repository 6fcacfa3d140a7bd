import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadTrainConfig, trainConfigKeys, trainConfigFields } from '../engine/train/config.ts';
import { UserError } from '../engine/util/errors.ts';
import { BUNDLED_CLIP_TOKENIZER } from '../engine/text/tokenizer.ts';
import { fixturesDir } from './support/paths.ts';

const diffusersModel = join(fixturesDir, 'sd-tiny/diffusers');
const singleFile = join(fixturesDir, 'sd-tiny/sd-tiny.safetensors');

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-config-'));
  try {
    await mkdir(join(dir, 'data'));
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes a config whose required keys are valid, plus `extra` lines. */
async function write(dir: string, extra: string, base = `train_data_dir: data\nbase_model: '${diffusersModel}'\n`): Promise<string> {
  const p = join(dir, 'cfg.yaml');
  await writeFile(p, base + extra);
  return p;
}

async function problems(path: string): Promise<string> {
  try {
    await loadTrainConfig(path);
  } catch (e) {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    return e.message;
  }
  assert.fail('the config was accepted');
}

test('minimal config: defaults filled, relative paths resolved against the config folder', async () => {
  await withDir(async (dir) => {
    const { config, warnings } = await loadTrainConfig(await write(dir, 'output_dir: out\n'));
    assert.deepEqual(warnings, []);
    assert.equal(config.train_data_dir, join(dir, 'data'));
    assert.equal(config.output_dir, join(dir, 'out'));
    assert.equal(config.logging_dir, join(dir, 'out', 'logs'));
    assert.equal(config.latent_cache_dir, join(dir, 'out', 'latent_cache'));
    assert.equal(config.tokenizer, join(diffusersModel, 'tokenizer'), "a diffusers model's own tokenizer/ is used");
    assert.equal(config.metadata_path, null);
    for (const k of trainConfigKeys) {
      const f = trainConfigFields[k] as { default?: unknown; path?: string };
      if ('default' in f && !f.path && k !== 'sample_prompts') assert.deepEqual(config[k], f.default, k);
    }
    assert.deepEqual(Object.keys(config), trainConfigKeys, 'every key present, in schema order');
  });
});

test("the issue's examples: unknown key with suggestion, wrong type with the value, each with its line", async () => {
  await withDir(async (dir) => {
    const msg = await problems(await write(dir, 'learning_rat: 1e-4\nbatch_size: four\n'));
    assert.match(msg, /line 3: unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)/);
    assert.match(msg, /line 4: batch_size: expected an integer ≥ 1, got "four"/);
    assert.match(msg, /has 2 problems/);
  });
});

test('every kind of wrong value is reported at once with a hint where one helps', async () => {
  await withDir(async (dir) => {
    const msg = await problems(
      await write(
        dir,
        [
          'epochs: "3"',
          'optimizer: AdamW',
          'network_dim: 8',
          'lora_rank: 0',
          'caption_dropout_rate: 1.5',
          'resolution: 500',
          'cache_latents: "true"',
          'lr_warmup_steps: 2.5',
          'flip_aug: yes',
          'sample_prompts:',
          '  - a cat',
          '  - prompt: a dog',
          '    negativ_prompt: blurry',
          '    steps: 0',
          '  - 7',
        ].join('\n'),
      ),
    );
    const expected = [
      /line 3: epochs: expected an integer ≥ 1, got "3" \(write the number without quotes\)/,
      /line 4: optimizer: expected one of adamw, sgd, got "AdamW" \(did you mean 'adamw'\?\)/,
      /line 5: unknown key 'network_dim' \(kohya's name; here it is 'lora_rank'\)/,
      /line 6: lora_rank: expected an integer ≥ 1, got 0/,
      /line 7: caption_dropout_rate: expected a number from 0 to 1, got 1.5/,
      /line 8: resolution: expected an integer ≥ 64 that is a multiple of 64, got 500/,
      /line 9: cache_latents: expected true or false, got "true" \(write true or false without quotes\)/,
      /line 10: lr_warmup_steps: expected a whole number of steps ≥ 0, or a fraction of the total steps below 1, got 2.5/,
      /line 11: flip_aug: expected true or false, got "yes" \(YAML 1.2 reads yes\/no\/on\/off as text; write true or false\)/,
      /line 15: unknown key 'sample_prompts\[1\]\.negativ_prompt' \(did you mean 'negative_prompt'\?\)/,
      /line 16: sample_prompts\[1\]\.steps: expected an integer ≥ 1, got 0/,
      /line 17: sample_prompts\[2\]: expected a prompt string or a mapping, got 7/,
    ];
    for (const re of expected) assert.match(msg, re);
    assert.match(msg, new RegExp(`has ${expected.length} problems`));
    // Sorted by line so the message reads top to bottom like the file.
    const lines = [...msg.matchAll(/line (\d+):/g)].map((m) => Number(m[1]));
    assert.deepEqual(lines, [...lines].sort((a, b) => a - b));
  });
});

test('missing required keys and an empty or non-mapping file', async () => {
  await withDir(async (dir) => {
    const msg = await problems(await write(dir, 'epochs: 2\n', ''));
    assert.match(msg, /train_data_dir: missing; expected a path to the folder of training images/);
    assert.match(msg, /base_model: missing; expected a path to a \.safetensors checkpoint or a diffusers folder/);
    assert.match(await problems(await write(dir, '', '# nothing\n')), /is empty/);
    assert.match(await problems(await write(dir, '', '- a\n- b\n')), /must be a mapping/);
    assert.match(await problems(join(dir, 'nope.yaml')), /training config not found: .*nope\.yaml/);
  });
});

test('missing files name the key and the resolved path, and suggest a near name', async () => {
  await withDir(async (dir) => {
    const msg = await problems(
      await write(
        dir,
        `init_lora: loras/x.safetensors\n`,
        `train_data_dir: dat\nbase_model: '${singleFile.replace(/s$/, '')}'\ntokenizer: '${join(diffusersModel, 'tokenizer')}'\n`,
      ),
    );
    assert.match(msg, new RegExp(`line 1: train_data_dir: folder not found: ${join(dir, 'dat')} \\(resolved against the config's folder .*\\) \\(did you mean '${join(dir, 'data')}'\\?\\)`));
    assert.match(msg, /line 2: base_model: path not found: .*sd-tiny\.safetensor \(did you mean '.*sd-tiny\.safetensors'\?\)/);
    assert.match(msg, new RegExp(`line 4: init_lora: file not found: ${join(dir, 'loras', 'x.safetensors')}.*the folder .*loras does not exist either`));
  });
});

test('a single-file base model takes the bundled CLIP vocabulary unless a tokenizer folder is given', async () => {
  await withDir(async (dir) => {
    const base = `train_data_dir: data\nbase_model: '${singleFile}'\n`;
    assert.equal((await loadTrainConfig(await write(dir, '', base))).config.tokenizer, BUNDLED_CLIP_TOKENIZER);
    await mkdir(join(dir, 'emptytok'));
    assert.match(await problems(await write(dir, 'tokenizer: emptytok\n', base)), /has neither tokenizer\.json, vocab\.json \+ merges\.txt nor bpe_simple/);
    const { config } = await loadTrainConfig(await write(dir, `tokenizer: '${join(diffusersModel, 'tokenizer')}'\n`, base));
    assert.equal(config.base_model, singleFile);
    await writeFile(join(dir, 'model.ckpt'), 'not really');
    assert.match(
      await problems(await write(dir, '', `train_data_dir: data\nbase_model: model.ckpt\ntokenizer: '${join(diffusersModel, 'tokenizer')}'\n`)),
      /pickle checkpoint.*convert it to \.safetensors/,
    );
  });
});

test('double-quoted Windows paths: valid escapes warn, invalid ones fail, single quotes are fine', async () => {
  await withDir(async (dir) => {
    const { config, warnings } = await loadTrainConfig(await write(dir, 'output_dir: "C:\\new\\table"\nlogging_dir: \'C:\\new\\logs\'\n'));
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0]!, /line 3: output_dir: the double-quoted value "C:\\new\\table" contains \\n \(newline\), \\t \(tab\)/);
    assert.match(warnings[0]!, /single quotes \('C:\\new\\table'\) or forward slashes \(C:\/new\/table\)/);
    assert.ok(config.output_dir.includes('\n'), 'the YAML meaning is kept; the warning explains it');
    assert.ok(config.logging_dir.endsWith('C:\\new\\logs'), 'single quotes keep backslashes');
    const { warnings: none } = await loadTrainConfig(await write(dir, 'output_dir: "C:\\\\new\\\\table"\n'));
    assert.deepEqual(none, [], 'escaped backslashes are what the user meant');
    const msg = await problems(await write(dir, 'output_dir: "D:\\data\\photos"\n'));
    assert.match(msg, /not valid YAML/);
    assert.match(msg, /line 3: \\d is not an escape YAML knows inside double quotes; write Windows paths in single quotes/);
  });
});

test('rules across keys', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'l.safetensors'), '');
    const msg = await problems(
      await write(
        dir,
        'resolution: 512\nmin_bucket_reso: 576\nmax_bucket_reso: 1024\nlr_scheduler: constant\nlr_warmup_steps: 10\nrandom_crop: true\ncache_latents: true\ninit_lora: l.safetensors\nresume_from: l.safetensors\n',
      ),
    );
    assert.match(msg, /resolution \(512\) must lie between min_bucket_reso \(576\) and max_bucket_reso \(1024\)/);
    assert.match(msg, /lr_scheduler 'constant' has no warmup; use lr_scheduler: constant_with_warmup/);
    assert.match(msg, /random_crop gives a new crop each epoch.*cache_latents: false/);
    assert.match(msg, /set either resume_from .* or init_lora .*, not both/);
    const { warnings } = await loadTrainConfig(
      await write(dir, 'keep_tokens: 1\ntrain_text_encoder: false\ntext_encoder_lr: 1e-5\nsample_every_n_steps: 10\nlr_scheduler: cosine\nlr_warmup_steps: 0.1\n'),
    );
    assert.equal(warnings.length, 3, warnings.join('\n'));
    assert.match(warnings.join('\n'), /keep_tokens has no effect/);
    assert.match(warnings.join('\n'), /text_encoder_lr is ignored/);
    assert.match(warnings.join('\n'), /sample_prompts is empty/);
  });
});

test('keys the user left out follow the keys they wrote, so a written key never fails against a default', async () => {
  await withDir(async (dir) => {
    const load = async (yaml: string) => (await loadTrainConfig(await write(dir, yaml))).config;
    const defaults = await load('');
    assert.ok(defaults.min_bucket_reso <= defaults.resolution && defaults.resolution <= defaults.max_bucket_reso);
    // A resolution below the default smallest bucket, and one above the default largest.
    const small = await load(`resolution: ${defaults.min_bucket_reso / 4}\n`);
    assert.equal(small.resolution, defaults.min_bucket_reso / 4);
    assert.equal(small.min_bucket_reso, small.resolution);
    assert.equal(small.max_bucket_reso, defaults.max_bucket_reso);
    const large = await load(`resolution: ${defaults.max_bucket_reso * 2}\n`);
    assert.equal(large.max_bucket_reso, large.resolution);
    assert.equal(large.min_bucket_reso, defaults.min_bucket_reso);
    // Written bucket limits pull an unwritten resolution inside them, and the other limit along.
    const minOnly = await load(`min_bucket_reso: ${defaults.resolution * 2}\n`);
    assert.equal(minOnly.resolution, defaults.resolution * 2);
    assert.ok(minOnly.max_bucket_reso >= minOnly.resolution);
    const maxOnly = await load(`max_bucket_reso: ${defaults.min_bucket_reso / 2}\n`);
    assert.equal(maxOnly.resolution, defaults.min_bucket_reso / 2);
    assert.equal(maxOnly.min_bucket_reso, maxOnly.resolution);
    // The bucket rule still holds between written keys.
    assert.match(await problems(await write(dir, `resolution: ${defaults.min_bucket_reso / 4}\nmin_bucket_reso: ${defaults.min_bucket_reso}\n`)), /must lie between min_bucket_reso/);
    // A warmup picks the schedule with one; a random crop turns latent caching off.
    assert.equal((await load('lr_warmup_steps: 10\n')).lr_scheduler, 'constant_with_warmup');
    assert.equal((await load('lr_scheduler: cosine\nlr_warmup_steps: 10\n')).lr_scheduler, 'cosine');
    assert.equal((await load('random_crop: true\n')).cache_latents, false);
    assert.equal(defaults.cache_latents, true);
  });
});

test('sample prompts: strings, mappings and a prompt file', async () => {
  await withDir(async (dir) => {
    const { config } = await loadTrainConfig(await write(dir, 'sample_prompts:\n  - a cat\n  - {prompt: a dog, seed: 5, width: 64}\n'));
    assert.deepEqual(config.sample_prompts, [
      { prompt: 'a cat', negative_prompt: '', seed: null, steps: 30, cfg_scale: 7.5, width: null, height: null },
      { prompt: 'a dog', negative_prompt: '', seed: 5, steps: 30, cfg_scale: 7.5, width: 64, height: null },
    ]);
    await writeFile(join(dir, 'prompts.txt'), '# comment\nfirst prompt\n\nsecond prompt\n');
    const r = await loadTrainConfig(await write(dir, 'sample_prompts: prompts.txt\n'));
    assert.deepEqual(r.config.sample_prompts.map((p) => p.prompt), ['first prompt', 'second prompt']);
    assert.match(await problems(await write(dir, 'sample_prompts: prompt.txt\n')), /sample_prompts: prompt file not found: .*prompt\.txt \(did you mean '.*prompts\.txt'\?\)/);
  });
});

test('metadata.csv in the data folder is found; duplicate keys are YAML errors', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'data', 'metadata.csv'), 'file_name,text\n');
    const { config } = await loadTrainConfig(await write(dir, ''));
    assert.equal(config.metadata_path, join(dir, 'data', 'metadata.csv'));
    assert.match(await problems(await write(dir, 'epochs: 1\nepochs: 2\n')), /line 4: this key appears twice/);
  });
});
