import type { Config, Protection } from '../config/schema.js';
import { NotInConfig } from '../config/errors.js';

/** A protection by its name, or by the name of the source VM it protects (what users type). */
export function findProtection(config: Config, file: string, ref: string): Protection {
  const p = config.protections.find((x) => x.name === ref) ?? config.protections.find((x) => x.source.vm === ref);
  if (!p) throw new NotInConfig('protection', ref, file);
  return p;
}
