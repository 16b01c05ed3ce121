/**
 * `vmdr pause VM` and `vmdr resume VM`: an operator stops a protection's replication (its loop in
 * `vmdr serve` takes no cycle, `vmdr sync` refuses) and starts it again. On the host that replicates
 * it (its state file), or through a daemon's API with --server.
 */
import type { Argv } from 'yargs';
import { userInfo } from 'node:os';
import { loadConfig } from '../../plugin/config/load.js';
import { findProtection } from '../../plugin/protections/find.js';
import { pauseOf, pauseProtection, resumeProtection } from '../../plugin/state/pauses.js';
import { StateStore } from '../../plugin/state/store.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { serverOf, withServerOptions, type ServerOptions } from './server-options.js';

interface PauseOptions extends GlobalOptions, ServerOptions {
  vm: string;
  reason?: string;
}

interface PauseAnswer {
  protection: string;
  paused: { by: string; at: string; reason: string | null } | null;
}

function command(action: 'pause' | 'resume'): CommandBody<PauseOptions> {
  return {
    builder: (y: Argv<GlobalOptions>) => {
      const b = withServerOptions(y).positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' });
      return action === 'pause' ? b.option('reason', { type: 'string', describe: 'Why, for whoever looks at the status' }) : b;
    },
    handler: (argv) =>
      run(argv, async () => {
        const answer = await pauseOrResume(action, argv);
        if (argv.json) return printJson(answer);
        const p = answer.paused;
        process.stdout.write(p ? `${answer.protection}: replication paused by ${p.by} since ${p.at}${p.reason ? ` (${p.reason})` : ''}\n` : `${answer.protection}: replication runs\n`);
      }),
  };
}

async function pauseOrResume(action: 'pause' | 'resume', argv: PauseOptions): Promise<PauseAnswer> {
  const server = await serverOf(argv);
  if (server) {
    try {
      return await server.post<PauseAnswer>(`/api/v1/protections/${encodeURIComponent(argv.vm)}/${action}`, action === 'pause' && argv.reason ? { reason: argv.reason } : {});
    } finally {
      server.close();
    }
  }
  const { file, config } = await loadConfig(argv.config);
  const protection = findProtection(config, file, argv.vm);
  const state = StateStore.open(config.state.path);
  try {
    if (action === 'pause') pauseProtection(state.db, protection.name, userInfo().username, argv.reason);
    else resumeProtection(state.db, protection.name);
    const held = pauseOf(state.db, protection.name);
    return { protection: protection.name, paused: held ? { by: held.pausedBy, at: held.pausedAt.toISOString(), reason: held.reason } : null };
  } finally {
    state.close();
  }
}

export const pauseCommand = command('pause');
export const resumeCommand = command('resume');
