import { Command, CommanderError } from 'commander';
import { isUserError } from '../engine/util/errors.ts';
import { register as serve } from './commands/serve.ts';
import { register as train } from './commands/train.ts';
import { register as label } from './commands/label.ts';
import { register as generate } from './commands/generate.ts';
import { register as merge } from './commands/merge.ts';
import { register as convert } from './commands/convert.ts';
import { register as inspect } from './commands/inspect.ts';
import { register as worker } from './commands/worker.ts';
import { register as chat } from './commands/chat.ts';

const program = new Command('lora-scripts')
  .description('LoRA training and an A1111-compatible generation server for Stable Diffusion, on Node.js')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

for (const reg of [serve, worker, train, label, generate, merge, convert, inspect, chat]) reg(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  if (isUserError(e)) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
