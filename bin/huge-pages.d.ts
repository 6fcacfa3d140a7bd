/** See huge-pages.js. */
export function mallocTunablesFor(command: string | undefined): string;
/** True when this process started a second one with `tunables` and must do nothing more itself. */
export function relaunchWithHugePages(tunables?: string): boolean;
