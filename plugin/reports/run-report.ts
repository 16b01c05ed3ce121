/**
 * A run's stored report files, as `vmdr report show` and the API hand them out. A run that ended
 * before reports were stored (or whose report could not be written then) gets them now, from its
 * journal; a run still going has none yet.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { storedReport, type RunnerDeps } from '../failover/runner.js';
import { getFailover } from '../state/failovers.js';
import { ReportNotStored } from './errors.js';
import { runReportDir } from './paths.js';
import { REPORT_HTML, REPORT_JSON, writeRunReport, type ReportFiles } from './store.js';

export async function runReportFiles(deps: Pick<RunnerDeps, 'config' | 'state'>, id: string): Promise<ReportFiles> {
  const row = getFailover(deps.state.db, id);
  if (!row) throw new ReportNotStored(id, 'no such run in this state file');
  const dir = runReportDir(deps.config, id);
  const files = { json: join(dir, REPORT_JSON), html: join(dir, REPORT_HTML) };
  const stored = await Promise.all([access(files.json), access(files.html)]).then(
    () => true,
    () => false,
  );
  if (stored) return files;
  if (row.status === 'running') throw new ReportNotStored(id, 'it is still running (its report is stored when it ends)');
  return writeRunReport(deps.config, storedReport(deps, id)!);
}
