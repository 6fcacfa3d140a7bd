import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile } from '../../engine/safetensors/index.ts';

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** A fixture set's golden tensors with the manifest's recommended tolerance for each. */
export class Goldens {
  private constructor(
    private readonly dir: string,
    readonly manifest: { tensors: { file: string; key: string; recommended_tolerance: Tolerance }[]; config: Record<string, unknown> },
  ) {}

  static async open(dir: string): Promise<Goldens> {
    return new Goldens(dir, JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')));
  }

  tolerance(file: string, key: string): Tolerance {
    const t = this.manifest.tensors.find((e) => e.file === file && e.key === key);
    if (!t) throw new Error(`manifest has no entry for ${file} ${key}`);
    return t.recommended_tolerance;
  }

  async read(file: string, key: string): Promise<{ data: Float32Array; shape: number[] }> {
    const f = await SafetensorsFile.open(join(this.dir, file));
    try {
      return { data: await f.readFloat32(key), shape: f.info(key).shape };
    } finally {
      await f.close();
    }
  }

  async readRaw(file: string, key: string) {
    const f = await SafetensorsFile.open(join(this.dir, file));
    try {
      return await f.read(key);
    } finally {
      await f.close();
    }
  }

  async expectClose(actual: Float32Array, file: string, key: string): Promise<void> {
    const g = await this.read(file, key);
    assertClose(actual, g.data, this.tolerance(file, key), `${file}:${key}`);
  }
}

/** |a - g| <= atol + rtol * |g| for every element; the message shows the worst element. */
export function assertClose(actual: ArrayLike<number>, golden: ArrayLike<number>, tol: Tolerance, label: string): void {
  assert.equal(actual.length, golden.length, `${label}: ${actual.length} elements, golden has ${golden.length}`);
  let worst = -1;
  let worstExcess = 0;
  let maxErr = 0;
  for (let i = 0; i < golden.length; i++) {
    const err = Math.abs(actual[i]! - golden[i]!);
    maxErr = Math.max(maxErr, Number.isNaN(err) ? Infinity : err);
    const excess = err - (tol.atol + tol.rtol * Math.abs(golden[i]!));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  assert.ok(
    worst < 0,
    `${label}: element ${worst} is ${actual[worst]} vs golden ${golden[worst]} (atol ${tol.atol}, rtol ${tol.rtol}); max abs error ${maxErr}`,
  );
}
