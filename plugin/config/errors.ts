import { VmdrError } from '../../hypervisors/errors.js';

/** The config file is missing, unreadable, not YAML, or does not match the schema. */
export class ConfigInvalid extends VmdrError {
  constructor(
    file: string,
    readonly where: { position?: string; keyPath?: string },
    /** What is wrong, without where: editConfig reports it for a text that was never written. */
    readonly problem: string,
    cause?: unknown,
  ) {
    const position = where.position ? `:${where.position}` : '';
    const keyPath = where.keyPath ? `${where.keyPath}: ` : '';
    super('CONFIG_INVALID', `${file}${position}: ${keyPath}${problem}`, { subject: { file, path: where.keyPath }, cause });
  }
}

/** Another change of the config file (a CLI command, the daemon's API) held its lock past the wait. */
export class ConfigLocked extends VmdrError {
  constructor(file: string, lockFile: string, holder: string | undefined, waitedMs: number) {
    const by = holder ? ` by process ${holder}` : '';
    super('CONFIG_LOCKED', `${file}: another change of this config holds its lock (${lockFile})${by}; waited ${waitedMs / 1000} s`, {
      subject: { file, lockFile, holder },
      remedy: 'try again once that change has finished',
    });
  }
}

/** The config file could not be changed: its directory is not writable, the disk is full. Nothing was changed. */
export class ConfigNotWritable extends VmdrError {
  constructor(file: string, detail: string, cause?: unknown) {
    super('CONFIG_NOT_WRITABLE', `${file}: cannot change it (${detail}); it is unchanged`, { subject: { file }, cause });
  }
}

/** The config is valid but does not name the object the user asked for. */
export class NotInConfig extends VmdrError {
  constructor(kind: string, name: string, file: string) {
    super('NOT_IN_CONFIG', `${file}: no ${kind} named "${name}"`, { subject: { file, [kind]: name } });
  }
}

/**
 * The config says this host is site `localSite`, and something asked for another site's
 * hypervisor: across hosts a site is asked through its `vmdr serve` endpoint, never through its
 * hypervisor URI (which, on this host, may well name this host's own hypervisor).
 */
export class SiteNotLocal extends VmdrError {
  constructor(site: string, localSite: string, file: string) {
    super('SITE_NOT_LOCAL', `${file}: site "${site}" is another host (this host is site "${localSite}"): its hypervisor is not reached from here`, {
      subject: { file, site, localSite },
      remedy: `run this on site "${site}"'s host`,
    });
  }
}
