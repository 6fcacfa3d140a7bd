import type { Command } from 'commander';
import { basename, dirname, join, resolve } from 'node:path';
import { mkdir, readdir } from 'node:fs/promises';
import { UserError } from '../../engine/util/errors.ts';
import { batchSeeds, fixSeed } from '../../engine/rng/seeds.ts';

interface GenerateFlags {
  ckpt?: string;
  prompt: string;
  negativePrompt: string;
  steps: string;
  cfgScale: string;
  sampler: string;
  scheduler: string;
  seed: string;
  width?: string;
  height?: string;
  batchSize: string;
  clipSkip: string;
  loraDir: string;
  tokenizer?: string;
  vae: string;
  vaeDir: string;
  embeddingsDir: string;
  hashCache: string;
  eta?: string;
  ensd: string;
  outDir: string;
  tiling?: boolean;
  randnSource: string;
  device: string;
  threads?: string;
  lowMemory?: boolean;
  refiner?: string;
  refinerSwitchAt: string;
}

function int(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UserError(`${flag}: expected an integer ≥ ${min}, got '${v}'`);
  return n;
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('txt2img from a checkpoint; <lora:name:weight> tags in the prompt stack LoRAs from --lora-dir')
    .option('--ckpt <path>', 'checkpoint: a .safetensors file or a diffusers folder (default: the first in models/Stable-diffusion, else the bundled demo model)')
    .requiredOption('-p, --prompt <text>', 'prompt (A1111 syntax: (emphasis:1.2), [from:to:when], BREAK, <lora:name:0.8>)')
    .option('-n, --negative-prompt <text>', 'negative prompt', '')
    .option('--steps <n>', 'sampling steps', '20')
    .option('--cfg-scale <x>', 'classifier-free guidance scale', '7')
    .option('--sampler <name>', 'A1111 sampler name', 'Euler a')
    .option('--scheduler <name>', 'schedule type: automatic, karras, exponential, …', 'automatic')
    .option('--seed <n>', 'seed; -1 for a random one', '-1')
    .option('-W, --width <px>', "width (default: the checkpoint's native size where its sidecar config states one, else 512; the demo model: 64)")
    .option('-H, --height <px>', "height (default: as --width)")
    .option('--batch-size <n>', 'images per batch', '1')
    .option('--clip-skip <n>', 'A1111 "Clip skip"', '1')
    .option('--lora-dir <dir>', 'LoRA folder for <lora:…> tags', 'models/Lora')
    .option('--tokenizer <dir>', 'CLIP tokenizer folder (default: beside the checkpoint, then models/tokenizer, then the bundled CLIP vocabulary)')
    .option('--vae <file|name>', "a separate VAE: a .safetensors file, or as the server's sd_vae option: a name in --vae-dir, None (the checkpoint's own) or Automatic (<checkpoint stem>.vae.safetensors there if present)", 'Automatic')
    .option('--vae-dir <dir>', 'VAE folder for --vae names', 'models/VAE')
    .option('--embeddings-dir <dir>', 'textual-inversion embeddings, used by name in prompts (as the server: models/embeddings)', 'models/embeddings')
    .option('--hash-cache <file>', "A1111's cache.json of file hashes, so a checkpoint is hashed once (the server keeps the same file in its data folder)", 'cache.json')
    .option('--eta <x>', "noise multiplier of ancestral samplers and DDIM (default: A1111's, 1 for ancestral samplers, 0 for DDIM)")
    .option('--ensd <n>', 'A1111 eta_noise_seed_delta: later noise draws are seeded with seed + n', '0')
    .option('--out-dir <dir>', 'where PNGs go', 'outputs/txt2img-images')
    .option('--tiling', 'seamless tiling')
    .option('--randn-source <src>', 'noise source: GPU, CPU or NV (as A1111)', 'GPU')
    .option('--device <name>', 'ONNX Runtime device: cpu, cuda, dml, coreml', 'cpu')
    .option('--threads <n>', 'intra-op threads (default: all cores)')
    .option('--refiner <path>', "A1111's refiner: a second checkpoint of the same latent space that finishes the sampler run (e.g. SDXL's refiner after an SDXL base)")
    .option('--refiner-switch-at <x>', 'with --refiner: the share of the run (0..1, by the noise level as A1111) after which the refiner takes over', '0.8')
    .option('--low-memory', "memory before speed: no cache of merged LoRA stacks (going back to a stack merges it anew; ONNX Runtime's arena is off by default already, docs/benchmarks.md)")
    .action(async (f: GenerateFlags) => {
      const [{ SdGenerator, findTokenizerDir }, { GenerationService, encodePng }, { modelIdentity, vaeIdentity, nameInFolder }, { vaeFromArgument }, { LoraLibrary }, { EmbeddingLibrary }, { HashCache }, { writeBufferAtomic }] =
        await Promise.all([
          import('../../engine/generate/generator.ts'),
          import('../../engine/generate/service.ts'),
          import('../../engine/generate/identity.ts'),
          import('../../engine/generate/vae-choice.ts'),
          import('../../engine/lora/resolve.ts'),
          import('../../engine/sd/embeddings.ts'),
          import('../../engine/util/hash-cache.ts'),
          import('../../engine/util/atomic-write.ts'),
        ]);
      const { defaultCheckpoint, demoNotice } = await import('../../engine/demo/demo-model.ts');
      const { defaultImageSide } = await import('../../engine/sd/sidecar.ts');
      const ckptDir = resolve('models/Stable-diffusion');
      const chosen = f.ckpt ? { path: resolve(f.ckpt), demo: false } : await defaultCheckpoint(ckptDir);
      if (chosen.demo) console.error(demoNotice(ckptDir));
      const defaultSize = String(await defaultImageSide(chosen.path));
      const width = int(f.width ?? defaultSize, '--width', 64);
      const height = int(f.height ?? defaultSize, '--height', 64);
      const steps = int(f.steps, '--steps', 1);
      const batch = int(f.batchSize, '--batch-size', 1);
      const clipSkip = int(f.clipSkip, '--clip-skip', 1);
      const cfgScale = Number(f.cfgScale);
      if (!Number.isFinite(cfgScale)) throw new UserError(`--cfg-scale: '${f.cfgScale}' is not a number`);
      if (!Number.isInteger(Number(f.seed))) throw new UserError(`--seed: '${f.seed}' is not an integer`);
      const seed = fixSeed(Number(f.seed));
      const switchAt = Number(f.refinerSwitchAt);
      if (!(switchAt >= 0 && switchAt <= 1)) throw new UserError(`--refiner-switch-at: expected a number from 0 to 1, got '${f.refinerSwitchAt}'`);
      const randnSource = f.randnSource.toUpperCase();
      if (randnSource !== 'GPU' && randnSource !== 'CPU' && randnSource !== 'NV') throw new UserError(`--randn-source must be GPU, CPU or NV, got '${f.randnSource}'`);
      const eta = f.eta === undefined ? null : Number(f.eta);
      if (eta !== null && !(eta >= 0)) throw new UserError(`--eta: expected a number ≥ 0, got '${f.eta}'`);
      const etaNoiseSeedDelta = Number(f.ensd);
      if (!Number.isInteger(etaNoiseSeedDelta)) throw new UserError(`--ensd: '${f.ensd}' is not an integer`);
      const hashes = new HashCache(resolve(f.hashCache));
      const ckptName = nameInFolder(ckptDir, chosen.path);
      const vae = await vaeFromArgument(f.vae, resolve(f.vaeDir), ckptName);
      const embeddings = new EmbeddingLibrary(resolve(f.embeddingsDir));
      for (const [file, why] of await embeddings.refresh()) console.error(`note: embedding ${file} not used: ${why}`);

      // As the server: beside the checkpoint, then the models folder's tokenizer/ (for checkpoints in subfolders).
      const tokenizerFor = (ckpt: string) => findTokenizerDir(ckpt, f.tokenizer, [join(dirname(ckptDir), 'tokenizer')]);
      const t0 = performance.now();
      const gen = await SdGenerator.load(chosen.path, {
        tokenizer: await tokenizerFor(chosen.path),
        vae: vae?.path,
        device: f.device as never,
        threads: f.threads ? int(f.threads, '--threads', 1) : undefined,
        lowMemory: f.lowMemory,
      });
      console.error(`loaded ${basename(chosen.path)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const identity = await modelIdentity(chosen.path, { cache: hashes, name: ckptName });
      const vaeId = vae ? await vaeIdentity(vae.path, { cache: hashes, name: vae.name }) : null;
      const service = new GenerationService(gen, identity, new LoraLibrary(resolve(f.loraDir)), { vae: vaeId, embeddings, hashCache: hashes });
      // A refiner that is the loaded checkpoint itself never switches (A1111), so it is not loaded twice.
      const refinerPath = f.refiner ? resolve(f.refiner) : undefined;
      if (refinerPath === chosen.path) console.error('note: the refiner is the base checkpoint itself; A1111 then never switches');
      const refiner =
        refinerPath && refinerPath !== chosen.path
          ? {
              generator: await SdGenerator.load(refinerPath, { tokenizer: await tokenizerFor(refinerPath), device: f.device as never, threads: f.threads ? int(f.threads, '--threads', 1) : undefined, lowMemory: f.lowMemory }),
              model: await modelIdentity(refinerPath, { cache: hashes, name: nameInFolder(ckptDir, refinerPath) }),
              switchAt,
            }
          : undefined;
      const { seeds } = batchSeeds(seed, 0, 0, batch);
      const t1 = performance.now();
      const out = await service.render(
        { prompt: f.prompt, negativePrompt: f.negativePrompt, seeds, width, height, steps, cfgScale, sampler: f.sampler, scheduler: f.scheduler, clipSkip, tiling: !!f.tiling, randnSource, eta, etaNoiseSeedDelta, ...(refiner ? { refiner } : {}) },
        { onStep: (s, total) => process.stderr.write(`\rstep ${s}/${total}`) },
      );
      process.stderr.write(`\rsampled in ${((performance.now() - t1) / 1000).toFixed(1)} s\n`);
      for (const n of out.notes) console.error(`note: ${n}`);

      await mkdir(f.outDir, { recursive: true });
      let index = (await readdir(f.outDir)).filter((n) => /^\d{5}-/.test(n)).length;
      for (const im of out.images) {
        const file = join(f.outDir, `${String(index++).padStart(5, '0')}-${im.seed}.png`);
        await writeBufferAtomic(file, await encodePng(im, im.infotext));
        console.log(resolve(file));
      }
    });
}
