/**
 * A protection taken out of the config (the API's `DELETE /protections/{name}`). Its replica and
 * recovery points stay on the DR site, and its target VM stays defined: they are the customer's
 * data, and removing a protection must never be the way they are lost. Refused while a plan starts
 * it, a failover holds it, or it is failed over.
 */
import { editConfig, removeNamedItems } from '../config/edit.js';
import { NotInConfig } from '../config/errors.js';
import type { Config, Protection } from '../config/schema.js';
import { lockHolder } from '../state/failovers.js';
import { roleOf } from '../state/roles.js';
import type { StateStore } from '../state/store.js';
import { ProtectionInUse } from './errors.js';

export interface RemovedProtection {
  protection: string;
  /** Where its replica stays: the DR site and the target VM. */
  kept: { site: string; targetVm: string };
}

export async function removeProtection(file: string, state: StateStore, name: string): Promise<RemovedProtection> {
  const { result } = await editConfig(file, (doc, current) => {
    const p = current.protections.find((x) => x.name === name);
    if (!p) throw new NotInConfig('protection', name, file);
    refuseWhileInUse(current, p, state);
    removeNamedItems(doc, 'protections', current.protections, new Set([name]));
    return { protection: p.name, kept: { site: p.target.site, targetVm: p.target.vm } };
  });
  return result;
}

function refuseWhileInUse(config: Config, p: Protection, state: StateStore): void {
  const plans = config.plans.filter((plan) => plan.groups.some((g) => g.vms.includes(p.name))).map((plan) => plan.name);
  if (plans.length) {
    throw new ProtectionInUse(p.name, `is started by plan${plans.length > 1 ? 's' : ''} ${plans.map((x) => `"${x}"`).join(', ')}`, 'take it out of those plans first');
  }
  const held = lockHolder(state.db, p.name);
  if (held) throw new ProtectionInUse(p.name, `is held by failover ${held}`, 'wait for it to end (or resume or revert it), then remove the protection');
  const role = roleOf(state.db, p.name);
  if (role.role === 'failed-over') {
    throw new ProtectionInUse(p.name, `is failed over${role.failover ? ` (${role.failover})` : ''}: its target runs as production`, `fail it back (vmdr failback ${p.name}) or revert the failover first`);
  }
}
