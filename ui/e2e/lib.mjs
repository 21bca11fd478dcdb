/**
 * Shared pieces of the browser tests and the benchmark: a static server for
 * dist-e2e on 127.0.0.1 (a free port), Debian's Chromium through
 * playwright-core, screenshots, and bounded polling.
 */
import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const UI_DIR = resolve(here, '..');
const ROOT = join(UI_DIR, 'dist-e2e');
export const CHROMIUM = process.env.WARREN_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = process.env.WARREN_SCREENSHOT_DIR ?? join(UI_DIR, 'test-results', 'screenshots');
export const VIEWPORT = { width: 1100, height: 720 };

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png' };

/** Serves dist-e2e; resolves to { url, close }. */
export async function startServer() {
  if (!existsSync(join(ROOT, 'e2e', 'harness.html'))) {
    throw new Error(`${ROOT}/e2e/harness.html is missing: run \`npx vite build --config vite.e2e.config.ts\` first (npm run e2e does)`);
  }
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(ROOT, path);
    if (!file.startsWith(ROOT) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(readFileSync(file));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/e2e/harness.html`,
    close: () => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }),
  };
}

/** Debian's Chromium, headless; a missing browser is an error, never a skip. */
export async function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
}

/** A page at the harness with `query` (e.g. `seed=demo&session=connected`), waiting until the app rendered. */
export async function openApp(browser, base, query = '', { colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${base}${query ? `?${query}` : ''}`);
  await page.waitForFunction(() => !!window.warrenMock && document.querySelector('#app').childElementCount > 0, null, { timeout: 10_000 });
  page.errors = errors;
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  // Let transitions (switch, dimming) settle so the picture is the resting state.
  await page.evaluate(() => new Promise((r) => setTimeout(r, 250)));
  await page.screenshot({ path: join(SCREENSHOT_DIR, name) });
}

/** Polls `fn` until it returns a truthy value, for at most `timeoutMs`. */
export async function until(fn, { timeoutMs = 5000, stepMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}
