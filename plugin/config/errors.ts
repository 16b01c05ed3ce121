import { VmdrError } from '../../hypervisors/errors.js';

/** The config file is missing, unreadable, not YAML, or does not match the schema. */
export class ConfigInvalid extends VmdrError {
  constructor(file: string, where: { position?: string; keyPath?: string }, problem: string, cause?: unknown) {
    const position = where.position ? `:${where.position}` : '';
    const keyPath = where.keyPath ? `${where.keyPath}: ` : '';
    super('CONFIG_INVALID', `${file}${position}: ${keyPath}${problem}`, { subject: { file, path: where.keyPath }, cause });
  }
}

/** The config is valid but does not name the object the user asked for. */
export class NotInConfig extends VmdrError {
  constructor(kind: string, name: string, file: string) {
    super('NOT_IN_CONFIG', `${file}: no ${kind} named "${name}"`, { subject: { file, [kind]: name } });
  }
}
