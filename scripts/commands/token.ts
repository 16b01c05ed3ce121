/**
 * `vmdr token create|list|revoke`: the API tokens of the daemon on this host, made and revoked in
 * its state file. The secret is printed once, alone on stdout, and what it is and that it will not
 * be shown again go to stderr; or, with --out, it goes into a new file of mode 0600 (a shell's
 * `> file` would make one that others may read, and clients refuse such a file). Create and revoke
 * are written to the audit record as the OS user who ran them.
 */
import { open, unlink } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import type { LoadedConfig } from '../../plugin/config/load.js';
import { durationBetween } from '../../plugin/config/schema.js';
import { audited, cliActor } from '../../plugin/state/audit.js';
import type { StateStore } from '../../plugin/state/store.js';
import { TokenRequestInvalid } from '../../plugin/tenants/token-errors.js';
import { createToken, listTokens, requireTenant, revokeToken, tokenState, tokenView, type TokenRecord, type TokenRole } from '../../plugin/tenants/tokens.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withState } from './state-context.js';

/** How long a token may be made to last: a minute to ten years. */
const expiry = durationBetween('1m', '3650d');


const describeToken = (t: TokenRecord) =>
  `token ${t.id} "${t.name}" (role ${t.role}, ${t.tenant !== undefined ? `tenant ${t.tenant}` : 'operator'}, ${t.expiresAt ? `expires ${t.expiresAt.toISOString()}` : 'no expiry'})`;



interface CreateOptions extends GlobalOptions {
  name: string;
  tenant?: string;
  role: TokenRole;
  expires?: string;
  out?: string;
}

/**
 * A new file for the token, its owner's alone (0600): made before the token is, so a file that
 * exists already (or a directory that cannot take it) costs no token.
 */
async function tokenFile(file: string) {
  try {
    return await open(file, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EEXIST' ? 'it exists already: a token file is never overwritten' : code === 'ENOENT' ? 'no such directory' : (err as Error).message;
    throw new TokenRequestInvalid('--out', `${file}: ${why}`);
  }
}

const create: CommandModule<GlobalOptions, CreateOptions> = {
  command: 'create',
  describe:
    'Make an API token and print it once: only its hash is kept, it is never shown again. Without --tenant it is an operator token (every tenant)',
  builder: (y: Argv<GlobalOptions>) =>
    y
      .option('name', { type: 'string', demandOption: true, describe: 'What the token is for (letters, digits, ".", "-", "_")' })
      .option('tenant', { type: 'string', describe: "The tenant whose objects alone the token sees (a tenant of the config)" })
      .option('role', { choices: ['read', 'operate'] as const, default: 'read' as TokenRole, describe: 'read: look only; operate: also change (sync, failover, ...)' })
      .option('expires', { type: 'string', describe: 'Refused after this long: 30m, 12h, 90d (default: never)' })
      .option('out', { type: 'string', describe: 'Write the token into this new file (mode 0600, for VMDR_TOKEN_FILE) instead of stdout' }),
  handler: (argv) =>
    run(argv, () =>
      withState(argv.config, async (state, loaded) => {
        const now = new Date();
        const out = argv.out !== undefined ? await tokenFile(argv.out) : undefined;
        let token: { token: string; record: TokenRecord } | undefined;
        try {
          const entry = { ...cliActor(), action: 'token.create', ...(argv.tenant !== undefined ? { tenant: argv.tenant } : {}) };
          token = await audited(state, entry, () => make(state, loaded, argv, now), (t) => ({ object: t.record.id }));
          if (out) {
            await out.writeFile(`${token.token}\n`);
            await out.sync();
          }
        } catch (err) {
          // A token nobody could be given is no token: revoked, and its half-written file gone.
          if (token) revokeToken(state, token.record.id);
          if (out) await unlink(argv.out!).catch(() => undefined);
          throw err;
        } finally {
          await out?.close();
        }
        if (out) {
          if (argv.json) return printJson({ ...tokenView(token.record, now), file: argv.out });
          return void process.stdout.write(`${describeToken(token.record)} created and written to ${argv.out} (mode 0600): it is not kept anywhere else.\n`);
        }
        if (argv.json) return printJson({ ...tokenView(token.record, now), token: token.token, shownOnce: true });
        process.stdout.write(`${token.token}\n`);
        process.stderr.write(`${describeToken(token.record)} created. This is the only time it is shown: it will not be shown again.\n`);
      }),
    ),
};

function make(state: StateStore, { file, config }: LoadedConfig, argv: CreateOptions, now: Date) {
  if (argv.tenant !== undefined) requireTenant(config, argv.tenant, file);
  let expiresAt: Date | undefined;
  if (argv.expires !== undefined) {
    const parsed = expiry.safeParse(argv.expires);
    if (!parsed.success) throw new TokenRequestInvalid('--expires', `${JSON.stringify(argv.expires)} is not ${parsed.error.issues[0]?.message ?? 'a duration'}`);
    expiresAt = new Date(now.getTime() + parsed.data);
  }
  return createToken(state, { name: argv.name, role: argv.role, ...(argv.tenant !== undefined ? { tenant: argv.tenant } : {}), ...(expiresAt ? { expiresAt } : {}) }, now);
}

interface ListOptions extends GlobalOptions {
  tenant?: string;
}

const list: CommandModule<GlobalOptions, ListOptions> = {
  command: 'list',
  describe: 'List the API tokens (never their secrets): active, expired and revoked',
  builder: (y: Argv<GlobalOptions>) => y.option('tenant', { type: 'string', describe: "Only this tenant's tokens" }),
  handler: (argv) =>
    run(argv, () =>
      withState(argv.config, async (state) => {
        const now = new Date();
        const tokens = listTokens(state, argv.tenant !== undefined ? { tenant: argv.tenant } : {});
        if (argv.json) return printJson(tokens.map((t) => tokenView(t, now)));
        if (tokens.length === 0) return void process.stdout.write('no tokens (vmdr token create --name NAME makes one)\n');
        printTable(
          ['ID', 'NAME', 'TENANT', 'ROLE', 'CREATED', 'EXPIRES', 'STATE'],
          tokens.map((t) => [
            t.id,
            t.name,
            t.tenant ?? '(operator)',
            t.role,
            t.createdAt.toISOString(),
            t.expiresAt?.toISOString() ?? '-',
            tokenState(t, now) + (t.revokedAt ? ` ${t.revokedAt.toISOString()}` : ''),
          ]),
        );
      }),
    ),
};

interface RevokeOptions extends GlobalOptions {
  id: string;
}

const revoke: CommandModule<GlobalOptions, RevokeOptions> = {
  command: 'revoke <id>',
  describe: 'Revoke a token: its next request is refused, whatever it was doing',
  builder: (y: Argv<GlobalOptions>) => y.positional('id', { type: 'string', demandOption: true, describe: 'The token id, as `vmdr token list` shows it' }),
  handler: (argv) =>
    run(argv, () =>
      withState(argv.config, async (state) => {
        const { record, alreadyRevoked } = await audited(
          state,
          { ...cliActor(), action: 'token.revoke', object: argv.id },
          () => revokeToken(state, argv.id),
          (r) => ({ object: r.record.id, tenant: r.record.tenant }),
        );
        if (argv.json) return printJson({ ...tokenView(record, new Date()), alreadyRevoked });
        process.stdout.write(
          alreadyRevoked
            ? `${describeToken(record)} was already revoked at ${record.revokedAt!.toISOString()}\n`
            : `${describeToken(record)} revoked: its requests are refused from now on\n`,
        );
      }),
    ),
};

export const tokenCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(create).command(list).command(revoke).demandCommand(1),
  handler: () => undefined,
};
