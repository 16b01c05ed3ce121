import type { Argv, CommandModule } from 'yargs';
import { openAdapter } from '../../hypervisors/index.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface ListOptions extends GlobalOptions {
  host: string;
}

const list: CommandModule<GlobalOptions, ListOptions> = {
  command: 'list',
  describe: 'List the VMs of a hypervisor',
  builder: (y: Argv<GlobalOptions>) =>
    y.option('host', {
      type: 'string',
      demandOption: true,
      describe: 'Hypervisor URI: qemu:///system, qemu+ssh://host/system, test:///default',
    }),
  handler: (argv) =>
    run(argv, async () => {
      const adapter = openAdapter(argv.host);
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
    }),
};

export const vmCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(list).demandCommand(1),
  handler: () => undefined,
};
