/**
 * The state of one watched source, beat by beat: pure, its clock given by the caller. A missed beat
 * makes a healthy source suspect; it is down once `missed` beats in a row were missed AND `after`
 * ms passed since it last answered (or since the watch began). A beat that answers resets the
 * count: a source that comes back before the threshold was only suspect (flapping changes nothing
 * else). A source already down stays down, with no new event per beat, until it answers.
 *
 * A notice (the hypervisor telling at once that the VM stopped, or that its connection closed) is
 * a missed beat at the moment it comes, not at the next beat: the source is suspect at once. It
 * counts as one beat at most between two beats (a VM stopping sends several events), and the
 * threshold holds as for beats: down needs `missed` misses in a row AND `after` since the last
 * answer. So a notice makes the down come a beat sooner only where `after` allows it (shorter than
 * interval × missed); it never makes it come before `after`. Only a beat proves a source answers.
 */
import type { WatchState } from '../state/watch-events.js';

/** What one beat found: every check answered, or the first that did not and what it said. */
export type BeatOutcome = { ok: true } | { ok: false; check: string; detail: string };

export interface WatchTransition {
  state: WatchState;
  detail: string | null;
}

export interface WatchThreshold {
  /** Beats missed in a row. */
  missed: number;
  /** Milliseconds since the last answer. */
  after: number;
}

export class WatchMachine {
  #state: WatchState | undefined;
  #missed = 0;
  #lastAnswerAt: number;
  /** When the notice counted since the last beat came (none: undefined). */
  #noticedAt: number | undefined;

  /** `state`: the last one recorded (a daemon restarted goes on from it); `now`: when the watch begins. */
  constructor(
    private readonly threshold: WatchThreshold,
    now: number,
    state?: WatchState,
  ) {
    this.#state = state;
    this.#lastAnswerAt = now;
  }

  get state(): WatchState | undefined {
    return this.#state;
  }

  /** Beats missed in a row so far. */
  get missed(): number {
    return this.#missed;
  }

  /** The change of state this beat makes, if any. */
  beat(outcome: BeatOutcome, now: number): WatchTransition | undefined {
    // A beat asked before the notice came (its answer arrived after it) says what was true before: it cannot undo the notice.
    if (this.#noticedAt !== undefined && now < this.#noticedAt) return outcome.ok ? undefined : this.#count(outcome, now);
    this.#noticedAt = undefined;
    return this.#count(outcome, now);
  }

  /** A notice of the hypervisor's between beats: a missed beat now, once until the next beat. */
  notice(outcome: Extract<BeatOutcome, { ok: false }>, now: number): WatchTransition | undefined {
    if (this.#noticedAt !== undefined) return undefined;
    this.#noticedAt = now;
    return this.#count(outcome, now);
  }

  #count(outcome: BeatOutcome, now: number): WatchTransition | undefined {
    if (outcome.ok) {
      const missedBefore = this.#missed;
      const was = this.#state;
      this.#missed = 0;
      this.#lastAnswerAt = now;
      if (was === 'healthy') return undefined;
      return this.#to('healthy', was === 'suspect' || was === 'down' ? `answers again after ${missedBefore} missed beat${missedBefore === 1 ? '' : 's'}` : null);
    }
    this.#missed++;
    if (this.#state === 'down') return undefined;
    const silentMs = now - this.#lastAnswerAt;
    const why = `${outcome.check}: ${outcome.detail}`;
    if (this.#missed >= this.threshold.missed && silentMs >= this.threshold.after) {
      return this.#to('down', `${this.#missed} beats missed, no answer for ${(silentMs / 1000).toFixed(1)} s; ${why}`);
    }
    if (this.#state === 'suspect') return undefined;
    return this.#to('suspect', why);
  }

  /**
   * A state the source is in for another reason than its beats (its protection failed over: the
   * source is meant to be off). Not beaten meanwhile; the count starts afresh from `now`.
   */
  settle(state: WatchState, detail: string | null, now: number): WatchTransition | undefined {
    this.#missed = 0;
    this.#noticedAt = undefined;
    this.#lastAnswerAt = now;
    return this.#state === state ? undefined : this.#to(state, detail);
  }

  #to(state: WatchState, detail: string | null): WatchTransition {
    this.#state = state;
    return { state, detail };
  }
}
