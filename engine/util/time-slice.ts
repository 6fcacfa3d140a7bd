/**
 * Cuts a long synchronous loop into slices: `await slice()` inside the loop gives the event loop a turn
 * once `budgetMs` of work has passed since the last one, so a server answers other requests meanwhile.
 */
export function timeSlicer(budgetMs = 20): () => Promise<void> | undefined {
  let since = performance.now();
  return () => {
    if (performance.now() - since < budgetMs) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        since = performance.now();
        resolve();
      }),
    );
  };
}
