/**
 * The one-host lab most failover tests start from: the lab guest booted, a DR isolated network of
 * its own, and a config protecting the guest onto `<vm>-dr` on the DR site (the lab kernel, a NIC
 * on that network). `vmdr serve` and the set-up commands (provision, protect) are serveAndRun's.
 */
import assert from 'node:assert/strict';
import { bootLabVm, createLabVm, destroyLabVm, labBoot, removeLabVms, runVmdr, writeOneHostConfig, type LabVm } from './lab.js';
import { startServe, type ServeProcess } from './vmdr-serve.js';

/** The target's NIC on the DR network: what the DR VM is given besides the network. */
export interface LabNic {
  mac?: string;
  addresses?: string[];
  gateway?: string;
  dns?: string[];
}

/**
 * One protections item (YAML, two spaces deep): the lab VM protected as `name` (the VM's own by
 * default) onto `<name>-dr` on site dr, booting the lab kernel, its NIC on `network`. `settings`: lines of the protection after its source (tenant,
 * retention...); `health`: the lab guest's serial ready line as its health check.
 */
export function labProtection(vm: LabVm, options: { network: string; name?: string; health?: boolean; hostname?: string; nic?: LabNic; settings?: string[] }): string {
  const boot = labBoot();
  const nic = options.nic ?? {};
  const name = options.name ?? vm.name;
  const fields = [
    nic.mac && `mac: "${nic.mac}"`,
    `network: ${options.network}`,
    nic.addresses && `addresses: [${nic.addresses.join(', ')}]`,
    nic.gateway && `gateway: ${nic.gateway}`,
    nic.dns && `dns: [${nic.dns.join(', ')}]`,
  ].filter(Boolean);
  const lines = [
    `  - name: ${name}`,
    `    source: { site: prod, vm: ${vm.name} }`,
    ...(options.settings ?? []).map((s) => `    ${s}`),
    ...(options.health ? ['    health: { serial: "^VMDR-GUEST ready", timeout: 90s }'] : []),
    '    target:',
    '      site: dr',
    `      vm: ${name}-dr`,
    ...(options.hostname ? [`      hostname: ${options.hostname}`] : []),
    `      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }`,
    `      nics: [{ ${fields.join(', ')} }]`,
  ];
  return `${lines.join('\n')}\n`;
}

export interface ProtectedLabVm {
  vm: LabVm;
  /** The DR isolated network the target's NIC is on. */
  drNetwork: string;
  config: string;
}

/**
 * A lab VM (marker `<prefix>-src`, a 32 MiB disk) booted, its DR network, and writeOneHostConfig's
 * config with its protection (health-checked on the serial ready line). `more`: YAML after that
 * protection (more protections, then plans, drills, runbooks, tenants), written once the VM exists;
 * `config`: writeOneHostConfig's options (the state file's place, say), once the VM exists.
 */
export async function createProtectedLabVm(
  prefix: string,
  options: {
    hostname?: string;
    nic?: LabNic;
    settings?: string[];
    more?: (vm: LabVm, drNetwork: string) => string;
    config?: (vm: LabVm) => Parameters<typeof writeOneHostConfig>[2];
  } = {},
): Promise<ProtectedLabVm> {
  const vm = await createLabVm(prefix, { marker: `${prefix}-src`, diskSize: '32M' });
  const drNetwork = `test-dr-${vm.name.slice(-6)}`;
  // The test has nothing to clean up until this returns: what failed half way is removed here.
  try {
    await vm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    await bootLabVm(vm);
    const protection = labProtection(vm, { network: drNetwork, health: true, hostname: options.hostname, nic: options.nic, settings: options.settings });
    const config = await writeOneHostConfig(vm, `${protection}${options.more?.(vm, drNetwork) ?? ''}`, options.config?.(vm));
    return { vm, drNetwork, config };
  } catch (e) {
    await destroyProtectedLabVm(vm, drNetwork);
    throw e;
  }
}

/** Removes the other DR VMs named, the target, the DR network and the lab VM, whatever state a test left them in. */
export async function destroyProtectedLabVm(vm: LabVm | undefined, drNetwork: string, drVms: string[] = []): Promise<void> {
  if (!vm) return;
  await removeLabVms(vm.adapter, drVms);
  await destroyLabVm(vm, [drNetwork]);
}

/**
 * `vmdr serve --no-replicate` on `config`, then each set-up command (`vmdr ARGS --config config`),
 * which must exit 0. `run`: how the test runs the CLI, when it keeps what the CLI printed.
 */
export async function serveAndRun(
  config: string,
  commands: string[][],
  run: (args: string[]) => ReturnType<typeof runVmdr> = (args) => runVmdr([...args, '--config', config]),
): Promise<ServeProcess> {
  const serve = await startServe(config, { args: ['--no-replicate'] });
  try {
    for (const args of commands) {
      const r = await run(args);
      assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    }
  } catch (e) {
    await serve.stop();
    throw e;
  }
  return serve;
}
