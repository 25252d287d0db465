// The runvoy web app: sign-in, executions list, run form and execution (log) view, with
// client-side routing on the History API.

import {
  ApiError, Client, STATUSES, TERMINAL, clearSession, loadSession, normaliseBaseUrl, saveSession,
} from './api.js';
import { LogView } from './logview.js';
import { LogStream, State } from './stream.js';

// ---- small DOM helpers ------------------------------------------------------------------------

/** Creates an element: `h('a.link', {href}, 'text', child)`; strings become text nodes. */
function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const pad = (n) => String(n).padStart(2, '0');

function fmtDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `12s ago`, `5m ago`, `3h ago`, `2d ago`: the age of an ISO time. */
function fmtAgo(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function fmtDuration(sec) {
  if (sec === null || sec === undefined || Number.isNaN(sec)) return '';
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 1 : 0)}s`;
  const s = Math.floor(sec);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

function durationOf(ex) {
  if (ex.duration_seconds !== undefined && ex.duration_seconds !== null) return ex.duration_seconds;
  const start = Date.parse(ex.started_at);
  if (Number.isNaN(start)) return null;
  const end = ex.completed_at ? Date.parse(ex.completed_at) : Date.now();
  return Math.max(0, (end - start) / 1000);
}

function statusBadge(status) {
  return h(`span.badge.st-${String(status || '').toLowerCase()}`, status || '…');
}

/** A clear rendering of an API error (summary, code, details). */
function errorBox(err, { onClose } = {}) {
  const isApi = err instanceof ApiError;
  return h('div.error', { role: 'alert' },
    h('strong', isApi ? err.message : String((err && err.message) || err)),
    isApi ? h('code.code', err.status ? `${err.status} ${err.code}` : err.code) : null,
    isApi && err.details ? h('div.details', err.details) : null,
    onClose ? h('button.ghost.close', { type: 'button', 'aria-label': 'Dismiss', onclick: onClose }, '×') : null);
}

function isTyping(ev) {
  const t = ev.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
}

// ---- preferences and theme --------------------------------------------------------------------

const PREFS_KEY = 'runvoy.prefs';
const prefs = Object.assign({ lineNumbers: true, timestamps: false, wrap: false }, (() => {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY)) || {};
  } catch {
    return {};
  }
})());

function savePrefs() {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    // Storage may be disabled.
  }
}

function effectiveTheme() {
  if (prefs.theme === 'dark' || prefs.theme === 'light') return prefs.theme;
  return matchMedia('(prefers-color-scheme: light)').matches ? 'light' : 'dark';
}

function applyTheme() {
  if (prefs.theme) document.documentElement.dataset.theme = prefs.theme;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  prefs.theme = effectiveTheme() === 'dark' ? 'light' : 'dark';
  savePrefs();
  applyTheme();
}

// ---- application shell ------------------------------------------------------------------------

const app = {
  session: loadSession(),
  client: null,
  /** Teardown of the current view (timers, sockets, key handlers). */
  cleanup: [],
  logView: null,
  root: document.getElementById('app'),
};
if (app.session) app.client = new Client(app.session.baseUrl, app.session.apiKey);

/**
 * The signed-in user (`{email, role}`), fetched once per sign-in; null when the server cannot say
 * (an older runvoyd without `GET /users/me`), in which case every action is offered and the
 * server's 403 is the answer.
 */
function whoami() {
  if (!app.client) return Promise.resolve(null);
  if (!app.mePromise) {
    app.mePromise = app.client.me().catch((err) => {
      if (err instanceof ApiError && err.status === 401) throw err;
      app.mePromise = null; // try again next time
      return null;
    });
  }
  return app.mePromise;
}

/** Whether `me` may start runs (viewers only read). */
function mayRun(me) {
  return !me || me.role !== 'viewer';
}

/** Whether `me` may kill `ex`: admins and operators any, developers their own, viewers none. */
function mayKill(me, ex) {
  if (!me) return true;
  if (me.role === 'admin' || me.role === 'operator') return true;
  if (me.role !== 'developer' || !ex) return false;
  return ex.created_by === me.email || (ex.owned_by || []).includes(me.email);
}

/** Hides the "New run" buttons from users who may not run. */
function applyRunPermission() {
  whoami().then((me) => {
    for (const b of document.querySelectorAll('.run-action')) b.hidden = !mayRun(me);
    for (const el of document.querySelectorAll('.whoami')) {
      el.replaceChildren(...(me ? [h('span.email', me.email), ' ', h('span.role', me.role)] : []));
    }
  }, () => {});
}

/** Debug hook used by tests and for troubleshooting: read-only views of the app's state. */
window.__runvoy = Object.freeze({
  lines: () => (app.logView ? app.logView.lines() : []),
  lineCount: () => (app.logView ? app.logView.model.length : 0),
  renderedRows: () => document.querySelectorAll('.log-rows .row').length,
  lastSeq: () => (app.stream ? app.stream.lastSeq : 0),
  /** Closes the live socket as a network failure would; the stream reconnects by itself. */
  dropConnection: () => {
    const ws = app.stream && app.stream.ws;
    if (ws) ws.close(4000, 'dropped');
    return !!ws;
  },
});

function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

/** Link that navigates without reloading (middle-click still opens a new tab). */
function link(href, attrs, ...children) {
  return h('a', {
    href,
    ...attrs,
    onclick: (ev) => {
      if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      navigate(href);
    },
  }, ...children);
}

function onKey(handler) {
  document.addEventListener('keydown', handler);
  app.cleanup.push(() => document.removeEventListener('keydown', handler));
}

function teardown() {
  for (const fn of app.cleanup.splice(0)) {
    try {
      fn();
    } catch (e) {
      console.error(e);
    }
  }
  app.logView = null;
  app.stream = null;
}

function signOut() {
  clearSession();
  app.session = null;
  app.client = null;
  app.mePromise = null;
  navigate('/', { replace: true });
}

function topbar() {
  const s = app.session;
  return h('header.topbar',
    link('/', { class: 'brand' }, h('span.logo', '▸'), 'runvoy'),
    s ? h('nav', link('/', {}, 'Executions'),
      h('button.ghost.run-action', { type: 'button', onclick: openRunDialog, title: 'New run (c)' }, 'New run')) : null,
    h('div.spacer'),
    s ? h('span.server', { title: 'Server' }, s.baseUrl) : null,
    s ? h('span.whoami', { title: 'Signed in as' }) : null,
    h('button.ghost.icon', {
      type: 'button', title: 'Toggle dark/light theme', 'aria-label': 'Toggle theme', onclick: toggleTheme,
    }, '◐'),
    s ? h('button.ghost', { type: 'button', onclick: signOut }, 'Sign out') : null);
}

function route() {
  teardown();
  const path = location.pathname;
  const main = h('main');
  app.root.replaceChildren(topbar(), main);
  if (!app.session) {
    signInView(main);
    return;
  }
  const m = path.match(/^\/executions\/([^/]+)\/?$/);
  if (m) executionView(main, decodeURIComponent(m[1]));
  else listView(main);
  applyRunPermission();
}

// ---- sign in ------------------------------------------------------------------------------------

function signInView(main) {
  const server = h('input', { id: 'server', name: 'server', type: 'text', inputmode: 'url', value: location.origin, required: true, autocomplete: 'url', spellcheck: false });
  const key = h('input', { id: 'apikey', name: 'apikey', type: 'password', required: true, autocomplete: 'current-password', placeholder: 'rv_…' });
  const remember = h('input', { id: 'remember', name: 'remember', type: 'checkbox' });
  const errors = h('div');
  const button = h('button.primary', { type: 'submit' }, 'Sign in');
  const form = h('form.card.signin', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      errors.replaceChildren();
      button.disabled = true;
      try {
        const baseUrl = normaliseBaseUrl(server.value);
        const client = new Client(baseUrl, key.value.trim());
        await client.listExecutions({ limit: 1 });
        saveSession({ baseUrl, apiKey: client.apiKey, remember: remember.checked });
        app.session = loadSession();
        app.client = client;
        app.mePromise = null;
        route();
      } catch (err) {
        errors.replaceChildren(errorBox(err));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', 'Sign in'),
  h('p.muted', 'Use your runvoy API key. The key stays in this browser and is sent only to the server below.'),
  h('label', { for: 'server' }, 'Server URL'), server,
  h('label', { for: 'apikey' }, 'API key'), key,
  h('label.check', remember, ' Remember me on this device'),
  errors,
  button);
  main.append(form);
  key.focus();
}

// ---- executions list --------------------------------------------------------------------------

function listView(main) {
  document.title = 'Executions · runvoy';
  let limit = 50;
  let timer = 0;
  let inflight = null;
  const filter = h('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    h('option', { value: '' }, 'All statuses'),
    h('option', { value: 'STARTING,RUNNING,TERMINATING' }, 'Active'),
    STATUSES.map((s) => h('option', { value: s }, s)));
  filter.value = sessionStorage.getItem('runvoy.filter') || '';
  const updated = h('span.muted.small');
  const errors = h('div');
  const body = h('tbody');
  const more = h('button.ghost', { type: 'button', hidden: true, onclick: () => { limit = Math.min(1000, limit + 50); load(); } }, 'Show more');
  const table = h('table.executions',
    h('thead', h('tr', ['Status', 'Command', 'User', 'Image', 'Started', 'Duration', 'Exit'].map((c) => h('th', c)))),
    body);
  main.append(
    h('div.listhead',
      h('h1', 'Executions'),
      h('div.spacer'),
      filter,
      h('button.primary.run-action', { type: 'button', onclick: openRunDialog, title: 'New run (c)' }, 'New run')),
    errors,
    h('div.tablewrap', table),
    h('div.listfoot', more, updated));

  filter.addEventListener('change', () => {
    sessionStorage.setItem('runvoy.filter', filter.value);
    load();
  });

  async function load() {
    clearTimeout(timer);
    if (inflight) inflight.abort = true;
    const me = { abort: false };
    inflight = me;
    try {
      const list = await app.client.listExecutions({ limit, status: filter.value });
      if (me.abort) return;
      errors.replaceChildren();
      renderRows(list.executions || []);
      more.hidden = !list.next_cursor || limit >= 1000;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (me.abort) return;
      if (err instanceof ApiError && (err.code === 'INVALID_API_KEY' || err.code === 'API_KEY_REVOKED')) {
        signOut();
        return;
      }
      errors.replaceChildren(errorBox(err));
    }
    if (!me.abort) timer = setTimeout(load, document.hidden ? 15000 : 3000);
  }

  function renderRows(list) {
    if (!list.length) {
      const empty = h('td.muted.empty', { colSpan: 7 }, filter.value ? 'No executions with this status.' : 'No executions yet.');
      body.replaceChildren(h('tr', empty));
      // Only someone who may run is pointed at the run form.
      if (!filter.value) {
        whoami().then((me) => { if (mayRun(me)) empty.textContent = 'No executions yet. Start one with “New run”.'; }, () => {});
      }
      return;
    }
    body.replaceChildren(...list.map((ex) => {
      const href = `/executions/${encodeURIComponent(ex.execution_id)}`;
      const tr = h('tr', { dataset: { id: ex.execution_id } },
        h('td', statusBadge(ex.status)),
        h('td.cmd', link(href, { title: ex.command }, ex.command)),
        h('td', ex.created_by),
        h('td.image', { title: ex.image_id }, ex.image_id),
        h('td.nowrap.started', { title: ex.started_at }, h('span.abs', fmtDate(ex.started_at)), h('span.rel', fmtAgo(ex.started_at))),
        h('td.nowrap', fmtDuration(durationOf(ex))),
        h('td', ex.exit_code === null || ex.exit_code === undefined ? '' : String(ex.exit_code)));
      tr.addEventListener('click', (ev) => {
        if (ev.target instanceof HTMLAnchorElement) return;
        navigate(href);
      });
      return tr;
    }));
  }

  const onVisible = () => {
    if (!document.hidden) load();
  };
  document.addEventListener('visibilitychange', onVisible);
  app.cleanup.push(() => {
    clearTimeout(timer);
    if (inflight) inflight.abort = true;
    document.removeEventListener('visibilitychange', onVisible);
  });
  onKey((ev) => {
    if (isTyping(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === 'c') {
      ev.preventDefault();
      openRunDialog();
    }
  });
  load();
}

// ---- run form -----------------------------------------------------------------------------------

/** Parses KEY=VALUE lines (blank lines and `#` comments ignored); throws on a bad line. */
export function parseEnv(text) {
  const env = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!line.trim() || line.trimStart().startsWith('#')) return;
    const eq = line.indexOf('=');
    const key = eq < 0 ? line.trim() : line.slice(0, eq).trim();
    if (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new Error(`Environment line ${i + 1}: expected KEY=VALUE`);
    }
    env[key] = line.slice(eq + 1);
  });
  return env;
}

/**
 * Seconds of a duration as the CLI takes it: bare seconds (`90`) or units `d h m s` (`10m`,
 * `1h30m`, `1m30s`); null when it does not parse. A unit is never dropped: `1m` is 60.
 */
export function parseDuration(raw) {
  const s = String(raw).trim().toLowerCase();
  if (/^\d+$/.test(s)) return Number(s);
  const m = s.match(/^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$/);
  if (!m || !s || m.slice(1).every((x) => x === undefined)) return null;
  const [d, hr, min, sec] = m.slice(1).map((x) => Number(x || 0));
  return ((d * 24 + hr) * 60 + min) * 60 + sec;
}

async function openRunDialog() {
  if (!app.session || document.querySelector('dialog.run')) return;
  if (!mayRun(await whoami().catch(() => null))) return;
  if (document.querySelector('dialog.run')) return;
  const command = h('textarea', { id: 'run-command', name: 'command', rows: 4, required: true, spellcheck: false, placeholder: 'echo hello from runvoy' });
  const image = h('input', { id: 'run-image', name: 'image', placeholder: 'default image' });
  const env = h('textarea', { id: 'run-env', name: 'env', rows: 3, spellcheck: false, placeholder: 'KEY=VALUE, one per line' });
  const timeout = h('input', { id: 'run-timeout', name: 'timeout', type: 'text', inputmode: 'text', spellcheck: false, placeholder: '10m, 1h30m, 90' });
  const timeoutHint = h('div.muted.small', { id: 'run-timeout-hint', 'aria-live': 'polite' });
  timeout.addEventListener('input', () => {
    const t = parseDuration(timeout.value);
    timeoutHint.textContent = !timeout.value.trim() ? '' : t === null ? 'use e.g. 90, 30s, 10m, 1h30m' : `= ${fmtDuration(t)} (${t} s)`;
  });
  const errors = h('div');
  const submit = h('button.primary', { type: 'submit' }, 'Run');
  const dialog = h('dialog.run', { 'aria-label': 'New run' });
  const close = () => dialog.close();
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      errors.replaceChildren();
      let req;
      try {
        req = { command: command.value };
        if (!command.value.trim()) throw new Error('Command is required');
        if (image.value.trim()) req.image = image.value.trim();
        const e = parseEnv(env.value);
        if (Object.keys(e).length) req.env = e;
        if (timeout.value.trim()) {
          const t = parseDuration(timeout.value);
          if (t === null || t <= 0) throw new Error('Timeout must be a duration like 90 (seconds), 30s, 10m or 1h30m');
          req.timeout = t;
        }
      } catch (err) {
        errors.replaceChildren(errorBox(err));
        return;
      }
      submit.disabled = true;
      try {
        const res = await app.client.run(req);
        close();
        navigate(`/executions/${encodeURIComponent(res.execution_id)}`);
      } catch (err) {
        errors.replaceChildren(errorBox(err));
      } finally {
        submit.disabled = false;
      }
    },
  },
  h('h2', 'New run'),
  h('label', { for: 'run-command' }, 'Command'), command,
  h('div.grid2',
    h('div', h('label', { for: 'run-image' }, 'Image'), image),
    h('div', h('label', { for: 'run-timeout' }, 'Timeout'), timeout, timeoutHint)),
  h('label', { for: 'run-env' }, 'Environment'), env,
  errors,
  h('div.actions', h('button.ghost', { type: 'button', onclick: close }, 'Cancel'), submit));
  command.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  dialog.append(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  command.focus();
}

// ---- execution view -----------------------------------------------------------------------------

function executionView(main, id) {
  document.title = `${id.slice(0, 8)} · runvoy`;
  let execution = null;
  let final = null; // the disconnect frame
  let pollTimer = 0;
  let searchTimer = 0;
  let me = null; // the signed-in user, once known
  let killRefused = false; // the server said 403 to a kill
  let stoppedBy = ''; // who asked for the kill from this page (until the server says)
  let streamError = null; // the banner of the last connection error, while it lasts

  const status = h('span');
  const exitCode = h('span.exit');
  const conn = h('span.conn');
  const title = h('code.command', '…');
  const meta = h('dl.meta');
  const errors = h('div');
  const killBtn = h('button.danger', { type: 'button', hidden: true, onclick: kill }, 'Kill');

  const search = h('input.search', { type: 'search', placeholder: 'Search  ( / )', 'aria-label': 'Search logs', spellcheck: false });
  const counter = h('span.counter.muted', '');
  const prevBtn = h('button.ghost.icon', { type: 'button', title: 'Previous match (Shift+Enter)', 'aria-label': 'Previous match', onclick: () => { runSearchNow(); view.prev(); } }, '↑');
  const nextBtn = h('button.ghost.icon', { type: 'button', title: 'Next match (Enter)', 'aria-label': 'Next match', onclick: () => { runSearchNow(); view.next(); } }, '↓');
  const toggle = (label, key, title, on, fn) => {
    const b = h('button.toggle', { type: 'button', title: `${title} (${key})`, 'aria-pressed': String(on), onclick: () => fn(b.getAttribute('aria-pressed') !== 'true') }, label);
    return b;
  };
  const setPressed = (b, on) => b.setAttribute('aria-pressed', String(!!on));
  const lnBtn = toggle('#', 'l', 'Line numbers', prefs.lineNumbers, (on) => { prefs.lineNumbers = on; savePrefs(); view.setLineNumbers(on); setPressed(lnBtn, on); });
  const tsBtn = toggle('Time', 't', 'Timestamps', prefs.timestamps, (on) => { prefs.timestamps = on; savePrefs(); view.setTimestamps(on); setPressed(tsBtn, on); });
  const wrapBtn = toggle('Wrap', 'w', 'Wrap long lines', prefs.wrap, (on) => { prefs.wrap = on; savePrefs(); view.setWrap(on); setPressed(wrapBtn, on); });
  const followBtn = toggle('Follow', 'f', 'Follow new lines', true, (on) => view.setFollow(on));
  const topBtn = h('button.ghost.icon', { type: 'button', title: 'Top (g)', 'aria-label': 'Top', onclick: () => view.scrollToTop() }, '⤒');
  const bottomBtn = h('button.ghost.icon', { type: 'button', title: 'Bottom (G)', 'aria-label': 'Bottom', onclick: () => view.scrollToBottom() }, '⤓');
  const dlBtn = h('button.ghost', { type: 'button', title: 'Download as plain text (colour codes removed)', onclick: () => view.download(`runvoy-${id}.log`) }, 'Download');
  const rawBtn = h('button.ghost', { type: 'button', title: 'Download the exact output, colour codes included', onclick: () => view.download(`runvoy-${id}.raw.log`, { raw: true }) }, 'Raw');
  const lineCount = h('span.muted.small');

  const logHost = h('div.loghost');
  main.classList.add('exec');
  main.append(
    h('div.exechead',
      h('div.row1', link('/', { class: 'back' }, '← Executions'), status, exitCode, h('div.spacer'), conn, killBtn),
      h('div.row2', title),
      meta),
    errors,
    h('div.toolbar',
      h('div.searchbox', search, counter, prevBtn, nextBtn),
      h('div.spacer'),
      lineCount, lnBtn, tsBtn, wrapBtn, followBtn, topBtn, bottomBtn, dlBtn, rawBtn),
    logHost);

  const view = new LogView(logHost, {
    onFollow: (on) => setPressed(followBtn, on),
    onSearch: ({ count, current, capped }) => {
      counter.textContent = search.value ? `${count ? current + 1 : 0} / ${count}${capped ? '+' : ''}` : '';
    },
    onLines: (n) => { lineCount.textContent = `${n.toLocaleString()} lines`; },
  });
  view.setLineNumbers(prefs.lineNumbers);
  view.setTimestamps(prefs.timestamps);
  view.setWrap(prefs.wrap);
  app.logView = view;

  function runSearchNow() {
    if (searchTimer || view.query !== search.value) {
      clearTimeout(searchTimer);
      searchTimer = 0;
      view.search(search.value);
    }
  }
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      searchTimer = 0;
      view.search(search.value);
    }, 150);
  });
  search.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      const fresh = searchTimer || view.query !== search.value;
      runSearchNow();
      if (!fresh) {
        if (ev.shiftKey) view.prev();
        else view.next();
      }
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      if (search.value) {
        search.value = '';
        runSearchNow();
      }
      search.blur();
      view.scroller.focus();
    }
  });

  function renderHeader() {
    const ex = execution || {};
    const st = (final && final.status) || ex.status;
    status.replaceChildren(statusBadge(st));
    const code = final && final.exit_code !== undefined ? final.exit_code : ex.exit_code;
    exitCode.textContent = code === null || code === undefined ? '' : `exit ${code}`;
    exitCode.className = `exit ${code === 0 ? 'ok' : code === null || code === undefined ? '' : 'bad'}`;
    const timedOut = (final && final.timed_out) || ex.timed_out;
    title.textContent = ex.command || id;
    title.title = ex.command || '';
    const item = (k, v) => (v === undefined || v === null || v === '' ? [] : [h('dt', k), h('dd', v)]);
    meta.replaceChildren(
      ...item('ID', id),
      ...item('User', ex.created_by),
      ...item('Image', ex.image_id),
      ...item('Started', fmtDate(ex.started_at)),
      ...item('Duration', fmtDuration(execution ? durationOf(ex) : null)),
      ...item('Timeout', ex.timeout_seconds ? `${ex.timeout_seconds}s` : ''),
      ...item('Timed out', timedOut ? 'yes' : ''),
      ...item('Failure', ex.failure_reason),
      // The server's record of whose kill was accepted; until the next poll brings it, the
      // user who just clicked Kill here.
      ...item('Stopped by', ex.stopped_by || stoppedBy));
    killBtn.hidden = !st || TERMINAL.has(st) || st === 'TERMINATING' || killRefused
      || !execution || !mayKill(me, execution);
    document.title = `${st ? `${st} · ` : ''}${(ex.command || id).slice(0, 40)} · runvoy`;
  }

  async function poll() {
    clearTimeout(pollTimer);
    try {
      execution = await app.client.getExecution(id);
      if (streamError) {
        streamError.remove();
        streamError = null;
      }
      renderHeader();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        notFound();
        return;
      }
      // Kept as the connection banner: it goes once the server answers or the stream is live.
      streamError = errorBox(err, { onClose: () => errors.replaceChildren() });
      errors.replaceChildren(streamError);
    }
    const st = (final && final.status) || (execution && execution.status);
    if (!st || !TERMINAL.has(st)) pollTimer = setTimeout(poll, document.hidden ? 15000 : 3000);
  }

  /** An unknown id gets a page saying so, not an empty log viewer. */
  function notFound() {
    teardown();
    document.title = 'Not found · runvoy';
    main.classList.remove('exec');
    main.replaceChildren(h('div.card.notfound',
      h('h1', 'Execution not found'),
      h('p.muted', 'No execution has the id ', h('code', id), ' (or it is not yours to see).'),
      link('/', {}, '← All executions')));
  }

  async function kill() {
    if (!window.confirm(`Kill execution ${id}?\n\n${(execution && execution.command) || ''}`)) return;
    killBtn.disabled = true;
    errors.replaceChildren();
    try {
      await app.client.kill(id);
      const who = await whoami().catch(() => null);
      stoppedBy = (who && who.email) || 'you';
      renderHeader();
      poll();
    } catch (err) {
      const box = errorBox(err, { onClose: () => errors.replaceChildren() });
      if (err instanceof ApiError && err.status === 403) {
        box.prepend(h('div', 'You are not allowed to kill this execution.'));
        killRefused = true;
        renderHeader();
      }
      errors.replaceChildren(box);
    } finally {
      killBtn.disabled = false;
    }
  }

  const stateText = {
    [State.LOADING]: 'loading…',
    [State.LIVE]: '● live',
    [State.RECONNECTING]: 'reconnecting…',
    [State.DONE]: 'complete',
    [State.ERROR]: 'error',
  };
  const stream = new LogStream(app.client, id, {
    onEvents: (events) => view.append(events),
    onDone: (frame) => {
      if (frame) final = frame;
      renderHeader();
      poll();
    },
    onState: (state, detail) => {
      conn.textContent = stateText[state] || state;
      conn.className = `conn ${state}`;
      conn.title = detail || '';
      // The stream is back: its "cannot reach" banner no longer holds.
      if ((state === State.LIVE || state === State.DONE) && streamError) {
        streamError.remove();
        streamError = null;
      }
    },
    onError: (err) => {
      streamError = errorBox(err);
      errors.replaceChildren(streamError);
    },
  });
  app.stream = stream;
  stream.start();
  renderHeader();
  poll();
  whoami().then((u) => {
    me = u;
    renderHeader();
  }, () => {});

  const onOnline = () => stream.nudge();
  const onVisible = () => {
    if (!document.hidden) {
      stream.nudge();
      if (!execution || !TERMINAL.has(execution.status)) poll();
    }
  };
  window.addEventListener('online', onOnline);
  document.addEventListener('visibilitychange', onVisible);
  app.cleanup.push(() => {
    stream.stop();
    view.destroy();
    clearTimeout(pollTimer);
    clearTimeout(searchTimer);
    window.removeEventListener('online', onOnline);
    document.removeEventListener('visibilitychange', onVisible);
  });

  onKey((ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || document.querySelector('dialog[open]')) return;
    if (isTyping(ev)) return;
    const actions = {
      '/': () => { search.focus(); search.select(); },
      f: () => followBtn.click(),
      g: () => view.scrollToTop(),
      G: () => view.scrollToBottom(),
      n: () => { runSearchNow(); view.next(); },
      N: () => { runSearchNow(); view.prev(); },
      w: () => wrapBtn.click(),
      l: () => lnBtn.click(),
      t: () => tsBtn.click(),
      c: () => openRunDialog(),
      Escape: () => navigate('/'),
    };
    const fn = actions[ev.key];
    if (fn) {
      ev.preventDefault();
      fn();
    }
  });
  view.scroller.focus({ preventScroll: true });
}

// ---- start ----------------------------------------------------------------------------------

applyTheme();
window.addEventListener('popstate', route);
document.addEventListener('keydown', (ev) => {
  if (ev.key === '?' && !isTyping(ev) && !document.querySelector('dialog[open]')) {
    ev.preventDefault();
    const d = h('dialog.help', { 'aria-label': 'Keyboard shortcuts' },
      h('h2', 'Keyboard shortcuts'),
      h('dl.keys', [
        ['/', 'search the log'], ['Enter / Shift+Enter', 'next / previous match'], ['n / N', 'next / previous match'],
        ['f', 'toggle follow'], ['g / G', 'top / bottom'], ['w', 'toggle wrap'], ['l', 'toggle line numbers'],
        ['t', 'toggle timestamps'], ['c', 'new run'], ['Esc', 'close / back to the list'],
      ].flatMap(([k, v]) => [h('dt', h('kbd', k)), h('dd', v)])),
      h('div.actions', h('button.primary', { type: 'button', onclick: () => d.close() }, 'Close')));
    d.addEventListener('close', () => d.remove());
    document.body.append(d);
    d.showModal();
  }
});
route();
