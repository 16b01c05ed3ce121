import type { Argv, CommandModule } from 'yargs';
import { NotInConfig } from '../../plugin/config/errors.js';
import { loadConfig } from '../../plugin/config/load.js';
import { credentialsDir, endpointUrl, ensureIdentity, loadIdentity } from '../../plugin/sites/identity.js';
import { localSiteOf } from '../../plugin/sites/peer-connect.js';
import { listPeers, pairPeer, readCertificateFile, unpairPeer } from '../../plugin/sites/peers.js';
import { PeerNotPaired } from '../../plugin/sites/errors.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface SiteOptions extends GlobalOptions {
  site?: string;
}

const siteOption = (y: Argv<GlobalOptions>) =>
  y.option('site', { type: 'string', describe: 'This host is this site (default: localSite of the config)' });

/** The local site, its credentials directory and its endpoint URL, from the config. */
async function local(argv: SiteOptions) {
  const { file, config } = await loadConfig(argv.config);
  const site = localSiteOf(config, file, argv.site);
  return { site, dir: credentialsDir(config, site), url: site.endpoint ? endpointUrl(site.endpoint) : null };
}

const init: CommandModule<GlobalOptions, SiteOptions> = {
  command: 'init',
  describe: "Make this site's key and certificate when missing (vmdr serve does too)",
  builder: siteOption,
  handler: (argv) =>
    run(argv, async () => {
      const { site, dir, url } = await local(argv);
      const hosts = site.endpoint ? [site.endpoint.listen.slice(0, site.endpoint.listen.lastIndexOf(':')), new URL(url!).hostname] : [];
      const identity = await ensureIdentity(dir, site.name, hosts);
      if (argv.json) return printJson({ site: site.name, credentials: dir, made: identity.made, fingerprint: identity.fingerprint });
      process.stdout.write(`site ${site.name}: ${identity.made ? 'made' : 'already has'} its certificate in ${dir}, fingerprint ${identity.fingerprint}\n`);
    }),
};

const show: CommandModule<GlobalOptions, SiteOptions> = {
  command: 'show',
  describe: "Print this site's name, endpoint URL and certificate (all public), for pairing on a peer",
  builder: siteOption,
  handler: (argv) =>
    run(argv, async () => {
      const { site, dir, url } = await local(argv);
      const identity = await loadIdentity(dir);
      const peers = (await listPeers(dir)).map(({ site: s, fingerprint }) => ({ site: s, fingerprint }));
      const cert = identity.cert.toString('utf8');
      if (argv.json) return printJson({ site: site.name, url, fingerprint: identity.fingerprint, certificate: cert, peers });
      process.stdout.write(
        `site:        ${site.name}\nendpoint:    ${url ?? '(none)'}\nfingerprint: ${identity.fingerprint}\n` +
          `paired with: ${peers.length ? peers.map((p) => `${p.site} (${p.fingerprint})`).join(', ') : '(none)'}\n${cert.trimEnd()}\n`,
      );
    }),
};

interface PairOptions extends SiteOptions {
  peer: string;
  cert: string;
  fingerprint?: string;
}

const pair: CommandModule<GlobalOptions, PairOptions> = {
  command: 'pair <peer>',
  describe: "Pin a peer site's certificate (from `vmdr site show` on that site)",
  builder: (y) =>
    siteOption(y)
      .positional('peer', { type: 'string', demandOption: true, describe: 'The peer site, as named in the config' })
      .option('cert', { type: 'string', demandOption: true, describe: "A file holding the peer's certificate (PEM)" })
      .option('fingerprint', { type: 'string', describe: 'SHA256:… as `vmdr site show` printed it on the peer: refused when the certificate differs' }),
  handler: (argv) =>
    run(argv, async () => {
      const { file, config } = await loadConfig(argv.config);
      const site = localSiteOf(config, file, argv.site);
      // The peer must be a site of the config: a pin under another name would never be used.
      if (!config.sites.some((s) => s.name === argv.peer)) throw new NotInConfig('site', argv.peer, file);
      const identity = await loadIdentity(credentialsDir(config, site));
      const pem = await readCertificateFile(argv.cert, argv.peer);
      const pinned = await pairPeer(identity, site.name, argv.peer, pem, { file: argv.cert, ...(argv.fingerprint !== undefined ? { fingerprint: argv.fingerprint } : {}) });
      if (argv.json) return printJson({ site: site.name, peer: pinned.site, fingerprint: pinned.fingerprint, replaced: pinned.replaced });
      process.stdout.write(`site ${site.name}: ${pinned.replaced ? 're-paired' : 'paired'} with site ${pinned.site}, certificate ${pinned.fingerprint}\n`);
    }),
};

interface UnpairOptions extends SiteOptions {
  peer: string;
}

const unpair: CommandModule<GlobalOptions, UnpairOptions> = {
  command: 'unpair <peer>',
  describe: "Remove a peer site's pinned certificate: its requests are refused from then on",
  builder: (y) => siteOption(y).positional('peer', { type: 'string', demandOption: true }),
  handler: (argv) =>
    run(argv, async () => {
      const { site, dir } = await local(argv);
      if (!(await unpairPeer(dir, argv.peer))) throw new PeerNotPaired(argv.peer, site.name);
      if (argv.json) return printJson({ site: site.name, unpaired: argv.peer });
      process.stdout.write(`site ${site.name}: unpaired site ${argv.peer}\n`);
    }),
};

export const siteCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(init).command(show).command(pair).command(unpair).demandCommand(1),
  handler: () => undefined,
};
