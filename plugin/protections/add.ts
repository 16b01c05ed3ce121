/**
 * A protection added to the config (the API's `POST /protections`): the entry as the operator
 * would write it in YAML, checked by the config's own schema and references (its sites, its
 * tenant and the tenant's quota.vms) under the config's lock, then written. The daemon starts its
 * replication loop when it reloads the config; the first cycle stages nothing the operator did not
 * ask for: the target is pre-staged as `vmdr protect` does, by the first sync.
 */
import { appendItem, editConfig } from '../config/edit.js';
import type { Protection } from '../config/schema.js';
import { ProtectionExists } from './errors.js';

export async function addProtection(file: string, entry: { name: string } & Record<string, unknown>): Promise<Protection> {
  const { config } = await editConfig(file, (doc, current) => {
    if (current.protections.some((p) => p.name === entry.name)) throw new ProtectionExists(entry.name, file);
    appendItem(doc, 'protections', entry);
  });
  return config.protections.find((p) => p.name === entry.name)!;
}
