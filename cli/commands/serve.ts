import type { Command } from 'commander';
import { notBuilt } from '../not-built.ts';

export function register(program: Command): void {
  program
    .command('serve')
    .description('start the A1111-compatible HTTP + WebSocket server')
    .option('--listen', 'listen on 0.0.0.0 instead of 127.0.0.1')
    .option('--port <n>', 'port', '7860')
    .action(() => notBuilt('serve'));
}
