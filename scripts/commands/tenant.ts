import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import type { TenantsContext } from '../../plugin/tenants/create.js';
import type { NetworkState } from '../../plugin/tenants/networks.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

/** The config and the DR sites' connections, closed whatever happens. */
async function withTenants<T>(configFile: string, work: (ctx: TenantsContext) => Promise<T>): Promise<T> {
  const { file, config } = await loadConfig(configFile);
  const sites = new SiteConnections(config, file);
  try {
    return await work({ file, config, sites });
  } finally {
    await sites.close();
  }
}

interface CreateOptions extends GlobalOptions {
  name: string;
  description?: string;
  storageQuota?: string;
  vmQuota?: string;
  network: string[];
}

const create: CommandModule<GlobalOptions, CreateOptions> = {
  command: 'create <name>',
  describe:
    "Add a tenant to the config and make its own isolated DR networks on the DR sites reached from here (a DR site on another host: `vmdr serve` there, or this command there, makes them)",
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'Letters, digits, ".", "-", "_"' })
      .option('description', { type: 'string', describe: 'One line about the tenant' })
      .option('storage-quota', { type: 'string', describe: 'Replica storage the tenant may use on the DR site, in GiB' })
      .option('vm-quota', { type: 'string', describe: 'How many VMs the tenant may protect' })
      .option('network', {
        type: 'string',
        array: true,
        default: [],
        describe: 'A DR network of the tenant, in its own words (repeat for more; default one, "dr"); on the hypervisor it is vmdr-t<length of tenant name>-<tenant>-<network>',
      }),
  handler: (argv) =>
    run(argv, () =>
      withTenants(argv.config, async (ctx) => {
        const { createTenant } = await import('../../plugin/tenants/create.js');
        const created = await createTenant(ctx, {
          name: argv.name,
          ...(argv.description !== undefined ? { description: argv.description } : {}),
          ...(argv.storageQuota !== undefined ? { storageQuotaGiB: argv.storageQuota } : {}),
          ...(argv.vmQuota !== undefined ? { vmQuota: argv.vmQuota } : {}),
          networks: argv.network.map(String),
        });
        if (argv.json) return printJson(created);
        const lines = [`tenant ${created.tenant.name} added to ${ctx.file}`];
        for (const n of created.networks) {
          const sites = created.ensured.filter((e) => e.network === n.name);
          const where = sites.length ? sites.map((e) => `${e.made ? 'made' : 'already there'} on site ${e.site}`).join(', ') : 'on no DR site reached from here';
          lines.push(`network ${n.network}: ${n.name}, ${where}`);
        }
        if (created.elsewhere.length) lines.push(`DR sites on other hosts (${created.elsewhere.join(', ')}): vmdr serve there makes the networks`);
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    ),
};

const list: CommandModule<GlobalOptions, GlobalOptions> = {
  command: 'list',
  describe: 'List the tenants of the config, their quotas and what they own',
  handler: (argv) =>
    run(argv, async () => {
      const { config } = await loadConfig(argv.config);
      const { listTenants } = await import('../../plugin/tenants/describe.js');
      const tenants = listTenants(config);
      if (argv.json) return printJson(tenants);
      printTable(
        ['TENANT', 'STORAGE QUOTA', 'VM QUOTA', 'NETWORKS', 'PROTECTIONS', 'PLANS', 'DRILLS', 'DESCRIPTION'],
        tenants.map((t) => [
          t.name,
          t.quota?.storageGiB !== undefined ? `${t.quota.storageGiB} GiB` : '-',
          t.quota?.vms !== undefined ? String(t.quota.vms) : '-',
          t.networks.join(',') || '-',
          String(t.owns.protections),
          String(t.owns.plans),
          String(t.owns.drills),
          t.description ?? '',
        ]),
      );
    }),
};

interface NameOptions extends GlobalOptions {
  name: string;
}

const show: CommandModule<GlobalOptions, NameOptions> = {
  command: 'show <name>',
  describe: 'Show a tenant: quotas, networks (and whether each exists on the DR sites reached from here), protections, plans and drills',
  builder: (y: Argv<GlobalOptions>) => y.positional('name', { type: 'string', demandOption: true }),
  handler: (argv) =>
    run(argv, () =>
      withTenants(argv.config, async (ctx) => {
        const { showTenant } = await import('../../plugin/tenants/describe.js');
        const t = await showTenant(ctx, argv.name);
        if (argv.json) return printJson(t);
        const lines = [
          `tenant:        ${t.name}`,
          `description:   ${t.description ?? '-'}`,
          `storage quota: ${t.quota?.storageGiB !== undefined ? `${t.quota.storageGiB} GiB` : 'none'}`,
          `VM quota:      ${t.quota?.vms ?? 'none'}`,
          `networks:      ${t.networks.length ? '' : 'none (its protections may use any network)'}`,
          ...t.networks.map((n) => `  ${n}: ${describeStates(t.networkStates.filter((s) => s.network === n))}`),
          `protections:   ${t.protections.length ? '' : 'none'}`,
          ...t.protections.map((p) => `  ${p.name}: ${p.source.vm} on ${p.source.site} -> ${p.target.vm} on ${p.target.site}`),
          `plans:         ${t.plans.map((p) => p.name).join(', ') || 'none'}`,
          `drills:        ${t.drills.map((d) => `${d.name} (plan ${d.plan}, ${d.schedule})`).join(', ') || 'none'}`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    ),
};

function describeStates(states: NetworkState[]): string {
  if (states.length === 0) return 'no DR site reached from here';
  return states
    .map((s) => {
      if ('unreachable' in s) return `site ${s.site}: unknown (${s.unreachable})`;
      if (!s.exists) return `site ${s.site}: missing`;
      const facts = [s.active ? 'active' : 'inactive', s.isolated ? 'isolated' : 'NOT isolated', ...(s.madeForTenant ? [] : ['not made by vmdr for this tenant'])];
      return `site ${s.site}: ${facts.join(', ')}`;
    })
    .join('; ');
}

interface RemoveOptions extends NameOptions {
  force: boolean;
}

const remove: CommandModule<GlobalOptions, RemoveOptions> = {
  command: 'remove <name>',
  describe:
    'Remove a tenant from the config and its networks from the DR sites reached from here. Refused while it owns protections, plans or drills (TENANT_IN_USE), or while a running VM uses one of its networks',
  builder: (y: Argv<GlobalOptions>) =>
    y.positional('name', { type: 'string', demandOption: true }).option('force', {
      type: 'boolean',
      default: false,
      describe: "Also remove the tenant's plans and their drills. Never its protections: remove those first (their replicas stay on the DR site)",
    }),
  handler: (argv) =>
    run(argv, () =>
      withTenants(argv.config, async (ctx) => {
        const { removeTenant } = await import('../../plugin/tenants/remove.js');
        const removed = await removeTenant(ctx, argv.name, { force: argv.force });
        if (argv.json) return printJson(removed);
        const lines = [removed.removedFromConfig ? `tenant ${removed.tenant} removed from ${ctx.file}` : `tenant ${removed.tenant} was no longer in ${ctx.file}`];
        if (removed.removed.plans.length) lines.push(`plans removed with it: ${removed.removed.plans.join(', ')}`);
        if (removed.removed.drills.length) lines.push(`drills removed with it: ${removed.removed.drills.join(', ')}`);
        for (const n of removed.networks) lines.push(`network ${n.network} removed from site ${n.site}`);
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    ),
};

export const tenantCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(create).command(list).command(show).command(remove).demandCommand(1),
  handler: () => undefined,
};
