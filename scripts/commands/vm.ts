import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { openAdapter } from '../../hypervisors/index.js';
import { hypervisorOf } from '../../hypervisors/schemes.js';
import { EXIT_USAGE, printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface ListOptions extends GlobalOptions {
  host: string;
  passwordFile?: string;
}

const list: CommandModule<GlobalOptions, ListOptions> = {
  command: 'list',
  describe: 'List the VMs of a hypervisor',
  builder: (y: Argv<GlobalOptions>) =>
    y.option('host', {
      type: 'string',
      demandOption: true,
      describe: 'Hypervisor URI: qemu:///system, qemu+ssh://host/system, test:///default, vsphere://user@host/Datacenter[?thumbprint=SHA256:…]',
    })
    // No flag carries a password: argv is in every `ps`. The environment (VMDR_VSPHERE_PASSWORD) or a file.
    .option('password-file', {
      type: 'string',
      describe: 'vsphere:// only: a file (mode 0600) holding the password; default the environment variable VMDR_VSPHERE_PASSWORD',
    }),
  handler: (argv) => {
    if (argv.passwordFile !== undefined && hypervisorOf(argv.host) !== 'vsphere') {
      process.stderr.write(`vmdr: --password-file is for vsphere:// hosts, not ${argv.host} (see vmdr vm list --help)\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    return run(argv, async () => {
      const adapter = openAdapter(argv.host, argv.passwordFile !== undefined ? { vsphere: { passwordFile: resolve(argv.passwordFile) } } : {});
      try {
        await adapter.connect();
        const vms = await adapter.listVms();
        if (argv.json) return printJson(vms);
        printTable(
          ['NAME', 'STATE', 'MEMORY', 'VCPUS', 'DISKS', 'NICS'],
          vms.map((vm) => [
            vm.name,
            vm.powerState,
            `${vm.memoryMiB} MiB`,
            String(vm.vcpus),
            vm.disks.map((d) => d.target).join(',') || '-',
            vm.nics.map((n) => `${n.mac}@${n.network ?? n.bridge ?? '?'}`).join(',') || '-',
          ]),
        );
      } finally {
        await adapter.close();
      }
    });
  },
};

export const vmCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(list).demandCommand(1),
  handler: () => undefined,
};
