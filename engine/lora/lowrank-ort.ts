/**
 * W += U @ D for big low-rank updates, through ONNX Runtime's GEMM (multi-threaded, SIMD): a plain JS loop
 * manages well under 1 GFMA/s, and merging a rank-32 LoRA into SD 1.5 is ~11 GFMA. One graph with dynamic
 * dims serves every layer; the session is compiled once and cached by the engine.
 */
import * as g from '../graph/index.ts';
import { compile, type CompiledGraph } from '../runtime/session.ts';

let graph: Promise<CompiledGraph> | undefined;

function lowRankGraph(): Promise<CompiledGraph> {
  if (!graph) {
    const w = g.input('w', 'float32', ['O', 'I']);
    const u = g.input('u', 'float32', ['O', 'R']);
    const d = g.input('d', 'float32', ['R', 'I']);
    graph = compile([g.add(w, g.matmul(u, d))]);
    graph.catch(() => (graph = undefined));
  }
  return graph;
}

/** ORT wraps a typed array's whole buffer, and no shared memory, so views into a larger buffer and shared ones are copied first. */
function own(a: Float32Array): Float32Array {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer ? a : a.slice();
}

/** weight [rows, cols] += u [rows, r] @ d [r, cols], in place. */
export async function addLowRankOrt(weight: Float32Array, u: Float32Array, d: Float32Array, rows: number, r: number, cols: number): Promise<void> {
  const net = await lowRankGraph();
  const [out] = await net.run({
    w: { data: own(weight), shape: [rows, cols] },
    u: { data: own(u), shape: [rows, r] },
    d: { data: own(d), shape: [r, cols] },
  });
  weight.set(out!.data as Float32Array);
}
