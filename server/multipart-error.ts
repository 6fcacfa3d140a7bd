/**
 * A multipart body the parser cannot read (no boundary, a malformed part header, a truncated body) is the
 * client's fault: busboy's parse errors carry no errno code, while the file system's (full disk,
 * permissions) do and stay server errors.
 */
import { HttpError } from './errors.ts';

export function multipartParseError(err: unknown): HttpError | null {
  if (err instanceof Error && !(err instanceof HttpError) && (err as NodeJS.ErrnoException).code === undefined) {
    return new HttpError(400, `bad multipart upload: ${err.message}`);
  }
  return null;
}
