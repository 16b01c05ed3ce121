/**
 * What a drill keeps of each VM it booted, so a customer can see that their VM really came up:
 * the identity the guest applied, each health check with its result and time, the point booted
 * and its age, the console's last lines, and a screenshot of its display when it has one. Taken
 * after the health step and before the drill's VM is removed; recorded as the VM's `evidence`
 * journal step, so the report (report.ts) is built from the journal alone.
 */

export interface EvidenceCheck {
  /** The health check's name as the report shows it (e.g. "serial", "tcp 22", "guest-agent"). */
  check: string;
  passed: boolean;
  /** When the check passed or was last tried (ISO time). */
  at: string;
  detail?: string;
}

export interface VmEvidence {
  /** The network identity the guest applied, as it printed or reported it (hostname, MAC, IP). */
  identity: { hostname?: string; mac?: string; ip?: string; printed?: string } | null;
  checks: EvidenceCheck[];
  point: { id: string; time: string; ageMs: number } | null;
  /** The console's last lines (control characters removed), oldest first. */
  console: string[];
  /**
   * The display's screenshot: a PNG file in the run's report directory (reports/paths.ts), with
   * its SHA-256 so a signed report covers it; or why there is none (the VM has no display).
   */
  screenshot: { file: string; sha256: string; width: number; height: number } | { missing: string } | null;
  capturedAt: string;
}
