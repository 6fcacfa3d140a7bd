/**
 * An error caused by the user's input (a file, a config key, a request field), as opposed to a bug.
 * The CLI prints its message alone, without a stack; the server answers it with 4xx instead of 500.
 */
export class UserError extends Error {
  override name = 'UserError';
  /** HTTP status the server should answer with. */
  readonly status: number;
  constructor(message: string, options?: { status?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.status = options?.status ?? 400;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
