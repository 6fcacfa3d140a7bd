#!/usr/bin/env node
// The package ships TypeScript sources; tsx compiles them on load so a fresh clone runs without a build step.
import { mallocTunablesFor, relaunchWithHugePages } from './huge-pages.js';

if (!relaunchWithHugePages(mallocTunablesFor(process.argv[2]))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
