import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { UserError } from '../../engine/util/errors.ts';
import { loadLlm } from '../../engine/llm/load.ts';
import { LlmTokenizer } from '../../engine/llm/tokenizer.ts';
import { LlmGenerator, type GenerateOptions } from '../../engine/llm/generate.ts';
import { AdapterStacks } from '../../engine/llm/adapter-stack.ts';
import type { ChatMessage } from '../../engine/llm/tokenizer.ts';
import { parseAdapterSpec } from './merge.ts';

interface Flags {
  adapter?: string[];
  maxTokens: string;
  temperature: string;
  topP: string;
  topK: string;
  repetitionPenalty: string;
  stop?: string[];
  seed: string;
  threads?: string;
  device: string;
}

function number(v: string, flag: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UserError(`${flag}: expected a number, got '${v}'`);
  return n;
}

function generateOptions(f: Flags): GenerateOptions {
  return {
    maxNewTokens: number(f.maxTokens, '--max-tokens'),
    temperature: number(f.temperature, '--temperature'),
    topP: number(f.topP, '--top-p'),
    topK: number(f.topK, '--top-k'),
    repetitionPenalty: number(f.repetitionPenalty, '--repetition-penalty'),
    stop: f.stop ?? [],
    seed: number(f.seed, '--seed'),
  };
}

async function open(model: string, f: Flags) {
  const m = await loadLlm(model);
  const tok = await LlmTokenizer.load(model);
  const weights = await new AdapterStacks(m.weights, 1).weights((f.adapter ?? []).map(parseAdapterSpec));
  const session = { device: f.device as 'cpu', ...(f.threads ? { threads: number(f.threads, '--threads') } : {}) };
  return { gen: await LlmGenerator.create(m, tok, session), weights };
}

function common(cmd: Command): Command {
  return cmd
    .option('-a, --adapter <spec...>', 'PEFT adapter folder as path[:weight]; repeat to stack, merged by weight at load time')
    .option('--max-tokens <n>', 'most new tokens', '256')
    .option('--temperature <x>', '0 = greedy', '0')
    .option('--top-p <p>', 'nucleus sampling mass', '1')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = all)', '0')
    .option('--repetition-penalty <x>', '> 1 discourages repeats', '1')
    .option('--stop <text...>', 'end the reply before this text')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--device <name>', 'ONNX Runtime device: cpu, cuda, dml, coreml', 'cpu')
    .option('--threads <n>', 'intra-op threads (default: all cores)');
}

export function register(program: Command): void {
  common(
    program
      .command('complete')
      .description('continue a text with a causal LM (Hugging Face model folder), streaming to stdout')
      .argument('<model>', 'model folder: config.json, *.safetensors, tokenizer.json')
      .argument('[prompt]', 'the text to continue; read from stdin when absent'),
  ).action(async (model: string, prompt: string | undefined, f: Flags) => {
    const o = generateOptions(f);
    const text = prompt ?? (await readStdin());
    const { gen, weights } = await open(model, f);
    await gen.complete(text, o, { weights, onText: (d) => process.stdout.write(d) });
    process.stdout.write('\n');
  });

  common(
    program
      .command('chat')
      .description("chat with a causal LM through its chat template: each stdin line is a user turn, each reply streams to stdout")
      .argument('<model>', 'model folder: config.json, *.safetensors, tokenizer.json with a chat template')
      .option('--system <text>', 'system message'),
  ).action(async (model: string, f: Flags & { system?: string }) => {
    const o = generateOptions(f);
    const { gen, weights } = await open(model, f);
    const messages: ChatMessage[] = f.system ? [{ role: 'system', content: f.system }] : [];
    const tty = process.stdin.isTTY;
    const rl = createInterface({ input: process.stdin, terminal: tty });
    if (tty) process.stdout.write('> ');
    for await (const line of rl) {
      if (!line.trim()) continue;
      messages.push({ role: 'user', content: line });
      const r = await gen.chat(messages, o, { weights, onText: (d) => process.stdout.write(d) });
      process.stdout.write('\n');
      messages.push({ role: 'assistant', content: r.text });
      if (tty) process.stdout.write('> ');
    }
  });
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UserError('no prompt: pass it as an argument or pipe it on stdin');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
