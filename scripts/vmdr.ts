#!/usr/bin/env node
/** The vmdr command line: one module per command under scripts/commands/, each loaded when it runs. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { EXIT_FAILURE, EXIT_USAGE, reportError } from './cli/report.js';
import { DEFAULT_CONFIG_FILE } from './cli/config-argument.js';
import { withCommands } from './commands/index.js';

// What escapes every command (a background promise, a timer) is still one line; the stack with --debug.
// Read from argv here, not only by yargs: such an error can come before a command's module has
// loaded and yargs has run its middleware.
if (process.argv.includes('--debug')) process.env.VMDR_DEBUG = '1';
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    reportError(err, { json: process.argv.includes('--json') });
    process.exit(EXIT_FAILURE);
  });
}

// Everything vmdr writes (replica images, seeds, state, credentials) is customers' or secret:
// private from the start, for the files its children (qemu-img, xorriso, openssl) create too.
process.umask(0o077);

const cli = yargs(hideBin(process.argv))
  .scriptName('vmdr')
  .usage('$0 <command> [options]\n\nDisaster recovery for libvirt/QEMU and vSphere VMs.')
  .option('config', { type: 'string', default: DEFAULT_CONFIG_FILE, global: true, describe: 'Config file' })
  .option('json', { type: 'boolean', default: false, global: true, describe: 'Machine-readable output' })
  .option('debug', { type: 'boolean', default: false, global: true, describe: 'On an error, print its stack trace and causes (as VMDR_DEBUG=1 does)' })
  .middleware((argv) => {
    if (argv.debug) process.env.VMDR_DEBUG = '1';
  });

await withCommands(cli)
  .demandCommand(1, 'name a command; see vmdr --help')
  .strict()
  .fail((message, err) => {
    // A command's own errors are reported by run(); this catches what escapes a builder or middleware.
    if (err) {
      process.exitCode = reportError(err, { json: process.argv.includes('--json') });
      return;
    }
    process.stderr.write(`vmdr: ${message} (see vmdr --help)\n`);
    process.exit(EXIT_USAGE);
  })
  .help()
  .version()
  .wrap(Math.min(110, process.stdout.columns || 100))
  .parseAsync();
