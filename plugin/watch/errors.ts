import { VmdrError } from '../../hypervisors/errors.js';

/** A heartbeat's ask of a source site had no answer within the beat's bound: a missed beat. */
export class BeatTimedOut extends VmdrError {
  constructor(site: string, boundMs: number) {
    super('BEAT_TIMEOUT', `site "${site}" did not answer the heartbeat within ${boundMs / 1000} s`, { subject: { site } });
  }
}
