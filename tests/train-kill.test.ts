// The resume proof with a real kill: `lora-scripts train` is SIGKILLed after it reports a saved state, then
// resumed from that state by a second process; its final LoRA equals, bit for bit, that of a run never stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { repoRoot } from './support/paths.ts';
import { writePatternDataset, tinyConfigYaml } from './support/train-fixture.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');

/** Runs the CLI; `killWhen` SIGKILLs it as soon as a stdout line matches. */
function runCli(args: string[], killWhen?: RegExp): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; match?: RegExpMatchArray }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args]);
    let stdout = '';
    let stderr = '';
    let match: RegExpMatchArray | undefined;
    p.stdout.on('data', (d) => {
      stdout += d;
      const m = killWhen && !match ? killWhen.exec(stdout) : null;
      if (m) {
        match = m;
        p.kill('SIGKILL');
      }
    });
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code, signal) => resolve({ code, signal, stdout: stdout + stderr, match }));
  });
}

async function tensors(path: string): Promise<Map<string, Buffer>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, Buffer>();
    for (const n of f.names()) out.set(n, Buffer.from((await f.readFloat32(n)).buffer));
    return out;
  } finally {
    await f.close();
  }
}

test('a training process killed with SIGKILL after a checkpoint resumes to the same LoRA', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-kill-'));
  try {
    await writePatternDataset(join(dir, 'data'), 4, 0, 'yellow disk, dark background');
    const settings = { batch_size: 1, epochs: 3, save_steps: 3, shuffle_caption: true, lr_scheduler: 'linear', train_text_encoder: true };
    const yaml = (out: string, extra: Record<string, unknown> = {}) => tinyConfigYaml(join(dir, 'data'), join(dir, out), { ...settings, ...extra });
    await writeFile(join(dir, 'full.yaml'), yaml('full'));
    await writeFile(join(dir, 'part.yaml'), yaml('part'));

    const full = await runCli(['train', '--config', join(dir, 'full.yaml'), '--no-progress']);
    assert.equal(full.code, 0, full.stdout);

    const killed = await runCli(['train', '--config', join(dir, 'part.yaml'), '--no-progress'], /saved training state: (\S*state-00000006)\n/);
    assert.equal(killed.signal, 'SIGKILL', killed.stdout);
    const state = killed.match![1]!;

    await writeFile(join(dir, 'resume.yaml'), yaml('part', { resume_from: state }));
    const resumed = await runCli(['train', '--config', join(dir, 'resume.yaml'), '--no-progress']);
    assert.equal(resumed.code, 0, resumed.stdout);
    assert.match(resumed.stdout, /resumed from .*state-00000006: step 6/);
    assert.match(resumed.stdout, /done: 12 steps/);

    const a = await tensors(join(dir, 'full', 'tiny.safetensors'));
    const b = await tensors(join(dir, 'part', 'tiny.safetensors'));
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
    for (const [k, v] of a) assert.ok(v.equals(b.get(k)!), `${k} differs after kill and resume`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
