import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { parse as parseYaml } from 'yaml';
import { ClipModel } from '../../engine/clip/model.ts';
import { ClipCaptioner } from '../../engine/label/clip-captioner.ts';
import { labelFolder, type Captioners } from '../../engine/label/label-folder.ts';
import { clipCaptionOptions, parseLabelSettings, type LabelSettings } from '../../engine/label/options.ts';
import { Wd14Tagger } from '../../engine/label/wd14.ts';
import type { Device } from '../../engine/runtime/providers.ts';
import { UserError } from '../../engine/util/errors.ts';

interface LabelFlags {
  model?: string;
  wd14?: string;
  captioner?: string;
  tokenizer?: string;
  config?: string;
  mode?: string;
  target?: string;
  captionExtension?: string;
  trigger?: string;
  dryRun?: boolean;
  clipMode?: string;
  tables?: string;
  artists?: boolean;
  table?: string[];
  vocab?: string;
  maxFlavors?: string;
  generalThreshold?: string;
  characterThreshold?: string;
  ratings?: boolean;
  keepUnderscores?: boolean;
  exclude?: string;
  maxTags?: string;
  device: string;
  threads?: string;
  progress: boolean;
}

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);

async function lines(file: string, flag: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch((e: Error) => {
    throw new UserError(`${flag}: cannot read ${file}: ${e.message}`);
  });
  // One phrase per line; a tag list may also be comma-separated.
  return text.replace(/^\uFEFF/, '').split(/\r?\n/).flatMap((l) => (l.includes(',') ? list(l) : [l.trim()])).filter((l) => l && !l.startsWith('#'));
}

function num(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UserError(`${flag}: expected a number, got '${v}'`);
  return n;
}

/** Settings: the schema's defaults, then the --config file, then the flags given. */
async function settingsFrom(flags: LabelFlags): Promise<LabelSettings> {
  let fromFile: Record<string, unknown> = {};
  if (flags.config) {
    const text = await readFile(flags.config, 'utf8').catch((e: Error) => {
      throw new UserError(`--config: cannot read ${flags.config}: ${e.message}`);
    });
    const v = parseYaml(text) as unknown;
    if (v !== null && (typeof v !== 'object' || Array.isArray(v))) throw new UserError(`${flags.config}: expected a mapping of label settings`);
    fromFile = (v ?? {}) as Record<string, unknown>;
  }
  const given: Record<string, unknown> = {
    model: flags.captioner ?? fromFile['model'] ?? (flags.model && flags.wd14 ? 'both' : flags.wd14 ? 'wd14' : undefined),
    mode: flags.mode,
    target: flags.target,
    caption_extension: flags.captionExtension,
    trigger: flags.trigger,
    dry_run: flags.dryRun,
    clip_mode: flags.clipMode,
    tables: flags.tables !== undefined ? list(flags.tables) : undefined,
    artists: flags.artists,
    max_flavors: num(flags.maxFlavors, '--max-flavors'),
    general_threshold: num(flags.generalThreshold, '--general-threshold'),
    character_threshold: num(flags.characterThreshold, '--character-threshold'),
    ratings: flags.ratings,
    replace_underscores: flags.keepUnderscores ? false : undefined,
    exclude_tags: flags.exclude !== undefined ? list(flags.exclude) : undefined,
    max_tags: num(flags.maxTags, '--max-tags'),
  };
  if (flags.table?.length) {
    const tables: Record<string, string[]> = { ...((fromFile['user_tables'] as Record<string, string[]>) ?? {}) };
    for (const f of flags.table) tables[basename(f, extname(f))] = await lines(f, '--table');
    given['user_tables'] = tables;
  }
  if (flags.vocab) given['vocab'] = await lines(flags.vocab, '--vocab');
  const merged = { ...fromFile, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) };
  return parseLabelSettings(merged, flags.config ? `${flags.config} / flags` : 'flags');
}

function clock(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}

export function register(program: Command): void {
  program
    .command('label')
    .description('caption a folder of images with CLIP phrases and/or WD14 tags, into metadata.csv or .txt sidecars')
    .argument('<folder>', 'image folder (png, jpg, webp; kohya repeat folders allowed)')
    .option('--model <path>', 'CLIP model: a Hugging Face CLIP folder (config.json + model.safetensors) or an OpenCLIP .safetensors file')
    .option('--wd14 <dir>', 'WD14 tagger folder (model.onnx + selected_tags.csv)')
    .option('--captioner <kind>', 'clip, wd14 or both (default: what --model / --wd14 give)')
    .option('--tokenizer <dir>', 'CLIP tokenizer folder when the model has none (vocab.json + merges.txt)')
    .option('--config <file>', 'YAML with the settings below under their REST names (flags win)')
    .option('--mode <mode>', 'missing (default: only images without a caption), overwrite, or append (adds new tags)')
    .option('--target <where>', 'metadata (default: metadata.csv) or sidecar (.txt beside each image)')
    .option('--caption-extension <ext>', 'sidecar extension (default .txt)')
    .option('--trigger <word>', 'put this first in every caption (a LoRA trigger word)')
    .option('--dry-run', 'print what would change, write nothing')
    .option('--clip-mode <mode>', 'fast (best phrase per table) or best (greedy search over phrases)')
    .option('--tables <names>', 'built-in tables, comma-separated: subjects, medium, style, lighting, colours, composition, artists')
    .option('--artists', 'also rank the artists table')
    .option('--table <file...>', 'your own table(s) of alternatives, one phrase per line (named by the file)')
    .option('--vocab <file>', 'candidate tags, one per line or comma-separated; any number may be chosen')
    .option('--max-flavors <n>', 'most phrases CLIP adds after the subject (default 4)')
    .option('--general-threshold <p>', 'WD14 general tag threshold (default 0.35)')
    .option('--character-threshold <p>', 'WD14 character tag threshold (default 0.85)')
    .option('--ratings', 'WD14: put the rating tag first')
    .option('--keep-underscores', 'WD14: keep long_hair as it is (default: long hair)')
    .option('--exclude <tags>', 'WD14 tags never written, comma-separated')
    .option('--max-tags <n>', 'WD14: most tags per image')
    .option('--device <name>', 'ONNX Runtime device: cpu, cuda, dml, coreml', 'cpu')
    .option('--threads <n>', 'intra-op threads (default: all cores)')
    .option('--no-progress', 'one line per image instead of a progress bar')
    .action(async (folder: string, flags: LabelFlags) => {
      const settings = await settingsFrom(flags);
      const threads = num(flags.threads, '--threads');
      const device = flags.device as Device;
      const captioners: Captioners = {};
      if (settings.model !== 'wd14') {
        if (!flags.model) throw new UserError(`captioner '${settings.model}' needs a CLIP model: --model <folder or .safetensors>`);
        const model = await ClipModel.load(resolve(flags.model), { tokenizer: flags.tokenizer && resolve(flags.tokenizer), device, threads });
        captioners.clip = new ClipCaptioner(model, clipCaptionOptions(settings));
      }
      if (settings.model !== 'clip') {
        if (!flags.wd14) throw new UserError(`captioner '${settings.model}' needs a WD14 tagger: --wd14 <folder with model.onnx and selected_tags.csv>`);
        captioners.wd14 = await Wd14Tagger.load(resolve(flags.wd14), { device, threads });
      }
      let bar: cliProgress.SingleBar | undefined;
      const abort = new AbortController();
      const onSigint = () => {
        console.error('\nstopping after this image (captions so far are kept)');
        abort.abort();
      };
      process.once('SIGINT', onSigint);
      try {
        const r = await labelFolder(resolve(folder), settings, captioners, {
          signal: abort.signal,
          onProgress: (p) => {
            if (!flags.progress) {
              console.log(`[${p.done}/${p.total}] ${p.file}: ${p.caption}`);
              return;
            }
            const payload = { speed: p.imagesPerSecond.toFixed(2), eta: clock(p.etaSeconds) };
            if (!bar) {
              bar = new cliProgress.SingleBar({ format: 'labelling |{bar}| {value}/{total} | {speed} images/s | ETA {eta}', hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic);
              bar.start(p.total, p.done, payload);
            } else bar.update(p.done, payload);
          },
        });
        bar?.stop();
        const changed = r.changes.filter((c) => c.action !== 'kept');
        if (r.dryRun) {
          for (const c of r.changes) console.log(`${c.action === 'kept' ? 'keep' : `would ${c.action === 'added' ? 'add' : c.action === 'replaced' ? 'replace' : 'append'}`}  ${c.key}: ${c.after}${c.action === 'replaced' || c.action === 'appended' ? `   (was: ${c.before})` : ''}`);
        }
        const verb = r.dryRun ? 'would change' : 'changed';
        console.log(
          `${r.captioned} of ${r.images} images captioned in ${clock(r.seconds)}; ${verb} ${changed.length} caption(s)` +
            (r.skipped ? `; ${r.skipped} already had a caption (mode 'missing'; --mode overwrite or append to redo them)` : '') +
            (r.cancelled ? '; stopped early, run again to finish' : ''),
        );
        if (r.cancelled) process.exitCode = 130;
      } finally {
        bar?.stop();
        process.off('SIGINT', onSigint);
        await captioners.wd14?.release();
      }
    });
}
