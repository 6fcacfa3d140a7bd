import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Golden fixtures from the reference Python stack; overridable so the same tests run on another fixture set. */
export const fixturesDir = resolve(repoRoot, process.env.LORA_SCRIPTS_FIXTURES ?? '../shared/fixtures');
