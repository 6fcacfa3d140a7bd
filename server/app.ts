/**
 * `createServer(opts)`: the A1111-compatible HTTP + socket.io server, listening when the promise resolves.
 *
 * Default layout under the data dir (default: the current directory): `models/Stable-diffusion`,
 * `models/Lora`, `models/VAE`, `outputs/`, `config.json` (options), `cache.json` (hashes), `styles.csv`.
 */
import { mkdir } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve, join, dirname } from 'node:path';
import express, { type Express } from 'express';
import { Server as IoServer } from 'socket.io';
import { basicAuthMiddleware, parseApiAuth, socketUser } from './auth.ts';
import type { GenerationBackend } from './backend.ts';
import { demoNotice } from '../engine/demo/demo-model.ts';
import { CheckpointManager } from './checkpoints.ts';
import type { Layout, ServerContext, WorkQueue } from './context.ts';
import { createThreadBackend, type ThreadBackend } from './backend-thread.ts';
import { sweepStaleTemps } from '../engine/util/atomic-write.ts';
import { errorHandler } from './errors.ts';
import { HashCache } from '../engine/util/hash-cache.ts';
import { checkSamplesFormat, type ImagePolicy } from './images.ts';
import { resolveLimits, type WorkLimits } from './limits.ts';
import { LoraIndex } from './loras.ts';
import { ModelIndex } from './models.ts';
import { docsHtml, openApiDocument } from './openapi.ts';
import { OptionsStore, type OptionValue } from './options.ts';
import { originMiddleware, originRefusal, type OriginRules } from './origin.ts';
import { PreviewCache, progressResponse } from './progress.ts';
import { JobQueue, CancelledError, type RunningState } from './queue.ts';
import { Api } from './routes/api.ts';
import { routeModules } from './routes/index.ts';
import { uiRouter } from './routes/ui.ts';
import { stopPromptChecks } from './prompt-check.ts';
import { attachTrainingSocket } from './train-socket.ts';
import { closeTraining } from './training.ts';
import { closeLlm } from './llm.ts';
import { attachLabelSocket, closeLabelling } from './labelling.ts';
import { VERSION } from '../engine/version.ts';
import { UpscalerLibrary } from '../engine/upscale/upscalers.ts';
import { EmbeddingLibrary } from '../engine/sd/embeddings.ts';
import type { Device } from '../engine/runtime/providers.ts';

export { VERSION };

export interface ServerOptions {
  /** Base folder for models, outputs and config.json; default the current directory. */
  dataDir?: string;
  ckptDir?: string;
  loraDir?: string;
  vaeDir?: string;
  /** ESRGAN-family upscaler folder (default `models/ESRGAN`). */
  esrganDir?: string;
  /** Textual-inversion embeddings folder (default `models/embeddings`). */
  embeddingsDir?: string;
  /** Bind 0.0.0.0 instead of 127.0.0.1. */
  listen?: boolean;
  /** Explicit bind address (wins over `listen`). */
  host?: string;
  /** Default 7860; 0 picks a free port. */
  port?: number;
  /** `user:pass[,user2:pass2]`. */
  apiAuth?: string | null;
  /** Origins allowed by CORS (exact match). */
  corsAllowOrigins?: string[];
  /** Regex for allowed CORS origins. */
  corsAllowOriginsRegex?: string | null;
  /** ONNX Runtime device for the default backend. */
  device?: string;
  /** CLIP tokenizer folder for single-file checkpoints (default: searched beside the checkpoint, then `models/tokenizer`). */
  tokenizerDir?: string;
  /** Feed every weight to ONNX Runtime instead of baking conv weights into its sessions: ≈ 5 GiB less for SD 1.5, a little slower. */
  lowMemory?: boolean;
  /** A checkpoint used (and listed) while the checkpoint folder holds none; `serve` passes the bundled demo model. */
  fallbackCheckpoint?: string;
  /** Replaces the default (engine) backend. */
  backend?: GenerationBackend;
  /** Replaces the in-process job queue (an API front passes its Redis queue, see server/distributed/). */
  queue?: WorkQueue;
  /** Request body limit in bytes (default 64 MiB). */
  maxBodyBytes?: number;
  /** Largest image accepted, in pixels (default 64 Mpx). */
  maxImagePixels?: number;
  /** Caps on the work per request; defaults sized from the machine's memory (server/limits.ts). */
  limits?: Partial<WorkLimits>;
  /** Allow http(s) image URLs in requests (A1111 `api_enable_requests`); loopback/private stays refused. */
  apiEnableRequests?: boolean;
  /** Enable POST /sdapi/v1/server-stop (A1111 `--api-server-stop`): it closes the server, then calls `onServerStop`. */
  apiServerStop?: boolean;
  onServerStop?: () => void;
  /** Load the selected checkpoint at start (default true). */
  loadOnStart?: boolean;
  log?: (msg: string) => void;
  /** Test seam for the URL policy: addresses treated as public. */
  allowImageAddresses?: (ip: string) => boolean;
}

export interface LoraScriptsServer {
  app: Express;
  httpServer: HttpServer;
  io: IoServer;
  ctx: ServerContext;
  /** `http://host:port` actually bound. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export function resolveLayout(opts: ServerOptions): Layout {
  const dataDir = resolve(opts.dataDir ?? process.cwd());
  return {
    dataDir,
    ckptDir: resolve(dataDir, opts.ckptDir ?? 'models/Stable-diffusion'),
    loraDir: resolve(dataDir, opts.loraDir ?? 'models/Lora'),
    vaeDir: resolve(dataDir, opts.vaeDir ?? 'models/VAE'),
    esrganDir: resolve(dataDir, opts.esrganDir ?? 'models/ESRGAN'),
    embeddingsDir: resolve(dataDir, opts.embeddingsDir ?? 'models/embeddings'),
    outputsDir: join(dataDir, 'outputs'),
    configPath: join(dataDir, 'config.json'),
    cachePath: join(dataDir, 'cache.json'),
    stylesPath: join(dataDir, 'styles.csv'),
  };
}

function corsMiddleware(origins: string[], regex: RegExp | null): express.RequestHandler {
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && (origins.includes(origin) || origins.includes('*') || regex?.test(origin))) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, OPTIONS');
        res.setHeader('Access-Control-Allow-Headers', String(req.headers['access-control-request-headers'] ?? 'Authorization, Content-Type'));
        res.setHeader('Access-Control-Max-Age', '600');
        res.status(200).end();
        return;
      }
    }
    next();
  };
}

export async function createServer(opts: ServerOptions = {}): Promise<LoraScriptsServer> {
  const log = opts.log ?? ((m: string) => console.log(m));
  const layout = resolveLayout(opts);
  for (const d of [layout.ckptDir, layout.loraDir, layout.vaeDir, layout.outputsDir]) await mkdir(d, { recursive: true });
  // Temporary files of writers killed mid-write (kill -9, power loss) would otherwise stay forever.
  const swept = (
    await Promise.all(
      ([[layout.dataDir, 0], [layout.loraDir, 1], [layout.outputsDir, 3], [join(layout.dataDir, 'training'), 2], [join(layout.dataDir, 'datasets'), 3]] as const).map(([d, depth]) => sweepStaleTemps(d, { depth })),
    )
  ).flat();
  if (swept.length > 0) log(`removed ${swept.length} temporary file(s) left by an interrupted write: ${swept.slice(0, 3).join(', ')}${swept.length > 3 ? ', …' : ''}`);

  const creds = opts.apiAuth ? parseApiAuth(opts.apiAuth) : null;
  const forced: Record<string, OptionValue> = {};
  if (opts.apiEnableRequests) forced['api_enable_requests'] = true;
  const options = await OptionsStore.load(layout.configPath, forced);
  const hashes = new HashCache(layout.cachePath);
  const models = new ModelIndex(layout.ckptDir, layout.vaeDir, hashes, opts.fallbackCheckpoint);
  const loras = new LoraIndex(layout.loraDir, hashes);
  const upscalers = new UpscalerLibrary(layout.esrganDir, (opts.device ?? 'cpu') as Device);
  const embeddings = new EmbeddingLibrary(layout.embeddingsDir);
  await Promise.all([models.refreshCheckpoints(), models.refreshVaes(), loras.refresh(), upscalers.refresh(), embeddings.refresh().then((p) => p.forEach((msg) => log(msg)))]);
  // The engine runs on a worker thread: ONNX Runtime's calls are synchronous and would hold the HTTP loop.
  let ownBackend: ThreadBackend | null = null;
  const backend =
    opts.backend ??
    (ownBackend = createThreadBackend({
      device: opts.device ?? 'cpu',
      tokenizer: opts.tokenizerDir ? resolve(layout.dataDir, opts.tokenizerDir) : undefined,
      fallbackTokenizerDirs: [join(dirname(layout.ckptDir), 'tokenizer'), join(layout.dataDir, 'models/tokenizer')],
      lowMemory: opts.lowMemory,
      embeddings,
    }));
  const queue = opts.queue ?? new JobQueue();
  const checkpoints = new CheckpointManager(backend, models, options, log);
  const maxPixels = opts.maxImagePixels ?? 64 * 1024 * 1024;
  const host = opts.host ?? (opts.listen ? '0.0.0.0' : '127.0.0.1');
  const ctx: ServerContext = {
    layout,
    options,
    backend,
    models,
    loras,
    upscalers,
    embeddings,
    checkpoints,
    queue,
    previews: new PreviewCache(),
    limits: resolveLimits(opts.limits),
    imagePolicy: (): ImagePolicy => ({
      allowUrls: Boolean(options.get('api_enable_requests')),
      forbidLocal: options.get('api_forbid_local_requests') !== false,
      userAgent: String(options.get('api_useragent') ?? ''),
      maxPixels,
      maxDownloadBytes: opts.maxBodyBytes ?? 64 * 1024 * 1024,
      allowAddresses: opts.allowImageAddresses,
    }),
    cmdFlags: {
      data_dir: layout.dataDir,
      ckpt_dir: layout.ckptDir,
      lora_dir: layout.loraDir,
      vae_dir: layout.vaeDir,
      esrgan_models_path: layout.esrganDir,
      embeddings_dir: layout.embeddingsDir,
      listen: host === '0.0.0.0',
      port: opts.port ?? 7860,
      api: true,
      nowebui: true,
      api_auth: creds ? '<redacted>' : null,
      cors_allow_origins: opts.corsAllowOrigins?.join(',') ?? null,
      cors_allow_origins_regex: opts.corsAllowOriginsRegex ?? null,
      device: opts.device ?? 'cpu',
      backend: backend.description,
      api_enable_requests: Boolean(opts.apiEnableRequests),
      api_server_stop: Boolean(opts.apiServerStop),
    },
    version: VERSION,
    log,
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // A1111 stamps every response with X-Process-Time (seconds); headers are final only at writeHead.
  app.use((_req, res, next) => {
    const t0 = process.hrtime.bigint();
    const writeHead = res.writeHead;
    res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
      if (!res.headersSent) res.setHeader('X-Process-Time', String(Number(process.hrtime.bigint() - t0) / 1e9));
      return writeHead.apply(this, args);
    } as typeof writeHead;
    next();
  });
  const corsRegex = opts.corsAllowOriginsRegex ? new RegExp(opts.corsAllowOriginsRegex) : null;
  const originRules: OriginRules = { origins: opts.corsAllowOrigins ?? [], regex: corsRegex, loopbackOnly: /^(?:127\.|::1$|localhost$)/.test(host) };
  // Before everything else: a page of another site must not reach any route, the static UI included.
  app.use(originMiddleware(originRules));
  if ((opts.corsAllowOrigins?.length ?? 0) > 0 || corsRegex) app.use(corsMiddleware(opts.corsAllowOrigins ?? [], corsRegex));
  // The browser UI's static files come before authentication: the page asks for the credentials itself.
  app.use(uiRouter(log));
  app.use(basicAuthMiddleware(creds));
  app.use(express.json({ limit: opts.maxBodyBytes ?? 64 * 1024 * 1024 }));

  const api = new Api(express.Router());
  for (const register of routeModules) register(api, ctx);
  if (opts.apiServerStop) {
    // Behind authentication like every API route; answers first, then stops as A1111 does.
    api.post('/sdapi/v1/server-stop', { summary: 'Stop the server (only with --api-server-stop)', tag: 'server', example: 'Stopping.' }, (_req, res) => {
      res.once('finish', () => void close().then(() => opts.onServerStop?.()));
      res.type('text/plain').send('Stopping.');
      return undefined;
    });
  }
  api.get('/openapi.json', { summary: 'This OpenAPI document', tag: 'docs' }, () => openApiDocument(api.routes, VERSION));
  api.get('/docs', { summary: 'Human-readable API page', tag: 'docs' }, (_req, res) => {
    res.type('html').send(docsHtml(api.routes, VERSION));
    return undefined;
  });
  api.finish();
  app.use(api.router);
  app.use((_req, res) => {
    res.status(404).json({ detail: 'Not Found' });
  });
  app.use(errorHandler(log));

  const httpServer = createHttpServer(app);
  const io = new IoServer(httpServer, {
    cors: (opts.corsAllowOrigins?.length ?? 0) > 0 || corsRegex ? { origin: [...(opts.corsAllowOrigins ?? []), ...(corsRegex ? [corsRegex] : [])], credentials: true } : undefined,
    maxHttpBufferSize: 1e6,
    // WebSockets have no CORS: the handshake's Origin is checked here like every HTTP request's.
    allowRequest: (req, cb) => cb(originRefusal(originRules, req.headers), originRefusal(originRules, req.headers) === null),
  });
  io.use((socket, next) => {
    const user = socketUser(creds, socket.handshake.headers as Record<string, unknown>, socket.handshake.auth);
    if (user === null) return next(new Error('Not authenticated'));
    // Queue events of a user's jobs go to that user's sockets only (see wireSocketEvents).
    void socket.join(ownerRoom(user));
    next();
  });
  wireSocketEvents(ctx, io);
  attachTrainingSocket(ctx, io);
  attachLabelSocket(ctx, io);

  if (models.checkpoints().length === 0) {
    log(`No checkpoint found in ${layout.ckptDir}: the server runs, but txt2img/img2img answer an error until one is added (then POST /sdapi/v1/refresh-checkpoints).`);
  } else {
    if (models.usingFallback) log(demoNotice(layout.ckptDir));
    if (opts.loadOnStart !== false) {
      queue
        .submit({ kind: 'load_checkpoint', run: () => checkpoints.ensureLoaded(null, options.get('sd_vae'), []) })
        .promise.then((c) => log(`checkpoint loaded: ${c.title}`))
        .catch((e: unknown) => log(`could not load a checkpoint at start: ${(e as Error).message}`));
    }
  }

  await new Promise<void>((res, rej) => {
    httpServer.once('error', rej);
    httpServer.listen(opts.port ?? 7860, host, () => {
      httpServer.off('error', rej);
      res();
    });
  });
  const port = (httpServer.address() as AddressInfo).port;
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1' && !creds) {
    log(`warning: listening on ${host} without --api-auth: anyone who can reach this machine can use the API`);
  }
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await queue.close();
      io.disconnectSockets(true);
      await new Promise<void>((r) => io.close(() => r()));
      httpServer.closeAllConnections();
      await new Promise<void>((r) => httpServer.close(() => r()));
      // The prompt-check worker is shared by the process; a server started later makes a new one.
      await stopPromptChecks();
      await ownBackend?.close();
      await closeTraining(ctx);
      await closeLlm(ctx);
      await closeLabelling(ctx);
    })());
  return { app, httpServer, io, ctx, url, port, close };
}

/** The socket.io room of one user's sockets (`owner:` for anonymous clients of a server without auth). */
function ownerRoom(user: string): string {
  return `owner:${user}`;
}

/**
 * socket.io events (server → client), each sent only to the sockets of the job's owner (the user who queued
 * it; the server's own jobs, such as the checkpoint load at start, go to everyone); `pending` lists only
 * the waiting ids the receiver may see:
 * - `progress`: the /sdapi/v1/progress body plus `id` (task id) and `pending` (waiting job ids); sent on every
 *   step; `current_image` is set every `show_progress_every_n_steps` steps when live previews are on.
 * - `job-start` {id, job}, `job-end` {id, job, status: 'done'|'interrupted'|'cancelled'|'error', error?}.
 * - `queue` {pending}: the waiting job ids, when a job is queued.
 */
function wireSocketEvents(ctx: ServerContext, io: IoServer): void {
  const { queue } = ctx;
  // Events go out in the order they happened, even though progress events wait for a preview to render.
  let chain: Promise<void> = Promise.resolve();
  const send = (owner: string | null, name: string, make: () => Promise<Record<string, unknown>> | Record<string, unknown>, withPending: boolean) => {
    const waiting = withPending ? queue.pending() : [];
    chain = chain
      .then(async () => {
        const data = await make();
        const rooms = owner === null ? [...io.of('/').adapter.rooms.keys()].filter((r) => r.startsWith('owner:')) : [ownerRoom(owner)];
        for (const room of rooms) {
          const user = room.slice('owner:'.length);
          const pending = waiting.filter((w) => w.owner === null || w.owner === user).map((w) => w.id);
          io.to(room).emit(name, withPending ? { ...data, pending } : data);
        }
      })
      .catch(() => {});
  };
  queue.on('queued', (_id: string, owner: string | null) => send(owner, 'queue', () => ({}), true));
  queue.on('start', (s: RunningState) => send(s.owner, 'job-start', () => ({ id: s.id, job: s.kind }), false));
  queue.on('progress', (s: RunningState) => {
    const every = Number(ctx.options.get('show_progress_every_n_steps'));
    const wantImage = Boolean(ctx.options.get('live_previews_enable')) && every > 0 && s.step > 0 && s.step % every === 0 && s.preview !== null;
    let format: ReturnType<typeof checkSamplesFormat>;
    try {
      format = checkSamplesFormat(ctx.options.get('live_previews_image_format') ?? 'png');
    } catch {
      format = 'png';
    }
    // Snapshot now: the preview renders asynchronously and the job moves on meanwhile.
    const snap = { ...s };
    const now = Date.now();
    send(snap.owner, 'progress', async () => ({ ...(await progressResponse(snap, ctx.previews, { skipCurrentImage: !wantImage, format, now })), id: snap.id }), true);
  });
  queue.on('end', (s: RunningState, error: unknown) => {
    const status = error instanceof CancelledError ? 'cancelled' : error ? 'error' : s.interrupted ? 'interrupted' : 'done';
    send(s.owner, 'job-end', () => ({ id: s.id, job: s.kind, status, ...(error ? { error: (error as Error).message } : {}) }), false);
  });
}
