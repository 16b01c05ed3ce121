/**
 * The drills `vmdr serve` runs on their schedules: one node-cron task per drill, in the drill's
 * time zone (UTC unless the config says). Overlapping ticks are not coalesced here: a drill whose
 * previous run still holds its plan is started and recorded as skipped, so the history shows it.
 * `stop` ends the schedule, aborts the drills running (each is torn down and recorded as
 * interrupted) and waits for them; a config reload is `reschedule`, which lets them run on.
 *
 * Which daemon runs a drill: the daemon of its plan's DR site (the target site of the plan's first
 * VM), where the drill's VMs boot; a daemon serving every site runs every drill.
 */
import cron, { type Logger, type ScheduledTask } from 'node-cron';
import type { Config, Drill } from '../config/schema.js';
import { runDrill, type DrillDeps, type DrillOutcome } from './run.js';

export interface SchedulerEvents {
  onStarted?: (drill: Drill) => void;
  onOutcome?: (outcome: DrillOutcome) => void;
  /** Something went wrong outside a drill's own verdict (its history could not be written). */
  onWarning?: (drill: Drill, error: unknown) => void;
}

/** The site a drill runs on: its plan's first VM's DR site. */
export function siteOfDrill(config: Config, drill: Drill): string | undefined {
  const plan = config.plans.find((p) => p.name === drill.plan);
  const first = plan?.groups[0]?.vms[0];
  return config.protections.find((p) => p.name === first)?.target.site;
}

/** The drills the daemon of `site` runs (every drill when it serves every site). */
export function drillsOfSite(config: Config, site: string | undefined): Drill[] {
  return config.drills.filter((d) => site === undefined || siteOfDrill(config, d) === site);
}

/** When the drill's schedule fires next after `from`. */
export function nextRunOf(drill: Drill): Date | null {
  const task = cron.createTask(drill.schedule, () => {}, { timezone: drill.timezone });
  try {
    return task.getNextRuns(1)[0] ?? null;
  } finally {
    void task.destroy();
  }
}

export class DrillScheduler {
  readonly #tasks = new Map<string, ScheduledTask>();
  readonly #running = new Set<Promise<void>>();
  readonly #stop = new AbortController();

  constructor(
    private readonly deps: DrillDeps,
    private drills: Drill[],
    private readonly events: SchedulerEvents = {},
  ) {}

  start(): void {
    for (const drill of this.drills) {
      // node-cron logs to the console by default: the daemon's stdout is its JSON lines.
      const logger: Logger = {
        info: () => {},
        debug: () => {},
        warn: (message) => this.events.onWarning?.(drill, new Error(message)),
        error: (message) => this.events.onWarning?.(drill, message),
      };
      const task = cron.schedule(drill.schedule, () => this.fire(drill), { name: `vmdr-drill-${drill.name}`, timezone: drill.timezone, logger });
      this.#tasks.set(drill.name, task);
    }
  }

  /** The schedule of `drills` from now on (a reloaded config): drills running now go on to their end. */
  async reschedule(drills: Drill[]): Promise<void> {
    await Promise.all([...this.#tasks.values()].map((t) => t.destroy()));
    this.#tasks.clear();
    this.drills = drills;
    if (!this.#stop.signal.aborted) this.start();
  }

  /** When each scheduled drill fires next. */
  nextRuns(): Record<string, Date | null> {
    return Object.fromEntries([...this.#tasks].map(([name, task]) => [name, task.getNextRun()]));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#tasks.values()].map((t) => t.destroy()));
    this.#tasks.clear();
    this.#stop.abort();
    await Promise.allSettled([...this.#running]);
  }

  private fire(drill: Drill): void {
    if (this.#stop.signal.aborted) return;
    this.events.onStarted?.(drill);
    const running = runDrill(this.deps, drill, 'schedule', { signal: this.#stop.signal }).then(
      (outcome) => this.events.onOutcome?.(outcome),
      (err: unknown) => this.events.onWarning?.(drill, err),
    );
    this.#running.add(running);
    void running.finally(() => this.#running.delete(running));
  }
}
