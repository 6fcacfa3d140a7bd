import { availableParallelism } from 'node:os';
import ort from 'onnxruntime-node';
import { UserError } from '../util/errors.ts';

export type Device = 'cpu' | 'cuda' | 'dml' | 'coreml' | 'webgpu';
export const DEVICES: readonly Device[] = ['cpu', 'cuda', 'dml', 'coreml', 'webgpu'];

/** Backends this onnxruntime-node build reports (cuda/tensorrt appear but need the CUDA libraries installed). */
export function supportedBackends(): string[] {
  return ort.listSupportedBackends().map((b) => b.name);
}

/** Execution-provider list for ORT: the requested device first, CPU as the fallback for unsupported ops. */
export function executionProviders(device: Device): string[] {
  if (!DEVICES.includes(device)) throw new UserError(`device: unknown "${device}", expected one of ${DEVICES.join(', ')}`);
  if (device === 'cpu') return ['cpu'];
  if (!supportedBackends().includes(device))
    throw new UserError(`device: "${device}" is not available in this onnxruntime-node build (available: ${supportedBackends().join(', ')})`);
  return [device, 'cpu'];
}

export const defaultThreads = (): number => availableParallelism();

/** Whether this device has fast float16 kernels; on CPU, float16 would be emulated and slower. */
export const hasFastFloat16 = (device: Device): boolean => device !== 'cpu';

const logged = new Set<string>();

/** Logs a line once per process (provider choice, precision fallback). */
export function logOnce(line: string): void {
  if (logged.has(line)) return;
  logged.add(line);
  if (process.env['LORA_SCRIPTS_QUIET'] !== '1') console.error(`[engine] ${line}`);
}
