/**
 * `vmdr report show|key|verify`: a run's signed report (report.json and report.html beside the
 * state file), the public key a customer checks reports with, and the check itself.
 */
import { readFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { readPublicKey, signingKey, publicKeyFile } from '../../plugin/reports/keys.js';
import { verifyReportFile } from '../../plugin/reports/verify.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface ShowOptions extends GlobalOptions {
  run: string;
  html: boolean;
}

const show: CommandModule<GlobalOptions, ShowOptions> = {
  command: 'show <run>',
  describe: "Where a run's signed report is (report.json, report.html); --json or --html prints that file instead",
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('run', { type: 'string', demandOption: true, describe: 'The run id, as vmdr failover printed it (fo-…)' })
      .option('html', { type: 'boolean', default: false, describe: 'Print the HTML page' }),
  handler: (argv) =>
    run(argv, async () => {
      const { config } = await loadConfig(argv.config);
      // Only show reads the state file and may build a report (of a run that ended without one):
      // key and verify load neither.
      const [{ runReportFiles }, { StateStore }] = await Promise.all([import('../../plugin/reports/run-report.js'), import('../../plugin/state/store.js')]);
      const state = StateStore.open(config.state.path);
      let files;
      try {
        files = await runReportFiles({ config, state }, argv.run);
      } finally {
        state.close();
      }
      if (argv.html) return void process.stdout.write(await readFile(files.html, 'utf8'));
      if (argv.json) return void process.stdout.write(await readFile(files.json, 'utf8'));
      process.stdout.write(`report.json: ${files.json}\nreport.html: ${files.html}\n`);
    }),
};

const key: CommandModule<GlobalOptions, GlobalOptions> = {
  command: 'key',
  describe: 'Print the public key reports are signed with (made when there is none): give it to whoever checks them',
  handler: (argv) =>
    run(argv, async () => {
      const { config } = await loadConfig(argv.config);
      const k = await signingKey(config);
      if (argv.json) return printJson({ fingerprint: k.fingerprint, publicKey: k.publicPem, file: publicKeyFile(config) });
      process.stdout.write(`${k.publicPem}fingerprint ${k.fingerprint} (file ${publicKeyFile(config)})\n`);
    }),
};

interface VerifyOptions extends GlobalOptions {
  file: string;
  key?: string;
}

const verify: CommandModule<GlobalOptions, VerifyOptions> = {
  command: 'verify <file>',
  describe: "Check that a report.json or report.html is byte for byte what vmdr signed (this host's key, or --key)",
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'A report.json or report.html' })
      .option('key', { type: 'string', describe: "The signer's public key (PEM), as `vmdr report key` printed it on its host" }),
  handler: (argv) =>
    run(argv, async () => {
      // With --key no config is needed: a customer checks a report without running vmdr's daemon.
      const publicKey = argv.key !== undefined ? await readPublicKey(argv.key) : (await signingKey((await loadConfig(argv.config)).config)).publicKey;
      const fingerprint = await verifyReportFile(argv.file, publicKey);
      if (argv.json) return printJson({ file: argv.file, fingerprint, unchanged: true });
      process.stdout.write(`${argv.file}: signed by ${fingerprint}, unchanged\n`);
    }),
};

export const reportCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(show).command(key).command(verify).demandCommand(1),
  handler: () => undefined,
};
