/** Writes a llama-tiny model folder (with a tokenizer), a small instruction task and its training config into DIR. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tinyModelFolder } from '../../tests/support/llm-folder.ts';
import { taskConfig, writeTask } from '../../tests/support/llm-task.ts';

const dir = process.argv[2];
if (!dir) throw new Error('usage: prepare.ts DIR');
const base = await tinyModelFolder();
await writeTask(join(dir, 'data'), 40, 11);
await writeFile(join(dir, 'train.yaml'), taskConfig({ base, data: join(dir, 'data'), out: join(dir, 'out'), epochs: 4 }));
console.log(base);
