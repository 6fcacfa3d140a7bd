/**
 * `--queue redis://[user:password@]host:port[/db]` (or `rediss://` for TLS) → ioredis connection options.
 *
 * Secrets stay out of logs: `describeRedisUrl` prints the URL with the password replaced. TLS options beyond
 * the scheme come from the environment, because a CA file or a client certificate is a deployment matter:
 * `LORA_SCRIPTS_REDIS_CA` (PEM file of the CA that signed the server's certificate), `LORA_SCRIPTS_REDIS_CERT`
 * and `LORA_SCRIPTS_REDIS_KEY` (client certificate for mutual TLS). The password may also come from
 * `LORA_SCRIPTS_REDIS_PASSWORD`, so it need not appear on a command line that `ps` shows.
 */
import { readFileSync } from 'node:fs';
import { UserError } from '../../engine/util/errors.ts';

/** Plain options both ioredis and BullMQ take. */
export interface RedisConnectionOptions {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  maxRetriesPerRequest: null;
  tls?: { servername: string; ca?: Buffer; cert?: Buffer; key?: Buffer };
}

export interface RedisTarget {
  options: RedisConnectionOptions;
  /** The URL with its password masked, for logs and /sdapi/v1/cmd-flags. */
  display: string;
}

function readPem(envName: string): Buffer | undefined {
  const path = process.env[envName];
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UserError(`${envName}: cannot read ${path} (${(e as Error).message})`);
  }
}

export function parseRedisUrl(url: string, flag = '--queue'): RedisTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`${flag}: '${url}' is not a URL; expected redis://host:port[/db] or rediss://host:port[/db]`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new UserError(`${flag}: unsupported scheme '${u.protocol}' in '${describe(u)}'; expected redis:// or rediss:// (TLS)`);
  }
  if (!u.hostname) throw new UserError(`${flag}: '${describe(u)}' names no host`);
  const port = u.port === '' ? 6379 : Number(u.port);
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw new UserError(`${flag}: database '${dbText}' in '${describe(u)}' is not a database number`);
  const password = u.password ? decodeURIComponent(u.password) : process.env['LORA_SCRIPTS_REDIS_PASSWORD'] || undefined;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const options: RedisConnectionOptions = {
    host,
    port,
    db,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(password ? { password } : {}),
    // BullMQ's blocking connections need commands to wait through reconnects instead of failing.
    maxRetriesPerRequest: null,
  };
  if (u.protocol === 'rediss:') {
    options.tls = { servername: host, ca: readPem('LORA_SCRIPTS_REDIS_CA'), cert: readPem('LORA_SCRIPTS_REDIS_CERT'), key: readPem('LORA_SCRIPTS_REDIS_KEY') };
  }
  return { options, display: describe(u) };
}

function describe(u: URL): string {
  const c = new URL(u.href);
  if (c.password) c.password = '***';
  return c.href;
}
