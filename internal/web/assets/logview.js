// A virtualised log viewer: the model holds every line, the DOM only the rows around the viewport.
// Without wrapping every row has the same height, so the window follows from the scroll offset;
// with wrapping a window of rows is rendered around an anchor row that stays put on screen.

import { parseAnsi, stripAnsi } from './ansi.js';

const OVERSCAN = 30; // rows rendered above and below the viewport (no wrap)
const WRAP_WINDOW = 150; // rows rendered on each side of the anchor (wrap)
const MAX_MATCHES = 100000;

function decodeB64(b64) {
  try {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `HH:MM:SS.mmm` in local time. */
export function formatTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** The log viewer component. */
export class LogView {
  /**
   * @param {HTMLElement} root Element the viewer fills.
   * @param {{onFollow?: (on: boolean) => void, onSearch?: (info: {count: number, current: number, capped: boolean}) => void, onLines?: (n: number) => void}} [hooks]
   */
  constructor(root, hooks = {}) {
    this.hooks = hooks;
    /** @type {{text: string, stream: string, ts: number, seq: number, open: boolean, plain?: string, bin?: (string|Uint8Array)[]}[]} */
    this.model = [];
    this.wrap = false;
    this.follow = true;
    this.rowH = 18;
    this.query = '';
    /** Matches as flat triples: line, start, end. */
    this.matches = [];
    this.current = -1;
    this.capped = false;
    this.window = null; // {first, last} rendered
    this.dirty = true;
    this.frame = 0;
    this.anchor = null; // wrap mode: {line, offset} to restore
    this.expectTop = -1;
    this.reportedLines = -1;

    this.el = document.createElement('div');
    this.el.className = 'logview show-ln';
    this.scroller = document.createElement('div');
    this.scroller.className = 'log-scroll';
    this.scroller.tabIndex = 0;
    this.scroller.setAttribute('role', 'log');
    this.scroller.setAttribute('aria-label', 'Log output');
    this.topPad = document.createElement('div');
    this.rows = document.createElement('div');
    this.rows.className = 'log-rows';
    this.bottomPad = document.createElement('div');
    this.content = document.createElement('div');
    this.content.className = 'log-content';
    this.content.append(this.topPad, this.rows, this.bottomPad);
    this.scroller.append(this.content);
    this.empty = document.createElement('div');
    this.empty.className = 'log-empty';
    this.empty.textContent = 'No output yet.';
    this.el.append(this.scroller, this.empty);
    root.append(this.el);

    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    this.resizeObs = new ResizeObserver(() => {
      this.measure();
      this.invalidate();
    });
    this.resizeObs.observe(this.scroller);
    this.measure();
  }

  /** Releases observers and timers. */
  destroy() {
    this.resizeObs.disconnect();
    cancelAnimationFrame(this.frame);
    this.el.remove();
  }

  measure() {
    const probe = document.createElement('div');
    probe.className = 'row';
    probe.textContent = 'x';
    this.rows.append(probe);
    const h = probe.getBoundingClientRect().height;
    probe.remove();
    if (h > 0) this.rowH = h;
  }

  // ---- model -------------------------------------------------------------------------------

  /** Appends log records (already in order, no duplicates). */
  append(events) {
    const before = this.model.length;
    let reopened = -1;
    for (const ev of events) {
      const text = typeof ev.message === 'string' ? ev.message : '';
      const bytes = ev.data_b64 ? decodeB64(ev.data_b64) : null;
      const open = ev.eol === false;
      const last = this.model[this.model.length - 1];
      if (last && last.open) {
        // The previous record had no newline: this one continues the same line.
        if (bytes || last.bin) {
          last.bin = last.bin || [last.text];
          last.bin.push(bytes || text);
        }
        last.text += text;
        last.plain = undefined;
        last.open = open;
        if (reopened < 0 && this.model.length - 1 < before) reopened = this.model.length - 1;
        continue;
      }
      const line = { text, stream: ev.stream || 'stdout', ts: ev.timestamp || 0, seq: ev.seq, open };
      if (bytes) line.bin = [bytes];
      this.model.push(line);
    }
    if (this.query) {
      const from = reopened >= 0 ? reopened : before;
      this.dropMatchesFrom(from);
      this.findIn(from, this.model.length);
      this.reportSearch();
    }
    this.invalidate();
  }

  /** Removes every line. */
  clear() {
    this.model = [];
    this.matches = [];
    this.current = -1;
    this.window = null;
    this.invalidate();
  }

  /** The text of every line (escapes included), in order. */
  lines() {
    return this.model.map((l) => l.text);
  }

  /** Visible text of line `i`, cached. */
  plain(i) {
    const l = this.model[i];
    if (l.plain === undefined) l.plain = stripAnsi(l.text);
    return l.plain;
  }

  // ---- options ------------------------------------------------------------------------------

  /** Turns soft wrapping on or off. */
  setWrap(on) {
    this.wrap = !!on;
    this.el.classList.toggle('wrap', this.wrap);
    const anchor = this.firstVisibleLine();
    this.window = null;
    this.measure();
    if (!this.follow && anchor !== null) this.reveal(anchor, 'start');
    else this.invalidate();
  }

  /** Shows or hides line numbers. */
  setLineNumbers(on) {
    this.el.classList.toggle('show-ln', !!on);
    this.invalidate();
  }

  /** Shows or hides timestamps. */
  setTimestamps(on) {
    this.el.classList.toggle('show-ts', !!on);
    this.invalidate();
  }

  /** Follow mode: keep the newest line in view. */
  setFollow(on) {
    const was = this.follow;
    this.follow = !!on;
    if (this.follow) this.invalidate();
    if (was !== this.follow && this.hooks.onFollow) this.hooks.onFollow(this.follow);
  }

  /** Scrolls to the first line (and stops following). */
  scrollToTop() {
    this.setFollow(false);
    this.reveal(0, 'start');
  }

  /** Scrolls to the last line and follows. */
  scrollToBottom() {
    this.setFollow(true);
  }

  // ---- search -------------------------------------------------------------------------------

  /** Searches for `query` (case-insensitive, literal); returns the number of matches. */
  search(query) {
    this.query = query || '';
    this.matches = [];
    this.current = -1;
    this.capped = false;
    if (this.query) this.findIn(0, this.model.length);
    if (this.matches.length) {
      // Start at the first match at or after the top of the viewport.
      const top = this.firstVisibleLine() ?? 0;
      const k = this.matchAtOrAfter(top);
      this.current = k < this.matches.length / 3 ? k : 0;
      this.revealCurrent();
    }
    this.reportSearch();
    this.renderNow();
    return this.matches.length / 3;
  }

  findIn(from, to) {
    const q = this.query.toLowerCase();
    if (!q) return;
    for (let i = from; i < to; i++) {
      const hay = this.plain(i).toLowerCase();
      let at = hay.indexOf(q);
      while (at >= 0) {
        if (this.matches.length >= MAX_MATCHES * 3) {
          this.capped = true;
          return;
        }
        this.matches.push(i, at, at + q.length);
        at = hay.indexOf(q, at + q.length);
      }
    }
  }

  dropMatchesFrom(line) {
    let k = this.matchAtOrAfter(line) * 3;
    if (k < this.matches.length) {
      this.matches.length = k;
      this.capped = false;
    }
    if (this.current * 3 >= k) this.current = k / 3 - 1;
  }

  /** Index of the first match on a line >= `line`. */
  matchAtOrAfter(line) {
    let lo = 0;
    let hi = this.matches.length / 3;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.matches[mid * 3] < line) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  reportSearch() {
    if (this.hooks.onSearch) {
      this.hooks.onSearch({
        count: this.matches.length / 3,
        current: this.current,
        capped: this.capped,
      });
    }
  }

  /** Moves to the next match (wrapping around). */
  next() {
    this.step(1);
  }

  /** Moves to the previous match (wrapping around). */
  prev() {
    this.step(-1);
  }

  step(dir) {
    const n = this.matches.length / 3;
    if (!n) return;
    this.current = ((this.current < 0 ? (dir > 0 ? -1 : 0) : this.current) + dir + n) % n;
    this.revealCurrent();
    this.reportSearch();
  }

  revealCurrent() {
    if (this.current < 0) return;
    this.setFollow(false);
    this.reveal(this.matches[this.current * 3], 'center', true);
  }

  // ---- scrolling and rendering --------------------------------------------------------------

  /** Line index at the top of the viewport, or null when empty. */
  firstVisibleLine() {
    if (!this.model.length) return null;
    if (!this.wrap) return Math.min(this.model.length - 1, Math.floor(this.scroller.scrollTop / this.rowH));
    const top = this.scroller.scrollTop;
    for (const row of this.rows.children) {
      if (row.offsetTop + row.offsetHeight > top) return Number(row.dataset.i);
    }
    return null;
  }

  /** Scrolls line `i` into view (`start` or `center`). */
  reveal(i, where = 'center', toMark = false) {
    if (!this.model.length) return;
    i = Math.max(0, Math.min(this.model.length - 1, i));
    if (!this.wrap) {
      const v = this.scroller.clientHeight;
      const y = i * this.rowH - (where === 'center' ? (v - this.rowH) / 2 : 0);
      this.setTop(Math.max(0, y));
      this.renderNow();
    } else {
      this.anchor = { line: i, offset: where === 'center' ? this.scroller.clientHeight / 3 : 0 };
      this.window = null;
      this.renderNow();
    }
    if (toMark) {
      const mark = this.rows.querySelector('mark.cur');
      if (mark) {
        // Horizontal position only: keep the vertical position chosen above.
        const sr = this.scroller.getBoundingClientRect();
        const mr = mark.getBoundingClientRect();
        if (mr.right > sr.right - 20 || mr.left < sr.left + 60) {
          this.scroller.scrollLeft += mr.left - sr.left - sr.width / 2;
        }
      }
    }
  }

  setTop(y) {
    this.scroller.scrollTop = y;
    this.expectTop = this.scroller.scrollTop;
  }

  onScroll() {
    const s = this.scroller;
    const programmatic = Math.abs(s.scrollTop - this.expectTop) < 1;
    this.expectTop = -1;
    if (!programmatic) {
      const atBottom = s.scrollTop + s.clientHeight >= s.scrollHeight - this.rowH * 1.5;
      const allRendered = !this.wrap || !this.window || this.window.last >= this.model.length;
      this.setFollow(atBottom && allRendered);
    }
    this.scheduleRender(false);
  }

  /** Marks the rows stale and schedules a render. */
  invalidate() {
    this.dirty = true;
    this.scheduleRender(true);
  }

  scheduleRender() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** Renders synchronously (used after jumps, so the DOM is up to date at once). */
  renderNow() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dirty = true;
    this.render();
  }

  render() {
    const n = this.model.length;
    this.empty.hidden = n > 0;
    this.el.style.setProperty('--ln-w', `${Math.max(4, String(n).length) + 1}ch`);
    if (n !== this.reportedLines) {
      this.reportedLines = n;
      if (this.hooks.onLines) this.hooks.onLines(n);
    }
    if (this.wrap) this.renderWrapped(n);
    else this.renderFixed(n);
    this.dirty = false;
  }

  renderFixed(n) {
    const s = this.scroller;
    const h = this.rowH;
    const total = n * h;
    const v = s.clientHeight || 1;
    this.content.style.minHeight = `${total}px`;
    if (this.follow) this.setTop(Math.max(0, total - v));
    const top = s.scrollTop;
    const first = Math.max(0, Math.floor(top / h) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + v) / h) + OVERSCAN);
    if (!this.dirty && this.window && this.window.first === first && this.window.last === last) return;
    this.fill(first, last);
    this.topPad.style.height = `${first * h}px`;
    this.bottomPad.style.height = `${(n - last) * h}px`;
    if (this.follow) this.setTop(Math.max(0, s.scrollHeight - v));
  }

  renderWrapped(n) {
    const s = this.scroller;
    const v = s.clientHeight || 1;
    const h = this.rowH;
    this.content.style.minHeight = '';
    if (this.follow) {
      this.anchor = null;
      const first = Math.max(0, n - WRAP_WINDOW);
      if (this.dirty || !this.window || this.window.last !== n || this.window.first !== first) {
        this.fill(first, n);
        this.topPad.style.height = `${first * h}px`;
        this.bottomPad.style.height = '0px';
      }
      this.setTop(s.scrollHeight - v);
      return;
    }
    let anchor = this.anchor;
    this.anchor = null;
    const w = this.window;
    if (!anchor && w && !this.dirty) {
      // Re-window only when the viewport nears an edge of the rendered rows.
      const rowsTop = this.rows.offsetTop;
      const rowsBottom = rowsTop + this.rows.offsetHeight;
      const nearTop = w.first > 0 && s.scrollTop < rowsTop + v;
      const nearBottom = w.last < n && s.scrollTop + v > rowsBottom - v;
      const outside = s.scrollTop + v < rowsTop || s.scrollTop > rowsBottom;
      if (!nearTop && !nearBottom) return;
      if (outside) {
        anchor = { line: Math.min(n - 1, Math.floor(s.scrollTop / h)), offset: 0, estimate: true };
      }
    }
    if (!anchor) {
      const line = this.firstVisibleLine();
      if (line === null) {
        anchor = { line: Math.min(Math.max(0, n - 1), Math.floor(s.scrollTop / h)), offset: 0, estimate: true };
      } else {
        const row = this.rows.querySelector(`[data-i="${line}"]`);
        anchor = { line, offset: row ? row.offsetTop - s.scrollTop : 0 };
      }
    }
    const first = Math.max(0, anchor.line - WRAP_WINDOW);
    const last = Math.min(n, anchor.line + WRAP_WINDOW);
    this.fill(first, last);
    this.topPad.style.height = `${first * h}px`;
    this.bottomPad.style.height = `${(n - last) * h}px`;
    const row = this.rows.querySelector(`[data-i="${anchor.line}"]`);
    if (row) this.setTop(Math.max(0, row.offsetTop - anchor.offset));
  }

  /** Replaces the rendered rows with lines `[first, last)`. */
  fill(first, last) {
    const frag = document.createDocumentFragment();
    let k = this.matchAtOrAfter(first);
    const m = this.matches;
    for (let i = first; i < last; i++) {
      const ranges = [];
      while (k * 3 < m.length && m[k * 3] === i) {
        ranges.push([m[k * 3 + 1], m[k * 3 + 2], k === this.current]);
        k++;
      }
      frag.append(this.renderRow(i, ranges));
    }
    this.rows.replaceChildren(frag);
    this.window = { first, last };
  }

  renderRow(i, ranges) {
    const line = this.model[i];
    const row = document.createElement('div');
    row.className = `row s-${line.stream}`;
    row.dataset.i = String(i);
    const ln = document.createElement('span');
    ln.className = 'ln';
    ln.textContent = String(i + 1);
    const ts = document.createElement('span');
    ts.className = 'ts';
    ts.textContent = line.ts ? formatTime(line.ts) : '';
    const msg = document.createElement('span');
    msg.className = 'msg';
    const { segments } = parseAnsi(line.text);
    renderSegments(msg, segments, ranges);
    row.append(ln, ts, msg);
    return row;
  }

  /** Saves the log as a text file: every line's exact bytes, each followed by a newline. */
  /** Saves the log as a file: plain text without ANSI codes, or with `raw` the exact output. */
  download(filename, { raw = false } = {}) {
    const parts = [];
    for (const line of this.model) {
      if (line.bin && raw) parts.push(...line.bin);
      else parts.push(raw ? line.text : stripAnsi(line.text));
      if (!line.open) parts.push('\n');
    }
    const blob = new Blob(parts, { type: 'text/plain;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}

/** Appends the styled segments to `el` as text nodes and spans, wrapping search hits in marks. */
export function renderSegments(el, segments, ranges = []) {
  let off = 0;
  let ri = 0;
  for (const seg of segments) {
    const end = off + seg.text.length;
    let pos = off;
    while (pos < end) {
      while (ri < ranges.length && ranges[ri][1] <= pos) ri++;
      const r = ranges[ri];
      let stop;
      let hit = null;
      if (!r || r[0] >= end) stop = end;
      else if (r[0] > pos) stop = r[0];
      else {
        stop = Math.min(r[1], end);
        hit = r;
      }
      const text = seg.text.slice(pos - off, stop - off);
      let node;
      if (seg.cls || seg.fg || seg.bg) {
        node = document.createElement('span');
        if (seg.cls) node.className = seg.cls;
        if (seg.fg) node.style.color = seg.fg;
        if (seg.bg) node.style.backgroundColor = seg.bg;
        node.textContent = text;
      } else {
        node = document.createTextNode(text);
      }
      if (hit) {
        const mark = document.createElement('mark');
        mark.className = hit[2] ? 'hl cur' : 'hl';
        mark.append(node);
        node = mark;
      }
      el.append(node);
      pos = stop;
    }
    off = end;
  }
}
