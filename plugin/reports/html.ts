/**
 * A run's report as one self-contained page a customer opens anywhere: inline CSS, an inline SVG
 * timeline, screenshots as data: URIs, no script that runs. The page is made from the signed
 * report alone (and the screenshots it names), deterministically: `vmdr report verify` makes it
 * again from the signed report the page embeds and compares the bytes. Every string taken from
 * the report is escaped: tenants, VM names and console lines are the customer's input.
 */
import type { FailoverReport, StepReport, VmReport } from '../failover/report.js';
import type { SignedReport } from './signed.js';

/** The id of the script element holding the signed report (read back by verify). */
export const SIGNED_REPORT_ID = 'vmdr-signed-report';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text or attribute value safe inside HTML (and SVG). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** JSON inside a <script> element: nothing in it can close the element or open a comment. */
export function scriptJson(json: string): string {
  return json.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const e = escapeHtml;

function duration(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const KIND_TITLES: Record<FailoverReport['kind'], string> = {
  test: 'Drill (test failover)',
  unplanned: 'Unplanned failover',
  planned: 'Planned failover',
  revert: 'Revert',
  failback: 'Failback',
};

function verdict(met: boolean | null): string {
  if (met === null) return '<span class="badge none">no target</span>';
  return met ? '<span class="badge pass">PASS</span>' : '<span class="badge fail">FAIL</span>';
}

function statusBadge(status: string): string {
  const tone = ['succeeded', 'healthy', 'done', 'reverted'].includes(status) ? 'pass' : ['failed'].includes(status) ? 'fail' : 'none';
  return `<span class="badge ${tone}">${e(status)}</span>`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;margin:0;background:#f4f6f9}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:16px 0 6px}
section{background:#fff;border:1px solid #d8dee8;border-radius:6px;padding:12px 16px;margin:12px 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}dt{color:#5a6678}dd{margin:0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6eaf0;vertical-align:top}
th{color:#5a6678;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.pass{background:#d9f2e1;color:#13652f}.fail{background:#fbdada;color:#9b1c1c}.none{background:#e8ebf0;color:#4a5567}
pre{background:#10141b;color:#d7e0ea;padding:8px;border-radius:4px;overflow-x:auto;font-size:12px;margin:0}
img.shot{max-width:100%;border:1px solid #d8dee8;image-rendering:pixelated}
svg text{font:11px system-ui,sans-serif;fill:#1d2430}
footer{color:#5a6678;font-size:12px;margin-top:24px}
`;

/**
 * The page of `doc`. `screenshot` gives the PNG bytes of a VM's screenshot (by its index in the
 * report's VMs) or undefined when there is none to show.
 */
export function renderReportHtml(doc: SignedReport, screenshot: (vmIndex: number) => Buffer | undefined): string {
  const r = doc.report;
  const title = `${KIND_TITLES[r.kind]} ${r.id}`;
  const head = [
    ['Run', e(r.id)],
    ['Kind', e(KIND_TITLES[r.kind])],
    ['Plan', r.plan === null ? '-' : e(r.plan)],
    ...(doc.tenant === null ? [] : [['Tenant', e(doc.tenant)]]),
    ['Status', statusBadge(r.status) + (r.error ? ` ${e(r.error.message)}` : '')],
    ['Started', e(r.startedAt)],
    ['Ended', r.endedAt === null ? '-' : e(r.endedAt)],
  ];
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${e(title)}</title><style>${CSS}</style></head><body><main>`,
    `<h1>${e(title)}</h1>`,
    `<section id="run"><dl>${head.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('')}</dl></section>`,
    objectives(r),
    `<h2>Timeline</h2><section id="timeline">${timeline(r)}</section>`,
    ...r.vms.map((vm, i) => vmSection(vm, i, screenshot(i))),
    `<footer>Signed with Ed25519 by ${e(doc.signature.key)}. This page carries its signed report: <code>vmdr report verify</code> checks that neither changed.</footer>`,
    `<script type="application/json" id="${SIGNED_REPORT_ID}">${scriptJson(JSON.stringify(doc))}</script>`,
    '</main></body></html>',
    '',
  ].join('\n');
}

function objectives(r: FailoverReport): string {
  const t = r.targets;
  const rows = [
    `<tr><td>RTO (start to last VM healthy)</td><td class="rto">${duration(r.rtoMs)}</td><td>${t?.rtoMs != null ? duration(t.rtoMs) : '-'}</td><td>${verdict(r.rtoMet)}</td></tr>`,
    ...r.vms.map(
      (vm) =>
        `<tr><td>Data-loss window of ${e(vm.vm)}</td><td>${duration(vm.dataLossWindowMs)}</td><td>${t?.rpoMs != null ? duration(t.rpoMs) : '-'}</td><td>${verdict(vm.dataLossWindowMet)}</td></tr>`,
    ),
  ];
  return `<h2>Objectives</h2><section id="objectives"><table><thead><tr><th>Measure</th><th>Measured</th><th>Target</th><th>Result</th></tr></thead><tbody>${rows.join('')}</tbody></table></section>`;
}

const TONES: Record<StepReport['status'], string> = { done: '#3c9a5f', failed: '#c62828', skipped: '#9aa5b4', started: '#e0a030' };

/** Every step on one time axis: a lane per step, under a heading per VM (and the run's own steps first). */
function timeline(r: FailoverReport): string {
  const t0 = Date.parse(r.startedAt);
  const lanes: ({ heading: string } | { label: string; step: StepReport })[] = [];
  const add = (heading: string, steps: StepReport[]) => {
    if (steps.length === 0) return;
    lanes.push({ heading });
    for (const s of steps) lanes.push({ label: s.step, step: s });
  };
  add('run', r.run);
  for (const vm of r.vms) add(vm.vm, vm.steps);
  const ends = [...r.run, ...r.vms.flatMap((v) => v.steps)].map((s) => Date.parse(s.endedAt ?? s.startedAt));
  const t1 = Math.max(r.endedAt ? Date.parse(r.endedAt) : t0, ...ends, t0 + 1000);
  const span = t1 - t0;
  const left = 170;
  const width = 940;
  const plot = width - left - 10;
  const row = 18;
  const top = 24;
  const height = top + lanes.length * row + 6;
  const x = (iso: string) => left + ((Date.parse(iso) - t0) / span) * plot;
  const parts: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const gx = left + (plot * i) / 4;
    parts.push(`<line x1="${gx.toFixed(1)}" y1="${top - 6}" x2="${gx.toFixed(1)}" y2="${height}" stroke="#e1e6ee"/>`);
    parts.push(`<text x="${gx.toFixed(1)}" y="12" text-anchor="${i === 4 ? 'end' : i === 0 ? 'start' : 'middle'}">+${duration((span * i) / 4)}</text>`);
  }
  lanes.forEach((lane, i) => {
    const y = top + i * row;
    if ('heading' in lane) {
      parts.push(`<text x="4" y="${y + 13}" font-weight="700">${e(lane.heading)}</text>`);
      return;
    }
    const s = lane.step;
    const x0 = x(s.startedAt);
    const x1 = Math.max(x0 + 2, s.endedAt ? x(s.endedAt) : left + plot);
    const tip = `${lane.label}: ${s.status}, ${duration(s.durationMs)}${s.error ? `: ${s.error.message}` : ''}`;
    parts.push(`<text x="14" y="${y + 13}">${e(lane.label)}</text>`);
    parts.push(
      `<rect class="step ${s.status}" x="${x0.toFixed(1)}" y="${y + 3}" width="${(x1 - x0).toFixed(1)}" height="${row - 6}" rx="2" fill="${TONES[s.status]}"><title>${e(tip)}</title></rect>`,
    );
    if (s.status === 'failed') parts.push(`<text x="${(x1 + 4).toFixed(1)}" y="${y + 13}" fill="#c62828" font-weight="700">✗ failed</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="Timeline of every step">${parts.join('')}</svg>`;
}

function vmSection(vm: VmReport, index: number, png: Buffer | undefined): string {
  const health = vm.steps.find((s) => s.step === 'health');
  const facts = [
    ['Status', statusBadge(vm.status)],
    ['Protection', e(vm.protection)],
    ['Group', e(vm.group)],
    ['Recovery point', vm.point ? `${e(vm.point.id)} of ${e(vm.point.time)}` : '-'],
    ['Data-loss window', `${duration(vm.dataLossWindowMs)} ${verdict(vm.dataLossWindowMet)}`],
    ['Healthy at', vm.healthyAt === null ? '-' : e(vm.healthyAt)],
    ['Health check', health ? (health.status === 'done' ? verdict(true) : health.status === 'failed' ? verdict(false) : e(health.status)) : '-'],
    ...(vm.guest ? [['Guest said', `<code>${e(vm.guest)}</code>`]] : []),
    ...(vm.sourceNotFenced ? [['Warning', `the source could not be fenced: ${e(vm.sourceNotFenced)}`]] : []),
  ];
  return [
    `<h2>VM ${e(vm.vm)}</h2>`,
    `<section class="vm" data-vm="${index}"><dl>${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('')}</dl>`,
    evidence(vm, index, png),
    '</section>',
  ].join('');
}

function evidence(vm: VmReport, index: number, png: Buffer | undefined): string {
  const ev = vm.evidence;
  if (!ev) return '';
  const out = [`<h3>Evidence (captured ${e(ev.capturedAt)})</h3>`];
  if (ev.identity) {
    const id = ev.identity;
    const rows = [
      ['Hostname', id.hostname],
      ['MAC', id.mac],
      ['IP', id.ip],
      ['Printed', id.printed],
    ].filter((r): r is [string, string] => r[1] !== undefined);
    out.push(`<dl class="identity">${rows.map(([k, v]) => `<dt>${k}</dt><dd><code>${e(v)}</code></dd>`).join('')}</dl>`);
  }
  if (ev.point) out.push(`<p>Point booted: ${e(ev.point.id)} of ${e(ev.point.time)} (${duration(ev.point.ageMs)} old)</p>`);
  if (ev.checks.length) {
    const rows = ev.checks.map((c) => `<tr><td>${e(c.check)}</td><td>${verdict(c.passed)}</td><td>${e(c.at)}</td><td>${c.detail === undefined ? '' : e(c.detail)}</td></tr>`);
    out.push(`<table class="checks"><thead><tr><th>Check</th><th>Result</th><th>At</th><th>Detail</th></tr></thead><tbody>${rows.join('')}</tbody></table>`);
  }
  if (ev.console.length) out.push(`<h3>Console, last lines</h3><pre class="console">${e(ev.console.join('\n'))}</pre>`);
  const shot = ev.screenshot;
  if (shot && 'file' in shot) {
    out.push(
      png
        ? `<h3>Screenshot</h3><img class="shot" data-shot="${index}" alt="Screenshot of the console of ${e(vm.vm)}" width="${shot.width}" height="${shot.height}" src="data:image/png;base64,${png.toString('base64')}">`
        : `<p>Screenshot ${e(shot.file)}: missing beside the report, or not the one the drill took.</p>`,
    );
  } else if (shot) {
    out.push(`<p>No screenshot: ${e(shot.missing)}</p>`);
  }
  return out.join('');
}
