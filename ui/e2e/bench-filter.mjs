/**
 * Filter benchmark (`npm run bench:filter`, after building dist-e2e): the
 * mocked harness with 2,000 agents (1,000 workspaces × 2) in headless
 * Chromium. Types realistic queries one key at a time and measures, inside
 * the page with performance.now(), each keystroke from dispatching the input
 * event until two animation frames later (the DOM updated and painted), and
 * the time from the snapshot to its first paint and to all rows painted. The
 * same run measures a naive baseline (`?naive=1`: the list rebuilt from
 * scratch, unkeyed, without memo) so the ratio compares like with like.
 *
 * stdout: one JSON object per metric; stderr: progress.
 */
import { launch, openApp, startServer, until } from './lib.mjs';

const WORKSPACES = 1000;
const AGENTS = WORKSPACES * 2;
const TARGET_MS = 50;
/** Queries typed then erased key by key: 28 keystrokes per round. */
const QUERIES = ['ws-12', 'main.ws-7'];
const ROUNDS = 3; // the first one warms up and is not counted

function keystrokes() {
  const keys = [];
  for (const q of QUERIES) {
    for (const ch of q) keys.push(ch);
    for (let i = 0; i < q.length; i++) keys.push('Backspace');
  }
  return keys;
}

/** One keystroke in the page: edit the filter, dispatch `input`, wait two frames. */
function pressInPage(key) {
  const input = document.querySelector('[data-testid=filter]');
  return new Promise((resolve) => {
    const t0 = performance.now();
    input.value = key === 'Backspace' ? input.value.slice(0, -1) : input.value + key;
    input.dispatchEvent(new InputEvent('input', { bubbles: true, data: key === 'Backspace' ? null : key }));
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
  });
}

/**
 * From the snapshot arriving: to the first frame that shows agents, and to
 * all 2,000 rows in the DOM and painted (frames polled, at most 20 s).
 */
function renderInPage(n) {
  const rows = () => document.querySelectorAll('[data-testid=agent-row]').length;
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  return (async () => {
    const t0 = performance.now();
    window.warrenMock.seed(n);
    await frame();
    await frame();
    const first = rows() > 0 ? performance.now() - t0 : null;
    while (rows() < 2 * n && performance.now() - t0 < 20_000) await frame();
    await frame();
    await frame();
    return { first, ms: performance.now() - t0, rows: rows() };
  })();
}

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function measure(browser, base, naive) {
  const label = naive ? 'naive' : 'warren';
  const page = await openApp(browser, base, `seed=none&session=connected${naive ? '&naive=1' : ''}`);
  await page.getByTestId('empty-state').waitFor();
  const render = await page.evaluate(renderInPage, WORKSPACES);
  if (render.rows !== AGENTS) throw new Error(`${label}: ${render.rows} rows after the snapshot, expected ${AGENTS}`);
  process.stderr.write(`${label}: 2,000 agents: first paint ${render.first?.toFixed(1)} ms, all rows ${render.ms.toFixed(1)} ms\n`);
  const samples = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const key of keystrokes()) {
      const ms = await page.evaluate(pressInPage, key);
      if (round > 0) samples.push(ms);
      if (ms > TARGET_MS) process.stderr.write(`${label}: round ${round + 1} key ${JSON.stringify(key)} took ${ms.toFixed(1)} ms\n`);
    }
    process.stderr.write(`${label}: round ${round + 1}/${ROUNDS} done\n`);
  }
  // The filter really filtered: every query was erased again, and a query narrows (ws-12, ws-120…129).
  for (const k of 'ws-12') await page.evaluate(pressInPage, k);
  const shown = await page.evaluate(() =>
    [...document.querySelectorAll('[data-testid=agent-row]')].filter((el) => !el.closest('[hidden]')).length);
  await until(async () => (await page.getByTestId('filter-count').innerText()) === '22 of 2,000 agents', { what: 'count' });
  if (shown !== 22) throw new Error(`${label}: "ws-12" left ${shown} rows visible, expected 22`);
  if (page.errors.length) throw new Error(`${label}: page errors: ${page.errors.join('; ')}`);
  await page.context().close();
  return { render: render.ms, first: render.first, p50: percentile(samples, 50), p90: percentile(samples, 90), max: Math.max(...samples), n: samples.length };
}

const round1 = (x) => Math.round(x * 10) / 10;

async function main() {
  const server = await startServer();
  const browser = await launch();
  try {
    const ours = await measure(browser, server.url, false);
    const naive = await measure(browser, server.url, true);
    process.stderr.write(`${ours.n} keystrokes measured per variant\n`);
    const line = (metric, value, base, extra = {}) =>
      console.log(JSON.stringify({
        bench: 'gui', metric, value: round1(value), unit: 'ms', ...extra,
        baseline: 'naive-rerender', baseline_value: round1(base), ratio: Math.round((base / value) * 100) / 100,
      }));
    line('filter_keystroke_p50', ours.p50, naive.p50, { target: TARGET_MS });
    line('filter_keystroke_p90', ours.p90, naive.p90, { target: TARGET_MS });
    line('filter_keystroke_max', ours.max, naive.max, { target: TARGET_MS });
    // "First render": the first frame that shows the snapshot's agents. A big
    // list mounts the rest a frame later, so the time to all rows is shown too.
    line('render_2000_agents_ms', ours.first, naive.first);
    line('render_2000_agents_all_rows_ms', ours.render, naive.render);
  } finally {
    await browser.close();
    await server.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
