#!/usr/bin/env node
/**
 * Plays the person at the browser in Warren's sign-in tests: headless Debian
 * Chromium (playwright-core) from a start URL through the coordinator's
 * sign-in page (a `data-testid="continue"` button or link), the test
 * provider's login form and consent, and the redirects after them, until the
 * browser goes to a `warren:` URL or to a URL starting with the stop prefix.
 *
 *   node tests/oidc/browser.mjs --start URL --stop PREFIX
 *        [--username U --password P] [--screenshots DIR] [--deliver] [--timeout-ms N]
 *
 * Prints one JSON line on stdout, the only place the final URL (which carries
 * a one-time code) appears:
 *   {"final_url":…|null,"stopped":bool,"title":…,"text":…,"pages":[paths]}
 * `stopped` is false when the browser came to rest on a page with nothing
 * left to press (an error page, a refused login): `title`/`text` are that
 * page's, for the test to assert on. Exits nonzero, with the reason on
 * stderr, on a real failure (no Chromium, timeout while pages keep changing).
 *
 * `warren:` URLs are never opened: the navigation is seen as a request and
 * recorded, and Chromium itself has no handler for the scheme. The stop
 * prefix is answered by a stub page (and `title`/`text` are empty) unless
 * `--deliver`, which lets the request reach the real listener (the CLI's
 * loopback server) and reports the page it answers with. For `warren:` they
 * are the page that sent the browser there.
 */
import { mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.WARREN_CHROMIUM ?? '/usr/bin/chromium';
const t0 = Date.now();
const log = (...a) => console.error(`[browser +${Date.now() - t0}ms]`, ...a);

function parseArgs(argv) {
  const out = { timeoutMs: 30000, deliver: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--start') out.start = val();
    else if (a === '--stop') out.stop = val();
    else if (a === '--username') out.username = val();
    else if (a === '--password') out.password = val();
    else if (a === '--screenshots') out.screenshots = val();
    else if (a === '--timeout-ms') out.timeoutMs = Number(val());
    else if (a === '--deliver') out.deliver = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.start) throw new Error('--start URL is required');
  return out;
}

/** Origin and path only: queries carry codes and state. */
const redact = (u) => {
  try {
    const url = new URL(u);
    return url.protocol === 'http:' || url.protocol === 'https:' ? `${url.origin}${url.pathname}` : `${url.protocol}…`;
  } catch {
    return '(unparsable URL)';
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set WARREN_CHROMIUM)`);
  const isStop = (u) => u.startsWith('warren:') || (args.stop !== undefined && u.startsWith(args.stop));

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 15000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-default-apps'],
  });
  try {
    return await run(browser, args, isStop);
  } finally {
    await browser.close().catch(() => {});
  }
}

async function run(browser, args, isStop) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  let finalUrl = null;
  let delivered = null;
  // Any request the browser makes to a stop URL ends the walk; `warren:`
  // shows up here too (as a request nothing can fetch), never in `route`.
  context.on('request', (r) => {
    if (finalUrl === null && isStop(r.url()) && (r.isNavigationRequest() || r.url().startsWith('warren:'))) {
      finalUrl = r.url();
      log(`reached ${redact(finalUrl)}`);
    }
  });
  if (args.stop !== undefined && !args.deliver) {
    await context.route((u) => isStop(u.href), (route) => route.fulfill({
      status: 200,
      contentType: 'text/html',
      body: '<!doctype html><title>Stopped</title><p>The test caught this redirect.</p>',
    }));
  }
  if (args.deliver) {
    page.on('response', (r) => {
      if (isStop(r.url()) && r.request().isNavigationRequest()) delivered = r;
    });
  }

  let failedNavigation = null;
  page.on('requestfailed', (r) => {
    if (r.isNavigationRequest() && !r.url().startsWith('warren:')) {
      failedNavigation = `${redact(r.url())}: ${r.failure()?.errorText ?? 'failed'}`;
    }
  });

  if (args.screenshots) mkdirSync(args.screenshots, { recursive: true });
  const pages = [];
  let shot = 0;
  const attempts = new Map();
  const deadline = Date.now() + args.timeoutMs;

  const visible = async (sel) => {
    const l = page.locator(sel).first();
    return (await l.count()) > 0 && (await l.isVisible()) ? l : null;
  };
  const textOf = async () => ({
    title: await page.title().catch(() => ''),
    text: (await page.locator('body').innerText({ timeout: 2000 }).catch(() => '')).slice(0, 8000),
  });

  try {
    await page.goto(args.start, { timeout: 15000 });
  } catch (e) {
    if (finalUrl === null) throw new Error(`could not open the start page ${redact(args.start)}: ${e.message.split('\n')[0]}`);
  }

  /** `NN-<title>.png`, e.g. 02-test-idp-sign-in.png. */
  const screenshot = async () => {
    const title = await page.title().catch(() => '');
    const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 48) || 'page';
    const file = join(args.screenshots, `${String(++shot).padStart(2, '0')}-${slug}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch((e) => log(`screenshot failed: ${e.message}`));
  };

  let lastUrl = null;
  while (finalUrl === null) {
    if (Date.now() > deadline) {
      const { title, text } = await textOf();
      throw new Error(`timed out after ${args.timeoutMs} ms at ${redact(page.url())} ("${title}"): ${text.slice(0, 300)}`);
    }
    await page.waitForLoadState('load', { timeout: 5000 }).catch(() => {});
    if (finalUrl !== null) break;
    const url = page.url();
    if (url.startsWith('chrome-error:')) {
      // Chromium's error page would repeat the URL (and any code in it).
      throw new Error(`the browser could not load ${failedNavigation ?? 'a page'} (after ${pages.join(' → ')})`);
    }
    if (url !== lastUrl) {
      lastUrl = url;
      pages.push(redact(url));
      log(`at ${redact(url)}`);
      if (args.screenshots) await screenshot();
    }

    // One action per page state; the same action twice on the same URL
    // means it didn't work (a refused login shows the form again).
    let action = null;
    let target = null;
    if ((target = await visible('[data-testid="login-error"]'))) action = null;
    else if ((target = await visible('[data-testid="continue"]'))) action = 'continue';
    else if ((target = await visible('input[name="username"]'))) action = 'login';
    else if ((target = await visible('[data-testid="approve"]'))) action = 'approve';
    else if ((target = await visible('a[href^="warren:"]'))) action = 'warren-link';
    const key = `${url}|${action}`;
    if (action !== null && (attempts.get(key) ?? 0) < 1) {
      attempts.set(key, (attempts.get(key) ?? 0) + 1);
      if (action === 'warren-link') {
        // The "return to Warren" page follows its link by itself; press it
        // only if it didn't.
        if (await changedWithin(page, url, () => finalUrl !== null, 1500)) continue;
      }
      log(`${action} on ${redact(url)}`);
      if (action === 'login') {
        if (args.username === undefined || args.password === undefined) throw new Error(`a login form at ${redact(url)} but no --username/--password given`);
        await page.fill('input[name="username"]', args.username);
        await page.fill('input[name="password"]', args.password);
        await page.locator('[data-testid="login"], form button[type="submit"], input[type="submit"]').first().click({ noWaitAfter: true });
      } else {
        await target.click({ noWaitAfter: true });
      }
      await changedWithin(page, url, () => finalUrl !== null, 5000);
      continue;
    }
    // Nothing to press: wait for a redirect of its own, else this is where
    // the walk ends.
    if (await changedWithin(page, url, () => finalUrl !== null, 2000)) continue;
    const { title, text } = await textOf();
    log(`came to rest at ${redact(url)} ("${title}")`);
    return { final_url: null, stopped: false, title, text, pages };
  }

  if (args.deliver && !finalUrl.startsWith('warren:')) {
    // The real listener answers; its page is the result.
    while (delivered === null) {
      if (failedNavigation !== null && page.url().startsWith('chrome-error:')) {
        throw new Error(`the stop URL's listener did not answer: ${failedNavigation}`);
      }
      if (Date.now() > deadline) throw new Error(`the stop URL's listener did not answer within ${args.timeoutMs} ms`);
      await sleep(50);
    }
    await page.waitForLoadState('load', { timeout: 5000 }).catch(() => {});
  }
  await sleep(100);
  // A caught (not delivered) http stop has no page worth reading, and
  // Chromium's own error page would repeat the URL and its code.
  const caught = !args.deliver && !finalUrl.startsWith('warren:');
  if (args.screenshots && !caught) await screenshot();
  const { title, text } = caught ? { title: '', text: '' } : await textOf();
  pages.push(redact(finalUrl));
  return { final_url: finalUrl, stopped: true, title, text, pages };
}

/** Whether the page left `url` (or `done()`) within `ms`. */
async function changedWithin(page, url, done, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (done() || page.url() !== url) return true;
    await sleep(50);
  }
  return false;
}

try {
  const result = await main();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (e) {
  log(`failed: ${e.message}`);
  process.exit(1);
}
