/** How often a protection's cycles start; the config checks its retention tiers against it. */

/** How long from one cycle's start to the next: back to back for continuous protections, else rpo/2. */
export function cycleInterval(protection: { continuous: boolean; rpo: number }): number {
  return protection.continuous ? 0 : protection.rpo / 2;
}
