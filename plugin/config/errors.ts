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
