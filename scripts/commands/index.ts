/**
 * Every command of vmdr: what `vmdr --help` lists, and the module that does it. A command's module
 * is loaded only when that command runs (or shows its own help), so each command pays for the
 * modules it uses and no other: `vmdr --help` opens nothing, and `vmdr status` never loads the
 * HTTPS server or the failover runner.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { GlobalOptions } from './options.js';

/** What a command's module exports: its options and positionals (or none), and its handler. */
export interface CommandBody<T> {
  builder?: (y: Argv<GlobalOptions>) => Argv<T>;
  handler: (argv: ArgumentsCamelCase<T>) => void | Promise<void>;
}

export function withCommands(y: Argv<GlobalOptions>): Argv<GlobalOptions> {
  return y
    .command(lazy('vm <command>', 'Look at the VMs of a hypervisor', async () => (await import('./vm.js')).vmCommand))
    .command(lazy('config <command>', 'Work with the config file', async () => (await import('./config.js')).configCommand))
    .command(
      lazy(
        'status',
        'Show every protection: its VMs, role (replicating or failed over), newest recovery point, lag, last sync and how its target drifted from its source',
        async () => (await import('./status.js')).statusCommand,
      ),
    )
    .command(
      lazy('events', "The watch's events on this DR host: each change of state of a watched source (--follow: as they come)", async () => (await import('./events.js')).eventsCommand),
    )
    .command(lazy('watch <command>', 'After an automatic failover: let the watch act on a protection again (clear)', async () => (await import('./watch.js')).watchCommand))
    .command(
      lazy('allow-start <protection>', "On a source host: let a protection's source VM start without its DR site's answer that it is not failed over", async () => (await import('./allow-start.js')).allowStartCommand),
    )
    .command(lazy('tenant <command>', "Create, list, show and remove tenants and their own DR networks", async () => (await import('./tenant.js')).tenantCommand))
    .command(lazy('target <command>', 'Manage the pre-staged DR target VMs', async () => (await import('./target.js')).targetCommand))
    .command(
      lazy('protect <vm>', 'Start protecting a VM: pre-stage its DR target and ship its first recovery point', async () => (await import('./protect.js')).protectCommand),
    )
    .command(lazy('pause <vm>', "Pause a protection's replication: no cycle, no sync, until resumed", async () => (await import('./pause.js')).pauseCommand))
    .command(lazy('resume <vm>', "Resume a protection's replication paused with vmdr pause", async () => (await import('./pause.js')).resumeCommand))
    .command(lazy('sync [vm]', 'Ship what changed on a protected VM (or on every member of a consistency group, --group) to its DR replica as a new recovery point', async () => (await import('./sync.js')).syncCommand))
    .command(
      lazy(
        'points <vm>',
        "List a protected VM's recovery points on its DR site, oldest first (asks the site's receiver when run elsewhere)",
        async () => (await import('./points.js')).pointsCommand,
      ),
    )
    .command(lazy('serve', 'Run the daemon: DR receivers and continuous replication', async () => (await import('./serve.js')).serveCommand))
    .command(lazy('token <command>', 'Make, list and revoke the API tokens of the daemon on this host', async () => (await import('./token.js')).tokenCommand))
    .command(lazy('site <command>', "This site's identity, and pairing with peer sites", async () => (await import('./site.js')).siteCommand))
    .command(
      lazy('failover [vm] [run]', 'Bring a protected VM (or a plan) up on its DR target: unplanned by default', async () => (await import('./failover.js')).failoverCommand, { warmUp: true }),
    )
    .command(
      lazy('runbook <command>', 'Run a plan\'s failover with a runbook, check a runbook, approve a waiting step', async () => (await import('./runbook.js')).runbookCommand),
    )
    .command(
      lazy('drill <command>', 'Run a configured drill now, and read the drill history', async () => (await import('./drill.js')).drillCommand),
    )
    .command(
      lazy(
        'failback [vm]',
        'Bring a failed-over VM (or plan) home with what it did on the DR site: only changed blocks travel back',
        async () => (await import('./failback.js')).failbackCommand,
        { warmUp: true },
      ),
    )
    .command(
      lazy('report <command>', "A run's signed report (JSON and a self-contained HTML page), the key that signs them, and their check", async () => (await import('./report.js')).reportCommand),
    );
}

/**
 * A command whose module is loaded when yargs builds it (yargs awaits an async builder). `warmUp`:
 * the command reaches its sites' hypervisors at once, so their adapters get ready while its module loads.
 */
function lazy<T>(command: string, describe: string, load: () => Promise<CommandBody<T>>, options: { warmUp?: boolean } = {}): CommandModule<GlobalOptions, T> {
  let body: CommandBody<T> | undefined;
  return {
    command,
    describe,
    builder: async (y) => {
      if (options.warmUp && !process.argv.includes('--help')) void import('../cli/warm-up.js').then((m) => m.warmUpSites(), () => undefined);
      body = await load();
      // A command without a builder takes only the global options: T is GlobalOptions.
      return body.builder ? body.builder(y) : (y as unknown as Argv<T>);
    },
    handler: (argv) => body!.handler(argv),
  };
}
