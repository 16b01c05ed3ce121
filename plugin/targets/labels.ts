/** How vmdr marks the VMs it made, so it only ever touches its own. */
export const LABEL_ROLE = 'role';
export const LABEL_PROTECTION = 'protection';
export const LABEL_TENANT = 'tenant';

export const ROLE_TARGET = 'target';

export function targetLabels(protection: string, tenant: string | undefined): Record<string, string> {
  return { [LABEL_ROLE]: ROLE_TARGET, [LABEL_PROTECTION]: protection, ...(tenant ? { [LABEL_TENANT]: tenant } : {}) };
}

/** A target that was failed over: production on the DR site, no longer guarded as a replica. */
export const ROLE_PROMOTED = 'promoted';
/** A throwaway VM of a test failover, on the drill's own bubble network. */
export const ROLE_DRILL = 'drill';
export const LABEL_FAILOVER = 'failover';
/** A source VM a failover fenced: powered off, autostart off, started again only by vmdr (failback, revert). */
export const ROLE_FENCED = 'fenced';
/**
 * On a source VM whose DR site may fail it over without its host hearing of it: the protection.
 * scripts/hooks/libvirt-qemu lets it start only with a start lease (plugin/sites/source-guard.ts).
 */
export const LABEL_SOURCE_OF = 'source-of';
