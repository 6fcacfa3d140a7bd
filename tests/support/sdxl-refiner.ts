/**
 * A tiny SDXL refiner in SGM's single-file layout (`conditioner.embedders.0.model.*` OpenCLIP tower,
 * `label_emb` over pooled + 5 size features), made from the sdxl-tiny base file so that no download is needed:
 * the base's OpenCLIP tower moves to embedder 0, CLIP ViT-L is dropped, cross-attention keeps the key/value
 * columns that read the OpenCLIP features, and `label_emb` keeps the pooled columns and five of the six size
 * embeddings (the fifth now embeds the aesthetic score). Sizes come from the fixture's own tensors and yaml.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile, toFloat32, writeSafetensors, type TensorToWrite } from '../../engine/safetensors/index.ts';
import { fixturesDir } from './paths.ts';

const BASE = join(fixturesDir, 'sdxl-tiny', 'sdxl-tiny.safetensors');

/** Keeps columns [from, to) of a row-major [rows, cols] matrix. */
function columns(data: Float32Array, rows: number, cols: number, from: number, to: number): Float32Array {
  const out = new Float32Array(rows * (to - from));
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * cols + from, r * cols + to), r * (to - from));
  return out;
}

/** Writes `<dir>/<stem>.safetensors` and its sidecar `<stem>.yaml` (head width as the base's); returns the file's path. */
export async function writeTinyRefiner(dir: string, stem: string): Promise<string> {
  const base = await SafetensorsFile.open(BASE);
  const shape = (k: string) => base.info(k).shape as number[];
  const w1 = shape('conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight')[1]!;
  const w2 = shape('conditioner.embedders.1.model.token_embedding.weight')[1]!;
  const pooled = shape('conditioner.embedders.1.model.text_projection')[1]!;
  const admIn = shape('model.diffusion_model.label_emb.0.0.weight')[1]!;
  const sizeEmbed = (admIn - pooled) / 6;
  const refinerAdm = pooled + 5 * sizeEmbed;
  const out = new Map<string, TensorToWrite>();
  for (const name of base.names()) {
    if (name.startsWith('conditioner.embedders.0.')) continue;
    const t = await base.read(name);
    let data = toFloat32(t.dtype, t.data);
    let dims = [...t.shape];
    if (/\.attn2\.to_[kv]\.weight$/.test(name)) {
      data = columns(data, dims[0]!, dims[1]!, w1, w1 + w2);
      dims = [dims[0]!, w2];
    } else if (name === 'model.diffusion_model.label_emb.0.0.weight') {
      data = columns(data, dims[0]!, dims[1]!, 0, refinerAdm);
      dims = [dims[0]!, refinerAdm];
    }
    out.set(name.replace('conditioner.embedders.1.', 'conditioner.embedders.0.'), { dtype: 'F32', shape: dims, data });
  }
  const path = join(dir, `${stem}.safetensors`);
  await writeSafetensors(path, out);
  const yaml = await readFile(join(fixturesDir, 'sdxl-tiny', 'sdxl-tiny.yaml'), 'utf8');
  const headWidth = /num_head_channels:\s*(\d+)/.exec(yaml)?.[1];
  if (!headWidth) throw new Error('sdxl-tiny.yaml: no num_head_channels');
  // The form of sd_xl_refiner.yaml, with this model's values (only what shapes cannot say matters: the head width).
  await writeFile(
    join(dir, `${stem}.yaml`),
    [
      'model:',
      '  target: sgm.models.diffusion.DiffusionEngine',
      '  params:',
      '    scale_factor: 0.13025',
      '    network_config:',
      '      target: sgm.modules.diffusionmodules.openaimodel.UNetModel',
      '      params:',
      `        adm_in_channels: ${refinerAdm}`,
      `        num_head_channels: ${headWidth}`,
      '        use_linear_in_transformer: true',
      `        context_dim: ${w2}`,
      '',
    ].join('\n'),
  );
  return path;
}
