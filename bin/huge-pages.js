// Transparent huge pages for malloc, on request (LORA_SCRIPTS_HUGE_PAGES=1). With glibc's
// `glibc.malloc.hugetlb=1` tunable, malloc advises the kernel to back what it maps with 2 MiB pages, so a
// model's weights and ONNX Runtime's tensors cost one page fault per 2 MiB instead of one per 4 KiB. Where a
// fault is dear (virtual machines) that is a large share of the work, and it costs memory: whole 2 MiB pages
// are resident where a few KiB of them are used. Measured on this project's 2-core VM, SD 1.5 at 512²
// (docs/benchmarks.md):
// - generation: CFG steps 5.2–5.6 s instead of 6.7–6.9 s, loading 9–15 s instead of 21 s, peak RSS
//   5.47–5.77 GiB instead of 5.40 (over diffusers' 5.5 GiB in two runs of three);
// - a LoRA train step, where malloc also keeps freed memory for reuse (trim and mmap thresholds): 8.24–9.4 s
//   instead of 9.4 s at 6.62–7.07 GiB instead of 6.57; huge pages alone made its steps uneven (8.6–22.8 s).
// So it is not the default: the defaults stay within PyTorch's memory. glibc reads its tunables when a
// process starts, so the CLI starts itself again with them set; elsewhere (macOS, Windows, musl) nothing
// changes.
//
// The first process only waits: it hands signals on, exits as the second one did, and a pipe to the second
// one ends that one too when the first is killed outright (SIGKILL cannot be handed on).
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';

const HUGE_PAGES = 'glibc.malloc.hugetlb=1';
const KEEP_FREED = 'glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432';
const CHILD = 'LORA_SCRIPTS_HUGE_PAGES_CHILD';

/** The glibc tunables a CLI command runs with (see above). */
export function mallocTunablesFor(command) {
  return command === 'train' ? `${HUGE_PAGES}:${KEEP_FREED}` : HUGE_PAGES;
}

/**
 * True when this process started a second one with `tunables` and must do nothing more itself: only with
 * LORA_SCRIPTS_HUGE_PAGES=1, and not when GLIBC_TUNABLES already chooses malloc's huge pages.
 */
export function relaunchWithHugePages(tunables = HUGE_PAGES) {
  if (process.env[CHILD] === '1') {
    delete process.env[CHILD];
    endWithLauncher();
    return false;
  }
  if (process.platform !== 'linux' || process.env.LORA_SCRIPTS_HUGE_PAGES !== '1') return false;
  const given = process.env.GLIBC_TUNABLES ?? '';
  if (given.includes('glibc.malloc.hugetlb')) return false;
  const env = { ...process.env, GLIBC_TUNABLES: given ? `${given}:${tunables}` : tunables, [CHILD]: '1' };
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env });
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const forward = (signal) => child.kill(signal);
  for (const s of signals) process.on(s, forward);
  child.on('error', (e) => {
    console.error(`lora-scripts: could not start ${process.execPath}: ${e.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    for (const s of signals) process.off(s, forward);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
  return true;
}

/** In the second process: fd 3 is the pipe from the first; it closes when the first process dies, however. */
function endWithLauncher() {
  let pipe;
  try {
    pipe = new Socket({ fd: 3, readable: true, writable: false });
  } catch {
    return;
  }
  const end = () => process.kill(process.pid, 'SIGKILL');
  pipe.on('close', end);
  pipe.on('error', end);
  pipe.resume();
  pipe.unref();
}
