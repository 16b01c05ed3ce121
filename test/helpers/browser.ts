/**
 * A real browser for tests of what a person sees: Debian's Chromium (scripts/lab/packages.txt),
 * headless, driven by playwright-core (which brings no browser of its own). As root in a container
 * Chromium needs --no-sandbox. The daemon's certificate is self-signed: only this test browser
 * ignores certificate errors, the daemon's own clients never do.
 *
 * Screenshots go to test-artifacts/ at the repository's root (gitignored), kept after the run.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.VMDR_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts');

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: scripts/lab/setup installs Debian's chromium package`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** A fresh browser profile (its own session storage and cookies), as a new person opening the page. */
export function newVisitor(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 720 }, locale: 'en-GB', timezoneId: 'UTC' });
}

/** Where a screenshot named `name` is kept; the folder is made when missing. */
export async function artifactPath(name: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}
