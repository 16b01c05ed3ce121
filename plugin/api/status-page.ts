/**
 * The status page of `vmdr serve`: one self-contained HTML file (templates/pages/status.html) that
 * holds no data. It loads without a token; its own script asks the person for one and reads the API
 * with it, so what it shows is exactly what that token may see.
 *
 * Served under a strict Content-Security-Policy: nothing but the page's own inline script and style
 * runs, allowed by their SHA-256 (computed here when the daemon starts, so an edit of the template
 * needs no edit of a header), requests only to this origin, no framing, no form posts, and Trusted
 * Types with no policy at all, so no string can ever become HTML through innerHTML.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { TemplateInvalid } from '../../hypervisors/errors.js';

export const STATUS_PAGE_PATH = '/status';
/** Paths that answer without a token: the page and the root that leads to it. */
export const STATUS_PAGE_PATHS = new Set(['/', STATUS_PAGE_PATH]);

export interface StatusPage {
  html: string;
  headers: Record<string, string>;
}

/** templates/ sits beside package.json, found from source (plugin/api/) and from the build (dist/plugin/api/) alike. */
function templateFile(): string {
  for (let dir = import.meta.dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'templates', 'pages', 'status.html');
    if (dirname(dir) === dir) throw new TemplateInvalid(import.meta.dirname, 'no package.json above this module, so no templates/ folder');
  }
}

const hashOf = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** The bodies of the page's inline elements of one kind (`<script>…</script>` without attributes). */
function inlineBodies(html: string, tag: 'script' | 'style'): string[] {
  return [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => m[1]!);
}

export async function loadStatusPage(file = templateFile()): Promise<StatusPage> {
  let html: string;
  try {
    html = await readFile(file, 'utf8');
  } catch (err) {
    throw new TemplateInvalid(file, (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such template' : 'cannot read the template', err);
  }
  // A script or style the hashes below would not cover would be blocked in the browser: refuse it here.
  const markup = html.replace(/<(script|style)>[\s\S]*?<\/\1>/g, '');
  if (/<script|<style|<link|\sstyle=|\son[a-z]+=/i.test(markup)) {
    throw new TemplateInvalid(file, 'only plain inline <script> and <style> elements are allowed: no src, no link, no style= or on…= attributes');
  }
  const scripts = inlineBodies(html, 'script');
  const styles = inlineBodies(html, 'style');
  if (scripts.length === 0) throw new TemplateInvalid(file, 'no inline <script>');
  const csp = [
    "default-src 'none'",
    `script-src ${scripts.map(hashOf).join(' ')}`,
    `style-src ${styles.length ? styles.map(hashOf).join(' ') : "'none'"}`,
    "connect-src 'self'",
    "img-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
  ].join('; ');
  return {
    html,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': csp,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
      'cross-origin-opener-policy': 'same-origin',
      'cache-control': 'no-store',
    },
  };
}

export function registerStatusPage(app: FastifyInstance, page: StatusPage): void {
  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect(STATUS_PAGE_PATH));
  app.get(STATUS_PAGE_PATH, { schema: { hide: true } }, async (_req, reply) => reply.headers(page.headers).send(page.html));
}
