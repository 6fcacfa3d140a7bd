#!/usr/bin/env node
// The project's import rules, checked over the source tree (static imports, re-exports and dynamic import()):
// - no import cycle between modules (type-only imports are erased at run time and do not count);
// - layers only import downwards: engine never imports server/ or cli/; server never imports cli/;
//   cli imports server/ only from the commands that start it (serve, worker);
// - inside the engine, the generation stack is layered: engine/sd (models, pipeline) < engine/lora (formats,
//   merging over those weights) < engine/generate (the generation service) < engine/train (trainer, samples).
// Prints every violation and exits 1, or prints a one-line summary and exits 0; `--json` prints the result.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const LAYERS = ['engine', 'server', 'cli'];
/** cli modules that start the server and may import it. */
const SERVER_STARTERS = new Set(['cli/commands/serve.ts', 'cli/commands/worker.ts']);
/** Engine folders from the bottom up; a folder never imports one later in this list. */
const ENGINE_STACK = ['engine/sd', 'engine/lora', 'engine/generate', 'engine/train'];

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (name === 'node_modules') continue;
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

// Comments are dropped first so that an import written in a doc comment is not counted.
const stripComments = (src) => src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
const IMPORT_RE = /(?:^|[;\s])(?:import|export)\s+(type\s+)?(?:[\w*{}\s,$]+\s+from\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/**
 * Relative imports of one file as repository-relative paths: `all` (type-only ones too: they still couple
 * layers) and `runtime` (what Node loads).
 */
export function importsOf(file) {
  const src = stripComments(readFileSync(file, 'utf8'));
  const all = new Set();
  const runtime = new Set();
  for (const m of src.matchAll(IMPORT_RE)) {
    const spec = m[2] ?? m[3];
    if (!spec || !spec.startsWith('.')) continue;
    const target = resolve(dirname(file), spec);
    if (!existsSync(target) || !statSync(target).isFile()) continue;
    const rel = relative(root, target).split(sep).join('/');
    all.add(rel);
    if (!m[1]) runtime.add(rel);
  }
  return { all: [...all], runtime: [...runtime] };
}

export function checkLayers() {
  const files = LAYERS.flatMap((l) => collect(join(root, l)));
  const imports = new Map(files.map((f) => [relative(root, f).split(sep).join('/'), importsOf(f)]));
  const graph = new Map([...imports].map(([f, i]) => [f, i.all]));
  const runtimeGraph = new Map([...imports].map(([f, i]) => [f, i.runtime]));
  const problems = [];
  const stackLevel = (p) => ENGINE_STACK.findIndex((d) => p.startsWith(`${d}/`));

  for (const [from, tos] of graph) {
    const layer = from.split('/')[0];
    for (const to of tos) {
      const target = to.split('/')[0];
      if (layer === 'engine' && (target === 'server' || target === 'cli')) problems.push(`${from} imports ${to}: the engine never imports ${target}/`);
      if (layer === 'server' && target === 'cli') problems.push(`${from} imports ${to}: the server never imports cli/`);
      if (layer === 'cli' && target === 'server' && !SERVER_STARTERS.has(from)) problems.push(`${from} imports ${to}: only ${[...SERVER_STARTERS].join(' and ')} may import the server (to start it)`);
      const a = stackLevel(from);
      const b = stackLevel(to);
      if (a >= 0 && b > a) problems.push(`${from} imports ${to}: ${ENGINE_STACK[a]} sits below ${ENGINE_STACK[b]}`);
    }
  }

  for (const comp of cycles(runtimeGraph)) problems.push(`import cycle between ${comp.join(', ')}`);
  return { modules: graph.size, problems };
}

/** Strongly connected components with more than one member (or a self-import): the modules that import each other in a ring. */
export function cycles(graph) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const out = [];
  const visit = (v) => {
    // Iterative Tarjan: the module graph is deep enough to matter for recursion only in theory, but stays cheap.
    const work = [[v, 0]];
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    while (work.length) {
      const frame = work[work.length - 1];
      const [u, i] = frame;
      const next = graph.get(u) ?? [];
      if (i < next.length) {
        frame[1]++;
        const w = next[i];
        if (!idx.has(w)) {
          idx.set(w, index);
          low.set(w, index++);
          stack.push(w);
          on.add(w);
          work.push([w, 0]);
        } else if (on.has(w)) low.set(u, Math.min(low.get(u), idx.get(w)));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(u)));
      }
      if (low.get(u) === idx.get(u)) {
        const comp = [];
        let w;
        do {
          w = stack.pop();
          on.delete(w);
          comp.push(w);
        } while (w !== u);
        if (comp.length > 1 || (graph.get(u) ?? []).includes(u)) out.push(comp.reverse());
      }
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = checkLayers();
  if (process.argv.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else if (r.problems.length) for (const p of r.problems) console.error(p);
  else console.log(`layers ok: ${r.modules} modules, no import cycles, no upward imports`);
  process.exit(r.problems.length ? 1 : 0);
}
