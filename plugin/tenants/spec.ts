/**
 * A tenant as a user asks for it (CLI options, later an API body) checked at the edge and turned
 * into its config entry. Every refusal is one line naming the argument in the user's words: a
 * name with a path separator, "..", a control character or a space never gets further.
 */
import { TenantSchema, type Tenant } from '../config/schema.js';
import { TenantInvalid } from './errors.js';
import { isName, MAX_NAME_LENGTH, tenantNetworkName } from './names.js';

export interface TenantRequest {
  name: string;
  description?: string;
  /** Replica bytes the tenant may keep on the DR site, in GiB. */
  storageQuotaGiB?: number | string;
  /** How many VMs the tenant may protect. */
  vmQuota?: number | string;
  /** The tenant's own words for its DR networks (`lan`, `dmz`); one network, `dr`, when none. */
  networks?: string[];
}

export const DEFAULT_NETWORK = 'dr';
const NAME_RULE = `a name of letters, digits, ".", "-" or "_" starting with a letter or digit (at most ${MAX_NAME_LENGTH})`;
const MAX_DESCRIPTION = 1000;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

export interface TenantNetwork {
  /** The tenant's word for it. */
  network: string;
  /** Its name on the hypervisor and in the config. */
  name: string;
}

/** Refuses a tenant name that is not a config name: the same rule for create, show and remove. */
export function checkTenantName(name: string): void {
  if (!isName(name)) throw new TenantInvalid(name, 'tenant name', `${quote(name)} is not ${NAME_RULE}`);
}

export function tenantSpec(request: TenantRequest): { tenant: Tenant; networks: TenantNetwork[] } {
  const { name } = request;
  checkTenantName(name);
  const refuse = (field: string, detail: string) => new TenantInvalid(name, field, detail);
  if (request.description !== undefined) {
    if (CONTROL.test(request.description)) throw refuse('description', `${quote(request.description)} holds control characters (one line of text)`);
    if (request.description.length > MAX_DESCRIPTION) throw refuse('description', `is longer than ${MAX_DESCRIPTION} characters`);
  }
  const words = request.networks?.length ? request.networks : [DEFAULT_NETWORK];
  const networks = words.map((network, i) => {
    if (!isName(network)) throw refuse('network name', `${quote(network)} is not ${NAME_RULE}`);
    if (words.indexOf(network) !== i) throw refuse('network name', `${quote(network)} is given twice`);
    const full = tenantNetworkName(name, network);
    if (full.length > MAX_NAME_LENGTH) {
      throw refuse(
        'network name',
        `${quote(network)} of tenant "${name}" would make the DR network "${full}", ${full.length} characters: tenant and network names together may hold at most ${MAX_NAME_LENGTH - (full.length - name.length - network.length)}`,
      );
    }
    return { network, name: full };
  });
  const storageGiB = quota(request.storageQuotaGiB, (n) => n > 0, () => refuse('storage quota', `${quote(String(request.storageQuotaGiB))} is not a number of GiB above 0`));
  const vms = quota(request.vmQuota, (n) => Number.isInteger(n) && n > 0, () => refuse('VM quota', `${quote(String(request.vmQuota))} is not a whole number above 0`));
  const tenant = TenantSchema.parse({
    name,
    ...(request.description !== undefined ? { description: request.description } : {}),
    ...(storageGiB !== undefined || vms !== undefined ? { quota: { ...(storageGiB !== undefined ? { storageGiB } : {}), ...(vms !== undefined ? { vms } : {}) } } : {}),
    networks: networks.map((n) => n.name),
  });
  return { tenant, networks };
}

function quota(value: number | string | undefined, valid: (n: number) => boolean, refuse: () => Error): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'number' ? value : value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(n) || !valid(n)) throw refuse();
  return n;
}

/** Quoted with escapes: a control character shows as \n or \u0007, never breaks the line. */
function quote(text: string): string {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return JSON.stringify(shown);
}
