import type { Command } from 'commander';
import { UserError } from '../../engine/util/errors.ts';

interface ServeFlags {
  listen?: boolean;
  port: string;
  apiAuth?: string;
  corsAllowOrigins?: string;
  apiServerStop?: boolean;
  corsAllowOriginsRegex?: string;
  ckptDir?: string;
  loraDir?: string;
  vaeDir?: string;
  esrganModelsPath?: string;
  embeddingsDir?: string;
  dataDir?: string;
  device: string;
  tokenizerDir?: string;
  lowMemory?: boolean;
  apiEnableRequests?: boolean;
  maxBodyMb: string;
  maxPixels?: string;
  maxSteps?: string;
  maxImages?: string;
  maxLoraRank?: string;
  maxDatasetImages?: string;
  maxPromptChars?: string;
  queue?: string;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('start the A1111-compatible HTTP + WebSocket server (/sdapi/v1/*, socket.io progress)')
    .option('--listen', 'listen on 0.0.0.0 instead of 127.0.0.1')
    .option('--port <n>', 'port', '7860')
    .option('--api-auth <user:pass[,user2:pass2]>', 'require HTTP Basic auth on every route')
    .option('--cors-allow-origins <a,b>', 'origins allowed to call the API from a browser')
    .option('--api-server-stop', 'enable POST /sdapi/v1/server-stop (behind --api-auth when set)')
    .option('--cors-allow-origins-regex <re>', 'regular expression for allowed origins')
    .option('--data-dir <dir>', 'base folder for models/, outputs/, config.json (default: current directory)')
    .option('--ckpt-dir <dir>', 'checkpoint folder (default: <data-dir>/models/Stable-diffusion)')
    .option('--lora-dir <dir>', 'LoRA folder (default: <data-dir>/models/Lora)')
    .option('--vae-dir <dir>', 'VAE folder (default: <data-dir>/models/VAE)')
    .option('--embeddings-dir <dir>', 'textual-inversion embeddings, .safetensors (default: <data-dir>/models/embeddings)')
    .option('--esrgan-models-path <dir>', 'ESRGAN-family upscaler models, .safetensors (default: <data-dir>/models/ESRGAN)')
    .option('--low-memory', "memory before speed: no cache of merged LoRA stacks (going back to a stack merges it anew; ONNX Runtime's arena is off by default already, docs/benchmarks.md)")
    .option('--device <name>', 'ONNX Runtime device: cpu, cuda, dml, coreml', 'cpu')
    .option('--tokenizer-dir <dir>', 'CLIP tokenizer folder for single-file checkpoints (default: beside the checkpoint, then models/tokenizer, then the bundled CLIP vocabulary)')
    .option('--api-enable-requests', 'accept http(s) image URLs in requests (never to loopback or private addresses)')
    .option('--max-body-mb <n>', 'request body size limit in MiB', '64')
    .option('--max-pixels <n>', 'largest width × height per generated image (default: sized from the machine memory; training gets half)')
    .option('--max-steps <n>', 'most sampling steps per pass, hires pass included (default 1000)')
    .option('--max-images <n>', 'most images per request, batch_size × n_iter (default 64)')
    .option('--max-lora-rank <n>', 'largest lora_rank of a training (default: sized from the machine memory, at most 1024)')
    .option('--max-dataset-images <n>', 'most images in a training dataset (default: sized from the machine memory)')
    .option('--max-prompt-chars <n>', 'longest prompt in characters (default 20000)')
    .option('--queue <redis-url>', 'be an API front: queue every generation and training in Redis (redis://[user:pass@]host:port[/db], rediss:// for TLS) for `lora-scripts worker` processes to run (docs/distributed.md)')
    .action(async (f: ServeFlags) => {
      const port = Number(f.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port: '${f.port}' is not a port number`);
      const maxBodyMb = Number(f.maxBodyMb);
      if (!Number.isFinite(maxBodyMb) || maxBodyMb <= 0) throw new UserError(`--max-body-mb: '${f.maxBodyMb}' is not a positive number`);
      const limits: Record<string, number> = {};
      for (const [flag, key] of [['maxPixels', 'maxPixels'], ['maxSteps', 'maxSteps'], ['maxImages', 'maxImages'], ['maxLoraRank', 'maxLoraRank'], ['maxDatasetImages', 'maxDatasetImages'], ['maxPromptChars', 'maxPromptChars']] as const) {
        const v = f[flag];
        if (v === undefined) continue;
        const n = Number(v);
        if (!Number.isInteger(n) || n <= 0) throw new UserError(`--${flag.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: '${v}' is not a positive integer`);
        limits[key] = n;
      }
      const { createServer } = await import('../../server/app.ts');
      const front = f.queue ? await connectFront(f.queue) : null;
      const { demoModelIfPresent } = await import('../../engine/demo/demo-model.ts');
      const server = await createServer({
        ...(front ? { queue: front.queue, backend: front.backend } : {}),
        fallbackCheckpoint: await demoModelIfPresent(),
        listen: f.listen,
        port,
        apiAuth: f.apiAuth ?? null,
        corsAllowOrigins: f.corsAllowOrigins ? f.corsAllowOrigins.split(',').map((s) => s.trim()).filter(Boolean) : [],
        corsAllowOriginsRegex: f.corsAllowOriginsRegex ?? null,
        dataDir: f.dataDir,
        ckptDir: f.ckptDir,
        loraDir: f.loraDir,
        vaeDir: f.vaeDir,
        esrganDir: f.esrganModelsPath,
        embeddingsDir: f.embeddingsDir,
        device: f.device,
        tokenizerDir: f.tokenizerDir,
        lowMemory: f.lowMemory,
        apiEnableRequests: f.apiEnableRequests,
        apiServerStop: f.apiServerStop,
        onServerStop: () => process.exit(0),
        maxBodyBytes: Math.round(maxBodyMb * 1024 * 1024),
        limits,
      });
      front?.queue.bind(server.ctx);
      console.log(`lora-scripts API on ${server.url}  (docs: ${server.url}/docs)`);
      if (front) console.log(`API front: jobs go to the workers through ${front.display}`);
      const stop = () => {
        console.log('shutting down');
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}

/** The Redis queue and stand-in backend of an API front. */
async function connectFront(url: string) {
  const { parseRedisUrl } = await import('../../server/distributed/redis-url.ts');
  const { RedisFrontQueue } = await import('../../server/distributed/front-queue.ts');
  const { frontBackend } = await import('../../server/distributed/front-backend.ts');
  const target = parseRedisUrl(url);
  return { queue: await RedisFrontQueue.connect({ target }), backend: frontBackend(target.display), display: target.display };
}
