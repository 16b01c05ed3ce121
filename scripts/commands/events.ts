import { setTimeout as delay } from 'node:timers/promises';
import type { Argv } from 'yargs';
import { NotInConfig } from '../../plugin/config/errors.js';
import type { StateStore } from '../../plugin/state/store.js';
import { listWatchEvents, type WatchEvent } from '../../plugin/state/watch-events.js';
import { run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withState } from './state-context.js';

interface EventsOptions extends GlobalOptions {
  follow: boolean;
  protection?: string;
  limit: number;
}

/** How often --follow looks for new events: the daemon writes them into the same state file. */
const FOLLOW_POLL_MS = 500;

/**
 * The watch events of this host's state file (the DR site's, where `vmdr serve` beats the sources),
 * oldest first, one per line; --json: one JSON object per line. --follow prints new ones as the
 * daemon records them, until Ctrl-C.
 */
export const eventsCommand: CommandBody<EventsOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    y
      .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'Print new events as they come, until Ctrl-C' })
      .option('protection', { type: 'string', describe: 'Only the events of this protection' })
      .option('limit', { type: 'number', default: 50, describe: 'How many of the newest events to print first' }),
  handler: (argv) =>
    run(argv, () =>
      withState(argv.config, async (state, { config, file }) => {
        if (argv.protection !== undefined && !config.protections.some((p) => p.name === argv.protection)) throw new NotInConfig('protection', argv.protection, file);
        const only = argv.protection !== undefined ? { protection: argv.protection } : {};
        const print = (e: WatchEvent) => process.stdout.write(`${argv.json ? JSON.stringify(eventJson(e)) : eventLine(e)}\n`);
        const first = listWatchEvents(state, { ...only, limit: argv.limit });
        first.forEach(print);
        if (!argv.follow) {
          if (first.length === 0 && !argv.json) process.stdout.write(`${file}: no watch events${argv.protection ? ` of protection ${argv.protection}` : ''} on this host\n`);
          return;
        }
        await follow(state, first.at(-1)?.id ?? lastId(state), only, print);
      }),
    ),
};

export function eventJson(e: WatchEvent) {
  return { id: e.id, at: e.at.toISOString(), protection: e.protection, site: e.site, state: e.state, detail: e.detail };
}

function eventLine(e: WatchEvent): string {
  return `${e.at.toISOString()}  ${e.protection}  ${e.state}  (source site ${e.site})${e.detail ? `: ${e.detail}` : ''}`;
}

function lastId(state: StateStore): number {
  return listWatchEvents(state, { limit: 1 }).at(-1)?.id ?? 0;
}

/** Until SIGINT or SIGTERM: each new event once, in the order recorded. */
async function follow(state: StateStore, after: number, only: { protection?: string }, print: (e: WatchEvent) => void): Promise<void> {
  const stop = new AbortController();
  const end = () => stop.abort();
  process.once('SIGINT', end).once('SIGTERM', end);
  try {
    let last = after;
    while (!stop.signal.aborted) {
      for (const e of listWatchEvents(state, { ...only, after: last, limit: 1000 })) {
        print(e);
        last = e.id;
      }
      await delay(FOLLOW_POLL_MS, undefined, { signal: stop.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', end).off('SIGTERM', end);
  }
}
