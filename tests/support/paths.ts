import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Golden fixtures from the reference Python stack, kept in tests/fixtures; LORA_SCRIPTS_FIXTURES points the same tests at another set. */
export const fixturesDir = resolve(repoRoot, process.env.LORA_SCRIPTS_FIXTURES ?? 'tests/fixtures');
