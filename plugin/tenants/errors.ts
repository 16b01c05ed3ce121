import { VmdrError } from '../../hypervisors/errors.js';

/** A tenant's name, network, description or quota as given is not one vmdr accepts. Nothing was changed. */
export class TenantInvalid extends VmdrError {
  constructor(tenant: string, field: string, detail: string) {
    super('TENANT_INVALID', `${field} ${detail}`, { subject: { tenant, field } });
  }
}

export class TenantExists extends VmdrError {
  constructor(tenant: string, file: string) {
    super('TENANT_EXISTS', `${file}: tenant "${tenant}" already exists`, {
      subject: { tenant, file },
      remedy: `vmdr tenant show ${tenant} lists its networks; vmdr serve on each DR host makes those missing there`,
    });
  }
}

/** The tenant still owns objects its removal would orphan. Nothing was changed. */
export class TenantInUse extends VmdrError {
  constructor(tenant: string, owned: string, remedy: string) {
    super('TENANT_IN_USE', `tenant "${tenant}" still owns ${owned}`, { subject: { tenant }, remedy });
  }
}

/** A network a VM runs on is not removed under it. */
export class NetworkInUse extends VmdrError {
  constructor(network: string, host: string, vms: string[], tenant: string) {
    const list = vms.map((vm) => JSON.stringify(vm)).join(', ');
    super('NETWORK_IN_USE', `network "${network}" of tenant "${tenant}" on ${host} is in use by running VM${vms.length > 1 ? 's' : ''} ${list}`, {
      subject: { network, host, tenant, vm: vms[0] },
      remedy: 'stop or move those VMs first; nothing was removed',
    });
  }
}
