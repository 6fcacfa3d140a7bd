import { UserError } from '../engine/util/errors.ts';

/** For subcommands whose engine part has not landed yet: one line, non-zero exit. */
export function notBuilt(name: string): never {
  throw new UserError(`'${name}' is not built yet in this version of lora-scripts`);
}
