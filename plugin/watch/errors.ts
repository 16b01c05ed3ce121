import { VmdrError } from '../../hypervisors/errors.js';

/** A heartbeat's ask of a source site had no answer within the beat's bound: a missed beat. */
export class BeatTimedOut extends VmdrError {
  constructor(site: string, waitedMs: number) {
    super('BEAT_TIMEOUT', `site "${site}" has not answered the heartbeat asked ${(waitedMs / 1000).toFixed(1)} s ago`, { subject: { site } });
  }
}

/** `vmdr watch clear P` of a protection no automatic failover holds. */
export class WatchNotHeld extends VmdrError {
  constructor(protection: string) {
    super('WATCH_NOT_HELD', `protection "${protection}" is not held: no automatic failover of it since it was last cleared`, {
      subject: { protection },
      remedy: 'see its watch with `vmdr events --protection ' + protection + '`',
    });
  }
}
