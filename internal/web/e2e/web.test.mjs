// End-to-end tests of the web app in headless Chromium against a real runvoyd.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { api, launchBrowser, screenshot, startServer, until } from './harness.mjs';

const RUN_300 = `echo "FOO=$FOO"; for i in $(seq 1 300); do echo "line $i"; printf '\\033[31mred %s\\033[0m\\n' $i >&2; sleep 0.02; done`;
const ESC = '\u001b';

let server;
// Where the app is loaded from: the server itself unless RUNVOY_E2E_APP_URL names another origin
// serving the same assets (the app then talks to the server cross-origin).
let appUrl;
let browser;
let page;

const lines = () => page.evaluate(() => window.__runvoy.lines());
const renderedRows = () => page.evaluate(() => window.__runvoy.renderedRows());
const connState = () => page.locator('.conn').getAttribute('class');

async function signIn(key = server.key) {
  await page.goto(`${appUrl}/`);
  await page.fill('#server', server.url);
  await page.fill('#apikey', key);
  await page.click('form.signin button[type=submit]');
}

/** Numbers captured by `re` in the lines, in order. */
function numbers(all, re) {
  const out = [];
  for (const l of all) {
    const m = l.match(re);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

async function waitComplete(timeout = 120000) {
  try {
    await until(async () => (await connState()).includes('done'), { timeout, what: 'logs complete' });
  } catch (err) {
    const state = await page.evaluate(() => ({
      url: location.href,
      conn: document.querySelector('.conn') && document.querySelector('.conn').className,
      detail: document.querySelector('.conn') && document.querySelector('.conn').title,
      lines: window.__runvoy.lineCount(),
      lastSeq: window.__runvoy.lastSeq(),
      errors: [...document.querySelectorAll('.error')].map((e) => e.textContent),
    })).catch((e) => String(e));
    err.message += ` ${JSON.stringify(state)}`;
    throw err;
  }
}

describe('runvoy web app', () => {
  before(async () => {
    server = await startServer();
    appUrl = (process.env.RUNVOY_E2E_APP_URL || server.url).replace(/\/+$/, '');
    browser = await launchBrowser();
    page = browser.context.pages()[0] || (await browser.context.newPage());
    page.on('pageerror', (e) => console.error('page error:', e));
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  test('the server serves the app shell and assets', async () => {
    for (const p of ['/', '/executions/0123456789abcdef0123456789abcdef']) {
      const r = await fetch(`${server.url}${p}`);
      assert.equal(r.status, 200, p);
      assert.match(r.headers.get('content-type'), /^text\/html/);
    }
    const r = await fetch(`${server.url}/assets/app.js`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /javascript/);
  });

  test('a wrong API key is refused with a clear error', async () => {
    await signIn('not-a-key');
    const err = page.locator('.error');
    await err.waitFor();
    assert.match(await err.textContent(), /401/);
    await screenshot(page, '01-signin-error');
  });

  test('sign in, run through the form, live logs survive a reload', async () => {
    await signIn();
    await page.locator('h1', { hasText: 'Executions' }).waitFor();
    await screenshot(page, '02-executions-empty');

    await page.click('button:has-text("New run")');
    await page.fill('#run-command', RUN_300);
    await page.fill('#run-env', 'FOO=bar\n# comment\n');
    await page.fill('#run-timeout', '300');
    await page.click('dialog.run button[type=submit]');
    await page.waitForURL(/\/executions\/[0-9a-f]+$/);
    const execUrl = page.url();

    // Lines arrive while the command runs.
    const first = await until(async () => {
      const n = numbers(await lines(), /^line (\d+)$/);
      return n.length >= 10 && n.length < 250 ? n.length : 0;
    }, { timeout: 60000, what: 'the first live lines' });
    await until(async () => numbers(await lines(), /^line (\d+)$/).length > first, { what: 'more live lines' });
    assert.doesNotMatch(await connState(), /done/, 'still running before the reload');
    await screenshot(page, '03-live-logs');

    // Reload in the middle: the backlog is re-read, then the stream resumes.
    await page.reload();
    assert.equal(page.url(), execUrl);

    // Drop the live socket mid-stream: it reconnects and resumes after the last record.
    await until(async () => (await connState()).includes('live'), { what: 'live again after reload' });
    const before = numbers(await lines(), /^line (\d+)$/).length;
    if (before < 300) {
      assert.ok(await page.evaluate(() => window.__runvoy.dropConnection()));
      await until(async () => numbers(await lines(), /^line (\d+)$/).length > before || (await connState()).includes('done'),
        { what: 'lines after reconnecting' });
    }
    await waitComplete();
    await page.locator('.badge.st-succeeded').waitFor();
    assert.equal((await page.locator('.exit').textContent()).trim(), 'exit 0');

    const all = await lines();
    assert.ok(all.includes('FOO=bar'), 'environment from the form reaches the command');
    assert.deepEqual(numbers(all, /^line (\d+)$/), range(1, 300), 'stdout lines 1..300 exactly once, in order');
    assert.deepEqual(numbers(all, new RegExp(`^${ESC}\\[31mred (\\d+)${ESC}\\[0m$`)), range(1, 300),
      'stderr lines 1..300 exactly once, in order');
    await screenshot(page, '04-complete');
  });

  test('ANSI red is rendered as a coloured span, stderr is marked', async () => {
    await page.keyboard.press('g');
    const red = page.locator('.row.s-stderr .msg span.a-f1').first();
    await red.waitFor();
    assert.match(await red.textContent(), /^red \d+$/);
    const color = await red.evaluate((el) => getComputedStyle(el).color);
    const [r, g, b] = color.match(/\d+/g).map(Number);
    assert.ok(r > 150 && r > g + 50 && r > b + 50, `red-ish colour, got ${color}`);
    // No escape character reaches the DOM.
    const text = await page.locator('.log-rows').textContent();
    assert.ok(!text.includes(ESC));
  });

  test('search highlights matches and steps with Enter / Shift+Enter', async () => {
    await page.keyboard.press('/');
    assert.equal(await page.evaluate(() => document.activeElement.className), 'search');
    await page.keyboard.type('line 25');
    // "line 25" and "line 250".."line 259".
    await until(async () => (await page.locator('.counter').textContent()) === '1 / 11', { what: 'match count' });
    const cur = page.locator('mark.hl.cur');
    assert.equal(await cur.textContent(), 'line 25');
    assert.equal(await cur.evaluate((el) => el.closest('.row').querySelector('.msg').textContent), 'line 25');
    await page.keyboard.press('Enter');
    assert.equal(await page.locator('.counter').textContent(), '2 / 11');
    assert.equal(await page.locator('mark.hl.cur').evaluate((el) => el.closest('.row').querySelector('.msg').textContent), 'line 250');
    await page.keyboard.press('Enter');
    assert.equal(await page.locator('.counter').textContent(), '3 / 11');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.press('Shift+Enter');
    assert.equal(await page.locator('.counter').textContent(), '1 / 11');
    await page.keyboard.press('Shift+Enter');
    assert.equal(await page.locator('.counter').textContent(), '11 / 11', 'wraps around');
    assert.ok((await page.locator('mark.hl').count()) >= 2);
    await screenshot(page, '05-search');
    await page.keyboard.press('Escape');
    await until(async () => (await page.locator('mark.hl').count()) === 0, { what: 'highlights cleared' });
  });

  test('download gives plain text; Raw gives the exact text of the lines', async () => {
    const save = async (button) => {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.click(`button:text-is("${button}")`),
      ]);
      return fs.readFileSync(await download.path(), 'utf8');
    };
    const all = await lines();
    const raw = await save('Raw');
    assert.equal(raw, `${all.join('\n')}\n`);
    assert.ok(raw.includes(`${ESC}[31mred 300${ESC}[0m\n`));
    const plain = await save('Download');
    assert.ok(!plain.includes(ESC), 'no ANSI codes in the plain download');
    assert.ok(plain.includes('\nred 300\n') && plain.includes('line 300\n'));
    assert.equal(plain.split('\n').length, raw.split('\n').length);
  });

  test('toggles: line numbers, timestamps, wrap, theme', async () => {
    await page.locator('.log-scroll').focus();
    const lnVisible = () => page.locator('.row .ln').first().isVisible();
    const before = await lnVisible();
    await page.keyboard.press('l');
    assert.equal(await lnVisible(), !before);
    await page.keyboard.press('l');
    await page.keyboard.press('t');
    assert.ok(await page.locator('.row .ts').first().isVisible());
    assert.match(await page.locator('.row .ts').first().textContent(), /^\d\d:\d\d:\d\d\.\d{3}$/);
    await page.keyboard.press('w');
    assert.ok(await page.locator('.logview.wrap').count());
    assert.ok((await renderedRows()) < 500);
    await page.click('button[aria-label="Toggle theme"]');
    await screenshot(page, '06-toggles-theme');
    await page.click('button[aria-label="Toggle theme"]');
    await page.keyboard.press('w');
    await page.keyboard.press('t');
  });

  test('the list shows runs, filters by status and links to the execution', async () => {
    const res = await api(server, 'POST', '/run', { command: 'echo "FOO=$FOO"' });
    await page.goto(`${appUrl}/`);
    const row = page.locator(`tr[data-id="${res.execution_id}"]`);
    await row.waitFor();
    await until(async () => (await row.locator('.badge').textContent()) === 'SUCCEEDED', { timeout: 60000, what: 'list refresh' });
    await page.selectOption('#status-filter', 'FAILED');
    await until(async () => (await row.count()) === 0, { what: 'filter' });
    await page.selectOption('#status-filter', '');
    await row.waitFor();
    await screenshot(page, '07-executions');
    await row.locator('td.cmd a').click();
    await page.waitForURL(`**/executions/${res.execution_id}`);
    await waitComplete();
    assert.ok((await lines()).includes('FOO='));
  });

  test('kill stops a running execution', async () => {
    const res = await api(server, 'POST', '/run', { command: 'echo started; sleep 120' });
    await page.goto(`${appUrl}/executions/${res.execution_id}`);
    await until(async () => (await lines()).includes('started'), { timeout: 60000, what: 'first line' });
    const kill = page.locator('button:has-text("Kill")');
    await kill.waitFor();
    // Kill asks first: dismissing changes nothing.
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
    await kill.click();
    await until(async () => asked.includes(res.execution_id), { what: 'confirmation' });
    assert.ok(asked.includes('sleep 120'), asked);
    await page.waitForTimeout(500);
    assert.equal((await api(server, 'GET', `/executions/${res.execution_id}`)).status, 'RUNNING');
    page.once('dialog', (d) => d.accept());
    await kill.click();
    await waitComplete(60000);
    await until(async () => (await page.locator('.badge').first().textContent()) === 'STOPPED', { timeout: 30000, what: 'STOPPED' });
    const meta = await page.locator('dl.meta').textContent();
    assert.match(meta, /Stopped by\s*admin@localhost/);
    await screenshot(page, '08-killed');
    // The server records who stopped it: a fresh page (no memory of the click) shows it too.
    assert.equal((await api(server, 'GET', `/executions/${res.execution_id}`)).stopped_by, 'admin@localhost');
    await page.reload();
    await until(async () => /Stopped by\s*admin@localhost/.test(await page.locator('dl.meta').textContent()),
      { timeout: 30000, what: 'stopped by after reload' });
  });

  test('the run form takes durations like the CLI and shows the parsed value', async () => {
    await page.goto(`${appUrl}/`);
    await page.click('button.run-action:visible');
    const hint = page.locator('#run-timeout-hint');
    for (const [typed, shown] of [['1m', '(60 s)'], ['1h30m', '(5400 s)'], ['90', '(90 s)'], ['ten', 'use e.g.']]) {
      await page.fill('#run-timeout', typed);
      assert.ok((await hint.textContent()).includes(shown), `${typed}: ${await hint.textContent()}`);
    }
    await page.fill('#run-command', 'echo timed');
    await page.fill('#run-timeout', '1m');
    await screenshot(page, '20-run-timeout');
    await page.click('dialog.run button[type=submit]');
    await page.waitForURL('**/executions/*');
    const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
    const ex = await api(server, 'GET', `/executions/${id}`);
    assert.equal(ex.timeout_seconds, 60, '1m is 60 seconds, never 1');
    await waitComplete();
  });

  test('an unknown execution id shows a not-found page', async () => {
    await page.goto(`${appUrl}/executions/0123456789abcdef0123456789abcdef`);
    await page.locator('h1', { hasText: 'Execution not found' }).waitFor();
    assert.equal(await page.locator('.loghost').count(), 0, 'no empty log viewer');
    await screenshot(page, '25-not-found');
  });

  test('the header shows who is signed in and their role', async () => {
    await page.goto(`${appUrl}/`);
    await until(async () => (await page.locator('.whoami').textContent()).includes('admin@localhost'), { what: 'whoami' });
    assert.equal(await page.locator('.whoami .role').textContent(), 'admin');
  });

  test('the "cannot reach" banner clears when the connection comes back', async () => {
    const res = await api(server, 'POST', '/run', { command: 'echo up; sleep 60' });
    await page.goto(`${appUrl}/executions/${res.execution_id}`);
    await until(async () => (await lines()).includes('up'), { timeout: 60000, what: 'first line' });
    const block = (route) => route.abort('connectionrefused');
    await page.route('**/api/v1/executions/**', block);
    await page.evaluate(() => window.__runvoy.dropConnection());
    await until(async () => (await page.locator('.error').count()) > 0, { timeout: 20000, what: 'banner' });
    assert.match(await page.locator('.error').first().textContent(), /Cannot reach/);
    await page.unroute('**/api/v1/executions/**', block);
    await until(async () => (await page.locator('.error').count()) === 0, { timeout: 30000, what: 'banner cleared' });
    await until(async () => (await connState()).includes('live'), { timeout: 30000, what: 'live again' });
    await api(server, 'DELETE', `/executions/${res.execution_id}`);
  });

  test('phone width: no horizontal scroll, the header and run dialog fit', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      await page.goto(`${appUrl}/`);
      const row = page.locator('tbody tr[data-id]').first();
      await row.waitFor();
      assert.ok((await overflow()) <= 0, `list overflows by ${await overflow()}px`);
      for (const cell of ['.badge', 'td.cmd', 'td.started .rel']) {
        const el = row.locator(cell).first();
        assert.ok(await el.isVisible(), `${cell} visible at 390 px`);
        const b = await el.boundingBox();
        assert.ok(b.x >= 0 && b.x + b.width <= 390, `${cell} inside the screen: ${JSON.stringify(b)}`);
      }
      assert.match(await row.locator('td.started .rel').textContent(), /^\d+[smhd] ago$/);
      const who = page.locator('.whoami');
      const wb = await who.boundingBox();
      assert.ok(wb.x + wb.width <= 390, `user and role fit: ${JSON.stringify(wb)}`);
      assert.ok(await who.evaluate((el) => el.scrollWidth <= el.clientWidth), 'user and role not cut');
      await screenshot(page, '21-phone-list');
      await page.click('button.run-action:visible');
      const box = await page.locator('dialog.run').boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= 390, `dialog ${JSON.stringify(box)}`);
      assert.ok((await overflow()) <= 0);
      await screenshot(page, '22-phone-run');
      await page.keyboard.press('Escape');
      await row.locator('td.cmd a').click();
      await page.locator('.loghost').waitFor();
      assert.ok((await overflow()) <= 0, `execution page overflows by ${await overflow()}px`);
      await screenshot(page, '23-phone-execution');
    } finally {
      await page.setViewportSize({ width: 1366, height: 800 });
    }
    await page.goto(`${appUrl}/`);
    await screenshot(page, '24-desktop-list');
  });

  test('the key stays in sessionStorage unless "remember me", never in a URL', async () => {
    const stored = () => page.evaluate(() => ({
      session: sessionStorage.getItem('runvoy.session'),
      local: localStorage.getItem('runvoy.session'),
    }));
    await page.goto(`${appUrl}/`);
    await page.click('button:has-text("Sign out")');
    await page.locator('#apikey').waitFor();
    assert.deepEqual(await stored(), { session: null, local: null }, 'signing out forgets the key');
    await page.fill('#server', server.url);
    await page.fill('#apikey', server.key);
    await page.check('#remember');
    await page.click('form.signin button[type=submit]');
    await page.locator('h1', { hasText: 'Executions' }).waitFor();
    let st = await stored();
    assert.equal(st.session, null);
    assert.ok(st.local && st.local.includes(server.key), 'remembered in localStorage');
    await page.click('button:has-text("Sign out")');
    await signIn();
    await page.locator('h1', { hasText: 'Executions' }).waitFor();
    st = await stored();
    assert.equal(st.local, null, 'not remembered');
    assert.ok(st.session && st.session.includes(server.key), 'kept for this tab only');
    assert.ok(!page.url().includes(server.key));
  });

  test('viewers get no kill button and no run form; owners do', async () => {
    // A user who runs as a developer, then is made a viewer (viewers cannot start runs).
    const email = `viewer${Date.now()}@example.com`;
    const created = await api(server, 'POST', '/users/create', { email, role: 'developer' });
    const claimed = await (await fetch(`${server.url}/api/v1/claim/${created.claim_token}`, { method: 'POST' })).json();
    const key = claimed.api_key;
    const runAs = async (k, body) => {
      const r = await fetch(`${server.url}/api/v1/run`, {
        method: 'POST',
        headers: { 'X-API-Key': k, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(r.status, 202);
      return r.json();
    };
    const own = await runAs(key, { command: 'echo started; sleep 120' });

    // As the developer who owns it: the kill button is there.
    await page.goto(`${appUrl}/`);
    await page.click('button:has-text("Sign out")');
    await signIn(key);
    await page.locator('h1', { hasText: 'Executions' }).waitFor();
    await page.goto(`${appUrl}/executions/${own.execution_id}`);
    await until(async () => (await lines()).includes('started'), { timeout: 60000, what: 'first line' });
    await page.locator('button:has-text("Kill")').waitFor();
    assert.ok(await page.locator('button.run-action:visible').count() > 0, 'developers may run');

    await api(server, 'POST', '/users/set-role', { email, role: 'viewer' });
    await page.reload();
    await until(async () => (await lines()).includes('started'), { timeout: 60000, what: 'first line' });
    await until(async () => (await page.locator('button.run-action:visible').count()) === 0, { what: 'no New run for a viewer' });
    assert.equal(await page.locator('.badge').first().textContent(), 'RUNNING');
    assert.equal(await page.locator('button:has-text("Kill"):visible').count(), 0, 'no kill button for a viewer');
    await page.keyboard.press('c');
    assert.equal(await page.locator('dialog.run').count(), 0, 'no run form for a viewer');
    await screenshot(page, '09-viewer');

    await api(server, 'DELETE', `/executions/${own.execution_id}`);
    await page.click('button:has-text("Sign out")');
    await page.locator('#apikey').waitFor();

    // A viewer with nothing to see is not told to start a run.
    const vEmail = `emptyviewer${Date.now()}@example.com`;
    const v = await api(server, 'POST', '/users/create', { email: vEmail, role: 'viewer' });
    const vKey = (await (await fetch(`${server.url}/api/v1/claim/${v.claim_token}`, { method: 'POST' })).json()).api_key;
    assert.ok(vKey, 'the viewer got a key');
    await signIn(vKey);
    await until(async () => (await page.locator('.whoami').textContent()).includes(vEmail), { what: 'signed in as the viewer' });
    const empty = page.locator('td.empty');
    await empty.waitFor();
    await page.waitForTimeout(500);
    assert.equal(await empty.textContent(), 'No executions yet.');
    await page.click('button:has-text("Sign out")');

    await signIn();
    await page.locator('h1', { hasText: 'Executions' }).waitFor();
  });

  test('a 200,000-line log stays virtualised', async () => {
    const res = await api(server, 'POST', '/run', { command: 'seq 1 200000' });
    // Live streaming is covered above; here the log is read back from the store once complete.
    await until(async () => (await api(server, 'GET', `/executions/${res.execution_id}`)).logs_complete,
      { timeout: 300000, interval: 500, what: 'the 200,000-line execution to finish' });
    await page.goto(`${appUrl}/executions/${res.execution_id}`);
    await waitComplete(300000);
    const all = await lines();
    assert.deepEqual(numbers(all, /^(\d+)$/), range(1, 200000));
    assert.ok((await renderedRows()) < 500, 'only rows near the viewport are in the DOM');

    const lastRowText = () => page.evaluate(() => {
      const rows = document.querySelectorAll('.log-rows .row .msg');
      return rows[rows.length - 1].textContent;
    });
    // Following: the bottom is shown.
    assert.equal(await lastRowText(), '200000');
    assert.equal(await page.locator('button[title^="Follow"]').getAttribute('aria-pressed'), 'true');
    // Scrolling up pauses following; G resumes it.
    await page.locator('.log-scroll').hover();
    await page.mouse.wheel(0, -2000);
    await until(async () => (await page.locator('button[title^="Follow"]').getAttribute('aria-pressed')) === 'false',
      { what: 'follow paused by scrolling up' });
    await page.locator('.log-scroll').focus();
    await page.keyboard.press('G');
    assert.equal(await page.locator('button[title^="Follow"]').getAttribute('aria-pressed'), 'true');

    await page.locator('.log-scroll').focus();
    await page.keyboard.press('g');
    assert.equal(await page.locator('.log-rows .row .msg').first().textContent(), all[0]);
    assert.ok((await renderedRows()) < 500);

    // Jump around with the scrollbar.
    for (const frac of [0.25, 0.5, 0.9]) {
      await page.evaluate((f) => {
        const s = document.querySelector('.log-scroll');
        s.scrollTop = (s.scrollHeight - s.clientHeight) * f;
      }, frac);
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      const shown = await page.evaluate(() => [...document.querySelectorAll('.log-rows .row .msg')].map((e) => e.textContent));
      assert.ok(shown.length > 0 && shown.length < 500, `rows in DOM: ${shown.length}`);
      const mid = Number(shown[Math.floor(shown.length / 2)]);
      assert.ok(Math.abs(mid - 200000 * frac) < 2000, `around ${frac}: ${mid}`);
    }
    await screenshot(page, '10-200k-middle');

    // Search a rare term in the big log.
    await page.keyboard.press('/');
    await page.keyboard.type('199999');
    await until(async () => (await page.locator('.counter').textContent()) === '1 / 1', { what: 'big-log search' });
    assert.equal(await page.locator('mark.hl.cur').textContent(), '199999');
    assert.ok((await renderedRows()) < 500);
    await page.keyboard.press('Escape');

    await page.keyboard.press('G');
    assert.equal(await lastRowText(), '200000');
    // Wrapping keeps a bounded window too.
    await page.keyboard.press('w');
    assert.ok((await renderedRows()) < 500);
    await page.keyboard.press('g');
    assert.ok((await renderedRows()) < 500);
    assert.equal(await page.locator('.log-rows .row .msg').first().textContent(), all[0]);
    await page.keyboard.press('w');
    await screenshot(page, '11-200k');
  });

  test('the app works against another runvoyd given at sign-in (cross-origin)', async () => {
    const other = await startServer();
    try {
      await page.goto(`${appUrl}/`);
      await page.click('button:has-text("Sign out")');
      await page.fill('#server', other.url);
      await page.fill('#apikey', other.key);
      await page.click('form.signin button[type=submit]');
      await page.locator('h1', { hasText: 'Executions' }).waitFor();
      assert.equal(await page.locator('.server').textContent(), other.url);
      const res = await api(other, 'POST', '/run', { command: 'echo from-the-other-server' });
      await page.goto(`${appUrl}/executions/${res.execution_id}`);
      await waitComplete(60000);
      assert.ok((await lines()).includes('from-the-other-server'));
      await screenshot(page, '12-cross-origin');
      await page.click('button:has-text("Sign out")');
      await page.locator('#apikey').waitFor();
    } finally {
      await other.stop();
    }
  });
});
