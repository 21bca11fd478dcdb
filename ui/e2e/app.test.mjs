/**
 * The web UI in headless Chromium with Tauri's IPC mocked (e2e/harness.tsx):
 * sign-in, connect, big lists and the filter, copying a name, what the
 * helper refused of a deployment, helper trouble, settings, about, logs —
 * and a screenshot of each screen.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openApp, screenshot, startServer, until } from './lib.mjs';

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

const open = (query, opts) => openApp(browser, server.url, query, opts);
const calls = (page, cmd) => page.evaluate((c) => window.warrenMock.calls(c), cmd);
const text = (page, testid) => page.getByTestId(testid).first().innerText();
/** Agent rows not hidden by the filter. */
const visibleRows = (page) =>
  page.evaluate(() => [...document.querySelectorAll('[data-testid=agent-row]')].filter((el) => !el.closest('[hidden]')).length);

async function done(page) {
  assert.deepEqual(page.errors.map(String), [], 'no uncaught errors in the page');
  await page.context().close();
}

describe('warren ui', () => {
  test('looking for the helper, then it appears', async () => {
    const page = await open('link=searching&seed=demo&session=connected');
    await page.getByText('Looking for the Warren helper…').waitFor();
    await page.evaluate(() => window.warrenMock.setLink('connected'));
    await page.getByTestId('agent-row').first().waitFor();
    // Subscribed once, and told the app about the first paint once.
    assert.equal((await calls(page, 'subscribe')).length, 1);
    await until(async () => (await calls(page, 'ui_ready')).length === 1, { what: 'ui_ready' });
    await done(page);
  });

  test('missed events make the UI subscribe again and take the fresh snapshot', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() => {
      // A diff numbered past the next expected seq: something was lost.
      window.warrenMock.model.seq += 5;
      window.warrenMock.stream({ event: 'peer_update', upserted_workspaces: [], upserted_agents: [], deleted_workspaces: ['w-api'], deleted_agents: [] });
    });
    await until(async () => (await calls(page, 'subscribe')).length === 2, { what: 'second subscribe' });
    // The gap's diff was not applied, and the replayed snapshot shows everything.
    await until(async () => (await page.getByTestId('agent-row').count()) === 7, { what: 'rows after replay' });
    await done(page);
  });

  test('dark mode follows the system', async () => {
    const page = await open('seed=demo&session=connected', { colorScheme: 'dark' });
    await page.getByTestId('agent-row').first().waitFor();
    const bg = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    assert.equal(bg, 'rgb(21, 23, 27)');
    await screenshot(page, 'main-dark.png');
    await done(page);
  });

  test('sign in: a wrong token shows the error under the token field, then success shows the main window', async () => {
    const page = await open('account=none&seed=demo');
    await page.getByTestId('signin-url').waitFor();
    await screenshot(page, 'signin.png');
    await page.evaluate(() =>
      window.warrenMock.failSignIn('wt_wrong', 'wrong_token', 'The coordinator rejected this token. Check that you copied all of it, or create a new one.'));
    await page.getByTestId('signin-url').fill('https://warren.example.com');
    await page.getByTestId('signin-token').fill('wt_wrong');
    await page.getByTestId('signin-submit').click();
    // Progress while the command runs.
    await until(async () => (await page.getByTestId('signin-submit').innerText()).includes('Signing in'), { what: 'progress' });
    const err = page.getByTestId('signin-error');
    await err.waitFor();
    assert.equal(await err.getAttribute('data-field'), 'token');
    assert.match(await err.innerText(), /rejected this token/);
    // It sits under the token field, not anywhere else.
    assert.equal(await err.evaluate((el) => !!el.closest('label')?.querySelector('[data-testid=signin-token]')), true);
    assert.equal(await page.getByTestId('signin-token').getAttribute('aria-invalid'), 'true');
    await screenshot(page, 'signin-error.png');

    // A bad URL is shown under the URL field.
    await page.getByTestId('signin-url').fill('warren');
    await page.getByTestId('signin-submit').click();
    await until(async () => (await err.getAttribute('data-field').catch(() => null)) === 'url', { what: 'url error' });

    await page.getByTestId('signin-url').fill('https://warren.example.com');
    await page.getByTestId('signin-token').fill('wt_good_token');
    await page.getByTestId('signin-submit').click();
    await page.getByTestId('session-state').waitFor();
    assert.equal(await text(page, 'header-account'), 'alice @ warren.example.com');
    const signIns = await calls(page, 'sign_in');
    assert.deepEqual(signIns.at(-1), { request: { url: 'https://warren.example.com', token: 'wt_good_token', ca_pem: null } });
    assert.equal(await page.getByTestId('agent-row').count(), 7);
    await done(page);
  });

  test('connect: the switch calls connect and the session line says Connected', async () => {
    const page = await open('seed=demo');
    assert.equal(await text(page, 'session-state'), 'Disconnected');
    assert.equal(await page.getByTestId('connect-toggle').isChecked(), false);
    await page.getByTestId('disconnected-note').waitFor();
    // A refused connect says why and leaves the switch off.
    await page.evaluate(() => window.warrenMock.failCommand('connect', 'not_signed_in', 'Sign in again: the saved token is gone from the keyring.'));
    await page.getByTestId('connect-toggle').click();
    await page.getByTestId('command-error').waitFor();
    assert.match(await text(page, 'command-error'), /Sign in again/);
    await until(async () => (await page.getByTestId('connect-toggle').isChecked()) === false, { what: 'switch back off' });
    await page.evaluate(() => window.warrenMock.failCommand('connect', null));
    await page.getByTestId('connect-toggle').click();
    await until(async () => (await text(page, 'session-state')) === 'Connected', { what: 'Connected' });
    assert.equal((await calls(page, 'connect')).length, 2);
    assert.equal(await page.getByTestId('connect-toggle').isChecked(), true);
    assert.equal(await page.getByTestId('command-error').count(), 0);
    assert.equal(await page.getByTestId('disconnected-note').count(), 0);
    // Mixed dots, as the demo seeds them.
    const dots = await page.evaluate(() =>
      Object.fromEntries([...document.querySelectorAll('[data-testid=agent-row]')].map((el) => [el.dataset.agentId, el.dataset.dot])));
    assert.deepEqual(dots, {
      'a-api-main': 'green', 'a-api-gpu': 'amber', 'a-web-main': 'green', 'a-data-main': 'green',
      'a-data-spark': 'grey', 'a-ml-trainer': 'red', 'a-docs-main': 'grey',
    });
    const row = page.locator('[data-agent-id=a-api-main]');
    assert.match(await row.getByTestId('handshake').innerText(), /^handshake \d+ s ago$/);
    assert.equal(await row.getByTestId('traffic').innerText(), '↓ 1.2 MB ↑ 340 kB');
    assert.equal(await row.getByTestId('rtt').innerText(), '0.5 ms');
    assert.equal(await page.locator('[data-agent-id=a-api-gpu]').getByTestId('handshake').innerText(), 'handshake stale (4 min ago)');
    assert.equal(await page.locator('[data-agent-id=a-ml-trainer]').getByTestId('handshake').innerText(), 'agent offline');
    // The path, as `warren status` says it: direct while the handshake is fresh, none once stale.
    assert.equal(await row.getByTestId('path').innerText(), 'direct');
    assert.equal(await page.locator('[data-agent-id=a-api-gpu]').getByTestId('path').innerText(), '');
    await screenshot(page, 'main-connected.png');

    // Switching off calls disconnect.
    await page.getByTestId('connect-toggle').click();
    await until(async () => (await text(page, 'session-state')) === 'Disconnected', { what: 'Disconnected' });
    assert.equal((await calls(page, 'disconnect')).length, 1);
    await done(page);
  });

  test('session line: reconnect countdown, failure, tunnel warning, Reconnect', async () => {
    const page = await open('seed=demo&session=connected');
    await page.evaluate(() => window.warrenMock.setSession('reconnecting', { retry_in_ms: 8000, reason: 'coordinator unreachable', attempt: 2 }));
    await until(async () => (await text(page, 'session-state')) === 'Reconnecting in 8 s — coordinator unreachable', { what: 'countdown 8' });
    await until(async () => (await text(page, 'session-state')) === 'Reconnecting in 7 s — coordinator unreachable', { timeoutMs: 3000, what: 'countdown 7' });
    assert.equal(await page.getByTestId('connect-toggle').isChecked(), true);
    await page.evaluate(() => window.warrenMock.setSession('failed', { reason: 'the coordinator rejected the token' }));
    await until(async () => (await text(page, 'session-state')) === 'Failed — the coordinator rejected the token', { what: 'failed' });
    await page.evaluate(() => window.warrenMock.setSession('connected', { tunnel: { state: 'failed', error: 'Could not create the TUN device warren0: permission denied.', interface: 'warren0', listen_port: 51820 } }));
    await page.getByTestId('tunnel-warning').waitFor();
    assert.match(await text(page, 'tunnel-warning'), /permission denied/);
    await page.getByTestId('reconnect').click();
    await until(async () => (await calls(page, 'reconnect')).length === 1, { what: 'reconnect call' });
    await done(page);
  });

  test('a stream event reaches the DOM at once: a new handshake turns a grey dot green', async () => {
    const page = await open('seed=demo&session=connected');
    const spark = page.locator('[data-agent-id=a-data-spark]');
    assert.equal(await spark.getAttribute('data-dot'), 'grey');
    const ms = await page.evaluate(() => new Promise((resolve) => {
      const row = document.querySelector('[data-agent-id=a-data-spark]');
      const t0 = performance.now();
      window.warrenMock.stats([{ agent_id: 'a-data-spark', last_handshake_ms: Date.now(), rx_bytes: 2048, tx_bytes: 1024, rtt_us: 800, endpoint: null }]);
      requestAnimationFrame(() => resolve(row.dataset.dot === 'green' ? performance.now() - t0 : -1));
    }));
    assert.ok(ms >= 0, 'green by the next frame');
    assert.equal(await spark.getByTestId('handshake').innerText(), 'handshake just now');
    assert.equal(await spark.getByTestId('traffic').innerText(), '↓ 2.0 kB ↑ 1.0 kB');
    // The clock ages it without new data.
    await until(async () => (await spark.getByTestId('handshake').innerText()) === 'handshake 1 s ago', { timeoutMs: 3000, what: 'tick' });
    await done(page);
  });

  test('a stats update re-renders only the rows it changed; the clock and the filter re-render none', async () => {
    const page = await open('seed=500&session=connected');
    await until(async () => (await page.getByTestId('agent-row').count()) === 1000, { timeoutMs: 10_000, what: '1000 rows' });
    const renders = () => page.evaluate(() => window.warrenMock.takeRowRenders());
    await renders();
    const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.evaluate(() => window.warrenMock.stats(['a3-0', 'a42-1', 'a499-0'].map((agent_id) =>
      ({ agent_id, last_handshake_ms: Date.now(), rx_bytes: 5_000_000, tx_bytes: 1, rtt_us: 300, endpoint: null }))));
    await frames();
    assert.equal(await renders(), 3);
    // textContent: an off-screen block skips rendering, and innerText with it.
    assert.equal(await page.locator('[data-agent-id=a42-1]').getByTestId('traffic').textContent(), '↓ 5.0 MB ↑ 1 B');
    // Ages move every second by repainting text in place, not by rendering.
    const hs = page.locator('[data-agent-id=a499-0]').getByTestId('handshake');
    const before = await hs.textContent();
    await until(async () => (await hs.textContent()) !== before, { timeoutMs: 3000, what: 'tick' });
    await page.getByTestId('filter').fill('ws-4');
    await frames();
    await page.getByTestId('filter').fill('');
    await frames();
    assert.equal(await renders(), 0);
    await done(page);
  });

  test('1,000 agents render and the filter narrows them', async () => {
    const page = await open('seed=500&session=connected');
    await until(async () => (await page.getByTestId('agent-row').count()) === 1000, { timeoutMs: 10_000, what: '1000 rows' });
    assert.equal(await page.getByTestId('workspace').count(), 500);
    assert.equal(await text(page, 'filter-count'), '1,000 agents in 500 workspaces');
    await screenshot(page, 'main-1000.png');

    await page.getByTestId('filter').fill('WS-12');
    // ws-12 and ws-120…129: 11 workspaces, two agents each.
    await until(async () => (await visibleRows(page)) === 22, { what: '22 rows' });
    assert.equal(await text(page, 'filter-count'), '22 of 1,000 agents');
    await screenshot(page, 'filtered.png');
    // Off-screen chunks stand in with exactly their content's height, so the
    // scrollbar is right and nothing jumps when they render.
    const placeholders = () => page.evaluate(() => {
      const chunks = [...document.querySelectorAll('.chunk')].filter((c) => !c.hidden);
      const style = document.createElement('style');
      style.textContent = '.chunk { content-visibility: visible !important; }';
      document.head.append(style);
      const out = chunks.map((c) => [Math.round(c.getBoundingClientRect().height), Number(c.dataset.size.split(' ')[1].replace('px', ''))]);
      style.remove();
      return out;
    });
    for (const [real, placeholder] of await placeholders()) assert.equal(real, placeholder);

    // An agent name narrows within a workspace; so do DNS names and addresses.
    await page.getByTestId('filter').fill('worker.ws-7.');
    await until(async () => (await visibleRows(page)) === 1, { what: '1 row' });
    assert.equal(await page.evaluate(() => [...document.querySelectorAll('[data-testid=agent-row]')].find((el) => !el.closest('[hidden]')).dataset.agentId), 'a7-1');
    await page.getByTestId('filter').fill('A1E0::3E8');
    await until(async () => (await text(page, 'filter-count')) === '1 of 1,000 agents', { what: 'address match' });

    await page.getByTestId('filter').fill('xyz');
    await page.getByTestId('empty-state').waitFor();
    assert.equal(await text(page, 'empty-state').then((t) => t.split('\n')[0]), 'No agent matches “xyz”');
    await page.getByTestId('clear-filter').click();
    await until(async () => (await visibleRows(page)) === 1000, { what: 'all rows back' });
    assert.equal(await page.getByTestId('filter').inputValue(), '');
    const all = await placeholders();
    assert.equal(all.length, 25);
    for (const [real, placeholder] of all) assert.equal(real, placeholder);
    await done(page);
  });

  test('copy-name copies the primary DNS name (the shortest, as the CLI shows) and says Copied', async () => {
    const page = await open('seed=demo&session=connected');
    const row = page.locator('[data-agent-id=a-api-main]');
    // The workspace's first agent also answers to `api.warren`: that one, as in `warren status`.
    assert.equal(await row.locator('code.dns').textContent(), 'api.warren');
    assert.equal(await page.locator('[data-agent-id=a-api-gpu] code.dns').textContent(), 'gpu-worker.api.alice.warren');
    await row.hover();
    await row.getByTestId('copy-name').click();
    await row.getByText('Copied').waitFor();
    assert.deepEqual(await calls(page, 'copy_text'), [{ text: 'api.warren' }]);
    await until(async () => (await row.getByText('Copied').count()) === 0, { timeoutMs: 4000, what: 'Copied to go away' });
    await done(page);
  });

  test('clicking the round trip pings the agent and shows the answer or why there was none', async () => {
    const page = await open('seed=demo&session=connected');
    const row = page.locator('[data-agent-id=a-api-main]');
    await row.getByTestId('rtt').click();
    await until(async () => (await row.getByTestId('rtt').textContent()) === '0.4 ms', { what: 'ping result' });
    assert.deepEqual(await calls(page, 'ping'), [{ target: 'api.warren' }]);
    const offline = page.locator('[data-testid=agent-row][data-dot=red]').first();
    await offline.getByTestId('rtt').click();
    await until(async () => (await offline.getByTestId('rtt').textContent()) === 'no reply', { what: 'no reply' });
    assert.match(await offline.getByTestId('rtt').getAttribute('title'), /No reply from/);
    await done(page);
  });

  test('a rejected token offers to sign in again, with the deployment filled in', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() =>
      window.warrenMock.setSession('failed', {
        reason: 'The coordinator rejected your token — sign in again with `warren login`.',
        reason_code: 'sign_in_required',
      }),
    );
    await page.getByTestId('sign-in-required').waitFor();
    await screenshot(page, 'sign-in-required.png');
    await page.getByTestId('sign-in-again').click();
    await page.getByTestId('signin-url').waitFor();
    assert.equal(await page.getByTestId('signin-url').inputValue(), 'https://warren.example.com');
    assert.deepEqual((await calls(page, 'sign_out')).length, 1);
    await done(page);
  });

  test('what the helper refused of the deployment: a warnings disclosure, and the marked agent', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    assert.equal(await page.getByTestId('notices').count(), 0);
    await page.evaluate(() => window.warrenMock.takeRowRenders());
    await page.evaluate(() =>
      window.warrenMock.setSession('connected', {
        tunnel: { state: 'up', error: null, interface: 'warren0', listen_port: 51820, generation: 1 },
        notices: [
          { kind: 'agent_refused', agent_id: 'a-rogue', message: "agent rogue (a-rogue) was left out: its address 10.9.0.7 is outside the deployment's ranges 100.64.0.0/16, fd7a:115c:a1e0::/48; ask the deployment's administrator" },
          { kind: 'agent_refused', agent_id: 'a-shadow', message: "agent shadow (a-shadow) was left out: it announced the WireGuard key of agent a-api-main, and a key belongs to one agent; ask the deployment's administrator" },
          { kind: 'agent_trimmed', agent_id: 'a-api-gpu', message: 'agent gpu-worker (a-api-gpu): ignored 2 of its endpoints (127.0.0.1:22 is a loopback address); ignored DNS names that are not under .warren or over the limit of 8 (www.example.com)' },
          { kind: 'agents_capped', agent_id: null, message: "the deployment has more agents than the 50000 this helper keeps (3 left out so far); the rest are not shown or reachable — ask its administrator, or raise max_agents in this machine's Warren policy" },
        ],
      }),
    );
    const box = page.getByTestId('notices');
    await box.waitFor();
    assert.equal((await text(page, 'notices-summary')).replace(/\s+/g, ' '), '4 warnings about this deployment — Some agents were left out and are not reachable');
    // Closed at first: the list doesn't push the workspaces away.
    assert.equal(await box.evaluate((el) => el.open), false);
    assert.equal(await page.getByTestId('notice').first().isVisible(), false);
    // Only the row of the agent it is about re-rendered, and only it is marked.
    assert.equal(await page.evaluate(() => window.warrenMock.takeRowRenders()), 1);
    const gpu = page.locator('[data-agent-id=a-api-gpu]');
    assert.equal(await gpu.getAttribute('data-warning'), '');
    assert.match(await gpu.getByTestId('agent-warning').getAttribute('aria-label'), /^Warning: Agent gpu-worker \(a-api-gpu\): ignored 2 of its endpoints/);
    assert.equal(await page.locator('[data-testid=agent-row][data-warning]').count(), 1);
    // The session line stays as it was; the warnings are beside it, not instead of it.
    assert.equal(await text(page, 'session-state'), 'Connected');

    // Opens by keyboard as well as by click, listing every notice as a sentence, newest last.
    await page.getByTestId('notices-summary').focus();
    await page.keyboard.press('Enter');
    await until(() => box.evaluate((el) => el.open), { what: 'open by keyboard' });
    const items = await page.getByTestId('notice').evaluateAll((els) => els.map((el) => [el.dataset.kind, el.dataset.aboutAgent ?? null, el.innerText]));
    assert.equal(items.length, 4);
    assert.deepEqual(items.map(([k, a]) => [k, a]), [
      ['agent_refused', 'a-rogue'], ['agent_refused', 'a-shadow'], ['agent_trimmed', 'a-api-gpu'], ['agents_capped', null],
    ]);
    assert.equal(items[0][2], "Agent rogue (a-rogue) was left out: its address 10.9.0.7 is outside the deployment's ranges 100.64.0.0/16, fd7a:115c:a1e0::/48; ask the deployment's administrator.");
    assert.match(items[3][2], /^The deployment has more agents than the 50000 this helper keeps/);
    assert.equal(await page.getByTestId('notice').last().isVisible(), true);
    await screenshot(page, 'notices.png');
    await page.getByTestId('notices-summary').click();
    await until(async () => !(await box.evaluate((el) => el.open)), { what: 'closed by click' });

    // The helper cleared them: the area and the mark go.
    await page.evaluate(() => window.warrenMock.setSession('connected', { notices: [] }));
    await until(async () => (await box.count()) === 0, { what: 'notices to go' });
    assert.equal(await page.locator('[data-testid=agent-row][data-warning]').count(), 0);
    await done(page);
  });

  test('a refused deployment says why and offers no retry, only signing out', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() =>
      window.warrenMock.setSession('failed', {
        reason: "the deployment asked to route 0.0.0.0/1, which is outside the ranges Warren allows (100.64.0.0/10); ask its administrator to use a range inside them, or allow it in this machine's Warren policy",
        reason_code: 'deployment_refused',
      }),
    );
    const banner = page.getByTestId('deployment-refused');
    await banner.waitFor();
    assert.equal(await text(page, 'session-state'), "Failed — Warren refused the deployment's network");
    assert.equal(await banner.getAttribute('role'), 'alert');
    assert.match(await banner.innerText(), /^Warren refused this deployment\. The deployment asked to route 0\.0\.0\.0\/1, which is outside the ranges Warren allows \(100\.64\.0\.0\/10\); ask its administrator/);
    // Nothing that would only be refused again.
    assert.equal(await page.getByTestId('sign-in-again').count(), 0);
    assert.equal(await page.getByTestId('reconnect').count(), 0);
    assert.equal(await page.getByTestId('sign-in-required').count(), 0);
    await screenshot(page, 'deployment-refused.png');

    // Signing out asks first; Cancel keeps the account.
    await page.getByTestId('refused-sign-out').click();
    await page.getByTestId('refused-sign-out-box').getByText('Cancel').click();
    await page.getByTestId('refused-sign-out').waitFor();
    assert.equal((await calls(page, 'sign_out')).length, 0);
    await page.getByTestId('refused-sign-out').click();
    await page.getByTestId('refused-sign-out-confirm').click();
    await page.getByTestId('signin-url').waitFor();
    assert.equal(await page.getByTestId('signin-url').inputValue(), 'https://warren.example.com');
    assert.equal((await calls(page, 'sign_out')).length, 1);
    await done(page);
  });

  test('a changed deployment offers to sign in again to accept it', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() =>
      window.warrenMock.setSession('failed', {
        reason: 'the deployment changed its network from 100.64.0.0/16, fd7a:115c:a1e0::/48, suffix warren to 100.64.0.0/16, fd7a:115c:a1e0::/48, suffix corp; sign in again to accept',
        reason_code: 'deployment_changed',
      }),
    );
    const banner = page.getByTestId('sign-in-required');
    await banner.waitFor();
    assert.equal(await banner.getAttribute('data-reason'), 'deployment_changed');
    assert.equal(await text(page, 'session-state'), 'Failed — the deployment changed its network');
    assert.match(await banner.innerText(), /Sign in again to accept the new network\. The deployment changed its network from .* suffix corp; sign in again to accept\./);
    assert.equal(await page.getByTestId('deployment-refused').count(), 0);
    await page.getByTestId('sign-in-again').click();
    await page.getByTestId('signin-url').waitFor();
    assert.equal(await page.getByTestId('signin-url').inputValue(), 'https://warren.example.com');
    assert.equal((await calls(page, 'sign_out')).length, 1);
    await done(page);
  });

  test('helper trouble screens appear and go away by themselves', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() => window.warrenMock.setLink('missing'));
    const trouble = page.getByTestId('helper-trouble');
    await trouble.waitFor();
    assert.equal(await trouble.getAttribute('data-state'), 'missing');
    assert.match(await trouble.innerText(), /The Warren helper isn't running/);
    assert.match(await trouble.innerText(), /sudo systemctl start warrend/);
    assert.match(await trouble.innerText(), /\/run\/warren\/warrend\.sock/);
    assert.match(await text(page, 'helper-retry'), /^Looking again in [45] s…$/);
    await screenshot(page, 'helper-missing.png');

    await page.evaluate(() => window.warrenMock.setLink('not_permitted'));
    await until(async () => (await trouble.getAttribute('data-state')) === 'not_permitted', { what: 'not_permitted' });
    assert.match(await trouble.innerText(), /You're not allowed to use the Warren helper/);
    await screenshot(page, 'not-permitted.png');

    await page.evaluate(() => window.warrenMock.setLink('version_mismatch'));
    await until(async () => (await trouble.innerText()).includes("The app and the helper don't match"), { what: 'version_mismatch' });
    await page.evaluate(() => window.warrenMock.setLink('failed'));
    await until(async () => (await trouble.innerText()).includes("Can't talk to the Warren helper"), { what: 'failed' });

    await page.evaluate(() => window.warrenMock.setLink('connected'));
    await until(async () => (await trouble.count()) === 0, { what: 'trouble screen to go' });
    // Searching after the helper was found once keeps the window, with a banner.
    await page.evaluate(() => window.warrenMock.setLink('searching', { message: 'The Warren helper went away; looking for it again.' }));
    await page.getByTestId('helper-lost').waitFor();
    assert.match(await text(page, 'helper-lost'), /went away/);
    assert.equal(await page.getByTestId('connect-toggle').isDisabled(), true);
    await page.evaluate(() => window.warrenMock.setLink('connected'));
    await until(async () => (await page.getByTestId('helper-lost').count()) === 0, { what: 'banner to go' });
    await until(async () => (await page.getByTestId('agent-row').count()) === 7, { what: 'rows back' });
    await done(page);
  });

  test('settings are saved at once; a failure reverts; export and sign out', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('nav-settings').click();
    const auto = page.getByTestId('settings-autostart');
    await until(() => auto.isEnabled(), { what: 'settings loaded' });
    assert.equal(await auto.isChecked(), true);
    await screenshot(page, 'settings.png');

    await page.getByTestId('settings-minimized').click();
    await until(async () => (await calls(page, 'set_settings')).length === 1, { what: 'set_settings' });
    assert.deepEqual((await calls(page, 'set_settings'))[0], { settings: { start_on_login: true, start_minimized: true, log_level: 'info' } });
    await until(() => page.getByTestId('settings-minimized').isChecked(), { what: 'minimized on' });

    await page.getByTestId('settings-log-level').selectOption('debug');
    await until(async () => (await calls(page, 'set_settings')).length === 2, { what: 'log level saved' });
    assert.equal((await calls(page, 'set_settings'))[1].settings.log_level, 'debug');

    await page.evaluate(() => window.warrenMock.failCommand('set_settings', 'io', 'Could not save settings: the disk is full.'));
    await until(() => auto.isEnabled(), { what: 'enabled again' });
    await auto.click();
    await page.getByTestId('settings-error').waitFor();
    assert.match(await text(page, 'settings-error'), /disk is full/);
    await until(async () => (await auto.isChecked()) === true, { what: 'reverted' });
    await page.evaluate(() => window.warrenMock.failCommand('set_settings', null));

    await page.getByTestId('export-logs').click();
    await page.getByTestId('export-result').waitFor();
    assert.equal(await text(page, 'export-result'), 'Saved to /home/alice/Downloads/warren-logs-2026-11-23.zip');

    await page.getByTestId('sign-out').click();
    await page.getByTestId('sign-out-confirm').click();
    await page.getByTestId('signin-url').waitFor();
    assert.equal((await calls(page, 'sign_out')).length, 1);
    await done(page);
  });

  test('about shows the versions', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('nav-about').click();
    await until(async () => (await text(page, 'about-app-version')) === '0.4.2', { what: 'app version' });
    assert.equal(await text(page, 'about-helper-version'), '0.4.2');
    assert.equal(await text(page, 'about-protocol'), 'warren-ipc 1.0');
    await screenshot(page, 'about.png');
    await done(page);
  });

  test('logs keep the helper log lines, level-coloured', async () => {
    const page = await open('seed=demo&session=connected');
    await page.getByTestId('agent-row').first().waitFor();
    await page.evaluate(() => {
      const t = Date.now() - 60_000;
      const lines = [
        ['INFO', 'warrend::engine', 'session connected to https://warren.example.com as alice'],
        ['INFO', 'warrend::tunnel_driver', 'TUN warren0 up: 100.64.0.2/32, fd7a:115c:a1e0::2/128, MTU 1280'],
        ['DEBUG', 'warren_control::client', 'workspace update seq 41: 1 upserted, 0 deleted'],
        ['INFO', 'warrend::observe', 'handshake with main.api.alice.warren (rtt 0.5 ms)'],
        ['WARN', 'warrend::observe', 'no handshake with gpu-worker.api.alice.warren for 250 s'],
        ['INFO', 'warren_dns::stub', 'answering *.warren on 100.64.0.53'],
        ['ERROR', 'warrend::datapath', 'send to 203.0.113.10:51820 failed: network is unreachable'],
        ['TRACE', 'warren_tunnel::peer', 'keepalive to trainer.ml-training.alice.warren'],
        ['INFO', 'warrend::engine', 'agent trainer.ml-training.alice.warren went offline'],
      ];
      lines.forEach(([level, target, message], i) => window.warrenMock.log(level, target, message, t + i * 3100));
    });
    await page.getByTestId('nav-logs').click();
    await until(async () => (await page.getByTestId('log-line').count()) === 9, { what: '9 lines' });
    await screenshot(page, 'logs.png');
    // The ring keeps the last 1,000.
    await page.evaluate(() => { for (let i = 0; i < 1200; i++) window.warrenMock.log('INFO', 't', `line ${i}`); });
    await until(async () => (await page.getByTestId('log-line').count()) === 1000, { what: '1000 lines' });
    assert.equal(await page.getByTestId('log-line').last().locator('.log-msg').innerText(), 'line 1199');
    await done(page);
  });

  test('empty states: no workspaces yet, and disconnected', async () => {
    const page = await open('seed=none&session=connected');
    await page.getByTestId('empty-state').waitFor();
    assert.match(await text(page, 'empty-state'), /No workspaces yet/);
    assert.match(await text(page, 'empty-state'), /appear here within a second/);
    await screenshot(page, 'empty.png');
    // A workspace created on the coordinator shows up as a diff.
    await page.evaluate(() => window.warrenMock.stream({ event: 'peer_update', upserted_workspaces: [{ id: 'w9', name: 'new-one', owner: 'alice' }], upserted_agents: [], deleted_workspaces: [], deleted_agents: [] }));
    await page.getByTestId('workspace').waitFor();
    assert.equal(await page.getByTestId('empty-state').count(), 0);
    await page.evaluate(() => window.warrenMock.setSession('disconnected'));
    await page.getByTestId('disconnected-note').waitFor();
    assert.match(await page.getByTestId('workspace-list').getAttribute('class'), /dimmed/);
    await done(page);
  });
});
