/**
 * The names of a tenant's own DR networks on the hypervisor. Tenant and network names may both
 * hold "-", so `<tenant>-<network>` would let tenant "t-a" with network "b-c" and tenant "t-a-b"
 * with network "c" share one network. The tenant's name is preceded by its length instead:
 * `vmdr-t3-t-a-b-c` and `vmdr-t5-t-a-b-c`. Read from the left, the length says where the tenant's
 * name ends, so one network name comes from exactly one (tenant, network) pair, and no drill bubble
 * (`vmdr-drill-…`) or other vmdr network has this form.
 */
import { NAME_PATTERN } from '../config/schema.js';
import { LABEL_ROLE, LABEL_TENANT } from '../targets/labels.js';

/** The config's names (a target NIC's network, a tenant's networks) are at most this long. */
export const MAX_NAME_LENGTH = 63;

/** The tenant's own word for the network (`--network dmz`). */
export const LABEL_NETWORK = 'network';
export const ROLE_TENANT_NETWORK = 'tenant-network';

export function tenantNetworkName(tenant: string, network: string): string {
  return `vmdr-t${tenant.length}-${tenant}-${network}`;
}

export function tenantNetworkLabels(tenant: string, network: string): Record<string, string> {
  return { [LABEL_ROLE]: ROLE_TENANT_NETWORK, [LABEL_TENANT]: tenant, [LABEL_NETWORK]: network };
}

/** Whether a hypervisor network's labels say vmdr made it for `tenant`. */
export function isNetworkOf(labels: Record<string, string> | undefined, tenant: string): boolean {
  return labels?.[LABEL_ROLE] === ROLE_TENANT_NETWORK && labels[LABEL_TENANT] === tenant;
}

export const isName = (text: string): boolean => NAME_PATTERN.test(text);
