/**
 * What the watch does when a source goes down, by its policy: pure, so each case is tested on its
 * own. notify: nothing more than the event. confirm: a failover is prepared and waits for a person.
 * automatic: the failover runs, unless an earlier automatic one still holds the protection (until
 * an operator clears it). A failover of the same protections already under way: nothing more.
 */
import type { WatchPolicy } from '../config/schema.js';
import type { Hold } from './hold.js';

export type WatchAction =
  | { act: 'none'; why?: string }
  | { act: 'fail-over'; watch: 'automatic' | 'confirm' };

/** `busy`: the failover under way, in words ("failover fo-…"); `held`: the automatic failover that holds the protection. */
export function actionOnDown(policy: WatchPolicy, facts: { busy?: string; held?: Hold & { protection: string } }): WatchAction {
  if (policy === 'notify') return { act: 'none' };
  if (facts.busy) return { act: 'none', why: `${facts.busy} is already under way` };
  if (policy === 'automatic' && facts.held) {
    const h = facts.held;
    return { act: 'none', why: `no automatic failover: failover ${h.failover} of ${h.protection} holds it until cleared with \`vmdr watch clear ${h.protection}\`` };
  }
  return { act: 'fail-over', watch: policy };
}
