/**
 * Where a run's report and its evidence are kept: beside the state file, in reports/<run id>/
 * (0700; every file in it 0600: a console's last lines and screenshots are the customer's data).
 */
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import { privateDirectory } from '../control/socket.js';

export function reportsDir(config: Pick<Config, 'state'>): string {
  return join(dirname(config.state.path), 'reports');
}

export function runReportDir(config: Pick<Config, 'state'>, runId: string): string {
  return join(reportsDir(config), runId);
}

/** Makes (or tightens) the run's report directory and its parent; returns its path. */
export async function ensureRunReportDir(config: Pick<Config, 'state'>, runId: string): Promise<string> {
  await privateDirectory(reportsDir(config));
  const dir = runReportDir(config, runId);
  await privateDirectory(dir);
  return dir;
}
