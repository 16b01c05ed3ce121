/**
 * `vmdr report verify`: whether a report.json or report.html is, byte for byte, what vmdr signed.
 * report.json: its text is the one canonical form of its content, its signature holds, and each
 * screenshot beside it has the SHA-256 the report names. report.html: the signed report it embeds
 * verifies, its screenshots have those SHA-256, and the page is exactly what the renderer makes
 * of them.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { renderReportHtml, SIGNED_REPORT_ID } from './html.js';
import { ReportNotVerified } from './errors.js';
import { fingerprintOf } from './keys.js';
import { reportJsonText, signatureProblem, REPORT_FORMAT, type SignedReport } from './signed.js';
import { screenshotFile } from './store.js';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The fingerprint of the key that signed `file`; throws ReportNotVerified with what does not match. */
export async function verifyReportFile(file: string, publicKey: KeyObject): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new ReportNotVerified(file, err.code === 'ENOENT' ? 'no such file' : err.message);
  });
  const name = basename(file);
  if (/^\s*<!doctype html/i.test(text)) await verifyHtml(name, text, publicKey);
  else await verifyJson(name, dirname(file), text, publicKey);
  return fingerprintOf(publicKey);
}

function parseSigned(name: string, json: string): SignedReport {
  let doc: SignedReport;
  try {
    doc = JSON.parse(json) as SignedReport;
  } catch {
    throw new ReportNotVerified(name, 'not a vmdr report (its JSON does not parse)');
  }
  if (doc?.format !== REPORT_FORMAT || typeof doc.signature?.value !== 'string' || typeof doc.report?.id !== 'string') {
    throw new ReportNotVerified(name, `not a signed vmdr report (no "${REPORT_FORMAT}" document with a signature)`);
  }
  return doc;
}

function checkSignature(name: string, doc: SignedReport, publicKey: KeyObject): void {
  const problem = signatureProblem(doc, publicKey);
  if (problem) throw new ReportNotVerified(name, problem);
}

async function verifyJson(name: string, dir: string, text: string, publicKey: KeyObject): Promise<void> {
  const doc = parseSigned(name, text);
  checkSignature(name, doc, publicKey);
  if (reportJsonText(doc) !== text) throw new ReportNotVerified(name, 'its bytes differ from the form vmdr wrote (spacing or order changed)');
  for (const vm of doc.report.vms) {
    const file = screenshotFile(dir, vm);
    if (!file) continue;
    const png = await readFile(file).catch(() => undefined);
    if (!png) throw new ReportNotVerified(name, `its screenshot ${basename(file)} is missing beside it`);
    if (sha256(png) !== (vm.evidence!.screenshot as { sha256: string }).sha256) {
      throw new ReportNotVerified(basename(file), `changed after it was signed (its SHA-256 is not the one ${name} names)`);
    }
  }
}

async function verifyHtml(name: string, text: string, publicKey: KeyObject): Promise<void> {
  const open = `<script type="application/json" id="${SIGNED_REPORT_ID}">`;
  const start = text.indexOf(open);
  const end = start < 0 ? -1 : text.indexOf('</script>', start);
  if (start < 0 || end < 0) throw new ReportNotVerified(name, 'not a vmdr report page (it embeds no signed report)');
  const doc = parseSigned(name, text.slice(start + open.length, end));
  checkSignature(name, doc, publicKey);
  const shots: (Buffer | undefined)[] = [];
  for (const m of text.matchAll(/<img class="shot" data-shot="(\d+)"[^>]* src="data:image\/png;base64,([A-Za-z0-9+/=]*)">/g)) {
    const i = Number(m[1]);
    const png = Buffer.from(m[2]!, 'base64');
    const shot = doc.report.vms[i]?.evidence?.screenshot;
    if (!shot || !('sha256' in shot) || sha256(png) !== shot.sha256) {
      throw new ReportNotVerified(name, `the screenshot of VM ${i + 1} changed after it was signed (its SHA-256 is not the one the report names)`);
    }
    shots[i] = png;
  }
  if (renderReportHtml(doc, (i) => shots[i]) !== text) throw new ReportNotVerified(name, 'the page differs from the one vmdr made of the signed report it holds');
}
