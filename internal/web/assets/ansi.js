// ANSI escape handling: SGR styles become segment descriptions (rendered later as DOM text nodes,
// never as HTML); every other escape or control character is dropped.

// One token: a CSI sequence (groups 1 and 2: parameters and final byte), an OSC string, another
// ESC sequence, a lone ESC, a C0/C1 control character (tab excluded), or a carriage return.
const TOKEN =
  /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][\s\S]*?(?:\x07|\x1b\\|$)|[PX^_][\s\S]*?(?:\x1b\\|$)|[ -/]*[0-~]|$)|[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\x9f]|\r/g;

const HAS_CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/;

// xterm's default 16-colour palette is themed in CSS (classes a-f0..15 / a-b0..15); the 256-colour
// cube and grey ramp are computed.
function color256(n) {
  if (n < 16) return null;
  if (n < 232) {
    const i = n - 16;
    const step = [0, 95, 135, 175, 215, 255];
    return `rgb(${step[Math.floor(i / 36)]},${step[Math.floor(i / 6) % 6]},${step[i % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}

const clampByte = (v) => Math.max(0, Math.min(255, Number.parseInt(v, 10) || 0));

/** A colour: `{ idx }` for the themed 16 colours, `{ css }` for any other. */
function extendedColor(kind, args) {
  if (kind === 5 && args.length >= 1) {
    const n = clampByte(args[0]);
    return n < 16 ? { idx: n } : { css: color256(n) };
  }
  if (kind === 2 && args.length >= 3) {
    const [r, g, b] = args.slice(0, 3).map(clampByte);
    return { css: `rgb(${r},${g},${b})` };
  }
  return undefined;
}

function freshState() {
  return {
    fg: null, bg: null, bold: false, dim: false, italic: false,
    underline: false, inverse: false, strike: false, hidden: false,
  };
}

function applySgr(st, params) {
  const list = params === '' ? ['0'] : params.split(';');
  for (let i = 0; i < list.length; i++) {
    const p = list[i];
    if (p.includes(':')) {
      // Colon sub-parameters: 38:5:n, 38:2:[cs]:r:g:b, 4:n (underline style).
      const parts = p.split(':');
      const code = Number.parseInt(parts[0], 10);
      if (code === 38 || code === 48) {
        const kind = Number.parseInt(parts[1], 10);
        let args = parts.slice(2);
        if (kind === 2 && args.length >= 4) args = args.slice(1);
        const c = extendedColor(kind, args);
        if (c !== undefined) st[code === 38 ? 'fg' : 'bg'] = c;
      } else if (code === 4) {
        st.underline = (Number.parseInt(parts[1], 10) || 0) > 0;
      }
      continue;
    }
    const n = p === '' ? 0 : Number.parseInt(p, 10);
    if (Number.isNaN(n)) continue;
    if (n === 0) Object.assign(st, freshState());
    else if (n === 1) st.bold = true;
    else if (n === 2) st.dim = true;
    else if (n === 3) st.italic = true;
    else if (n === 4 || n === 21) st.underline = true;
    else if (n === 7) st.inverse = true;
    else if (n === 8) st.hidden = true;
    else if (n === 9) st.strike = true;
    else if (n === 22) { st.bold = false; st.dim = false; }
    else if (n === 23) st.italic = false;
    else if (n === 24) st.underline = false;
    else if (n === 27) st.inverse = false;
    else if (n === 28) st.hidden = false;
    else if (n === 29) st.strike = false;
    else if (n >= 30 && n <= 37) st.fg = { idx: n - 30 };
    else if (n === 39) st.fg = null;
    else if (n >= 40 && n <= 47) st.bg = { idx: n - 40 };
    else if (n === 49) st.bg = null;
    else if (n >= 90 && n <= 97) st.fg = { idx: n - 90 + 8 };
    else if (n >= 100 && n <= 107) st.bg = { idx: n - 100 + 8 };
    else if (n === 38 || n === 48) {
      const kind = Number.parseInt(list[i + 1], 10);
      const take = kind === 5 ? 1 : kind === 2 ? 3 : 0;
      const c = extendedColor(kind, list.slice(i + 2, i + 2 + take));
      if (c !== undefined) st[n === 38 ? 'fg' : 'bg'] = c;
      i += 1 + take;
    }
  }
}

/** Turns the current state into `{cls, fg, bg}`: CSS classes and inline colours (or null). */
function styleOf(st) {
  let fg = st.fg;
  let bg = st.bg;
  const cls = [];
  if (st.inverse) {
    [fg, bg] = [bg, fg];
    if (!fg) cls.push('a-inv-fg');
    if (!bg) cls.push('a-inv-bg');
  }
  let fgCss = null;
  let bgCss = null;
  if (fg) {
    if (fg.idx !== undefined) cls.push(`a-f${fg.idx}`);
    else fgCss = fg.css;
  }
  if (bg) {
    if (bg.idx !== undefined) cls.push(`a-b${bg.idx}`);
    else bgCss = bg.css;
  }
  if (st.bold) cls.push('a-bold');
  if (st.dim) cls.push('a-dim');
  if (st.italic) cls.push('a-italic');
  if (st.underline) cls.push('a-under');
  if (st.strike) cls.push('a-strike');
  if (st.hidden) cls.push('a-hidden');
  return { cls: cls.join(' '), fg: fgCss, bg: bgCss };
}

/**
 * Parses a line with ANSI escapes.
 *
 * Returns `{ plain, segments }`: `plain` is the visible text (escapes and control characters
 * removed; a carriage return lets the following text replace what came before, as on a terminal),
 * and `segments` is a list of `{ text, cls, fg, bg }` whose texts concatenate to `plain`.
 * @param {string} line
 */
export function parseAnsi(line) {
  if (!HAS_CONTROL.test(line) && !line.includes('\r')) {
    return { plain: line, segments: line ? [{ text: line, cls: '', fg: null, bg: null }] : [] };
  }
  const st = freshState();
  let segments = [];
  let style = styleOf(st);
  let pendingCr = false;
  let last = 0;
  const push = (text) => {
    if (!text) return;
    if (pendingCr) {
      segments = [];
      pendingCr = false;
    }
    const prev = segments[segments.length - 1];
    if (prev && prev.cls === style.cls && prev.fg === style.fg && prev.bg === style.bg) {
      prev.text += text;
    } else {
      segments.push({ text, cls: style.cls, fg: style.fg, bg: style.bg });
    }
  };
  TOKEN.lastIndex = 0;
  for (let m = TOKEN.exec(line); m !== null; m = TOKEN.exec(line)) {
    push(line.slice(last, m.index));
    last = TOKEN.lastIndex;
    if (m[0] === '\r') {
      pendingCr = true;
    } else if (m[2] === 'm') {
      applySgr(st, m[1]);
      style = styleOf(st);
    }
    if (m[0] === '') TOKEN.lastIndex++; // Never loop on an empty match.
  }
  push(line.slice(last));
  return { plain: segments.map((s) => s.text).join(''), segments };
}

/** The visible text of a line (see [`parseAnsi`]). */
export function stripAnsi(line) {
  if (!HAS_CONTROL.test(line) && !line.includes('\r')) return line;
  return parseAnsi(line).plain;
}
