/**
 * Stores a run's report when the run ends: report.json and report.html, both signed, in the run's
 * report directory (paths.ts) beside the screenshots its drill kept there.
 */
import { createHash } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { FailoverReport, ReportFiles, StoredReportFiles, VmReport } from '../failover/report.js';
import { VmdrError } from '../../hypervisors/errors.js';
import { renderReportHtml } from './html.js';
import { signingKey } from './keys.js';
import { ensureRunReportDir } from './paths.js';
import { reportJsonText, signReport, REPORT_FORMAT, type SignedReport } from './signed.js';

// Declared beside the report that carries them: the report is what this module reads.
export type { ReportFiles, StoredReportFiles } from '../failover/report.js';

export const REPORT_JSON = 'report.json';
export const REPORT_HTML = 'report.html';

/** The tenant a run belongs to: its plan's, or the one tenant of all its VMs' protections. */
export function tenantOfReport(config: Pick<Config, 'plans' | 'protections'>, report: FailoverReport): string | null {
  if (report.plan !== null) {
    const plan = config.plans.find((p) => p.name === report.plan);
    if (plan) return plan.tenant ?? null;
  }
  const tenants = new Set(report.vms.map((v) => config.protections.find((p) => p.name === v.protection)?.tenant));
  return tenants.size === 1 ? ([...tenants][0] ?? null) : null;
}

/** The screenshot file of a VM's evidence: a name in the report's directory. */
export function screenshotFile(dir: string, vm: VmReport): string | undefined {
  const shot = vm.evidence?.screenshot;
  return shot && 'file' in shot ? join(dir, basename(shot.file)) : undefined;
}

/** The screenshots a page shows: those whose bytes are still what the report says they are. */
export async function screenshotsOf(dir: string, report: FailoverReport): Promise<(Buffer | undefined)[]> {
  return Promise.all(
    report.vms.map(async (vm) => {
      const file = screenshotFile(dir, vm);
      if (!file) return undefined;
      const png = await readFile(file).catch(() => undefined);
      const shot = vm.evidence!.screenshot as { sha256: string };
      return png && createHash('sha256').update(png).digest('hex') === shot.sha256 ? png : undefined;
    }),
  );
}

/** Signs and writes the report's two files; throws what stopped it. */
export async function writeRunReport(config: Pick<Config, 'state' | 'plans' | 'protections'>, report: FailoverReport): Promise<ReportFiles> {
  const dir = await ensureRunReportDir(config, report.id);
  const key = await signingKey(config);
  const doc: SignedReport = signReport({ format: REPORT_FORMAT, tenant: tenantOfReport(config, report), report }, key);
  const shots = await screenshotsOf(dir, report);
  const files = { json: join(dir, REPORT_JSON), html: join(dir, REPORT_HTML) };
  await writeWhole(files.json, reportJsonText(doc));
  await writeWhole(files.html, renderReportHtml(doc, (i) => shots[i]));
  return files;
}

/** The run's report stored; a failure is returned, never thrown: a report must not fail the run it reports. */
export async function storeRunReport(config: Pick<Config, 'state' | 'plans' | 'protections'>, report: FailoverReport): Promise<StoredReportFiles> {
  try {
    return await writeRunReport(config, report);
  } catch (err) {
    return { error: err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: (err as Error).message } };
  }
}

/** A reader never sees half a file: written beside it, then renamed over it. */
async function writeWhole(file: string, text: string): Promise<void> {
  const partial = `${file}.partial`;
  await writeFile(partial, text, { mode: 0o600 });
  await rename(partial, file);
}
