// Property tests of the ANSI parser (fast-check): whatever bytes a command prints, the viewer
// shows only text (no control characters survive), styles are only the parser's own class
// names and rgb() colours (nothing from the input reaches a class or style attribute), and
// styling escapes never change the visible text.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import fc from 'fast-check';

import { parseAnsi, stripAnsi } from '../assets/ansi.js';

const E = '\u001b';
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/;
const CLASSES = /^(a-(f|b)\d{1,2}|a-[a-z]+)( (a-(f|b)\d{1,2}|a-[a-z]+))*$/;
const RGB = /^rgb\((\d{1,3}),(\d{1,3}),(\d{1,3})\)$/;

// Pieces that make terminal output interesting: escape introducers, parameters, separators,
// final bytes, OSC/DCS terminators, carriage returns, C1 controls and ordinary text.
const piece = fc.oneof(
  fc.constantFrom(E, `${E}[`, `${E}]`, `${E}P`, `${E}\\`, '\u0007', '\u009b', '\r', '\n', '\t', '[', ';', ':', 'm', 'K', 'H'),
  fc.integer({ min: 0, max: 300 }).map(String),
  fc.constantFrom('38;5;', '48;5;', '38;2;', '48;2;', '38:2::', '1;4;7', '0', ''),
  fc.string({ maxLength: 8 }),
  fc.fullUnicodeString({ maxLength: 4 }),
);
const terminalText = fc.array(piece, { maxLength: 40 }).map((a) => a.join(''));
const printable = fc.string({ maxLength: 30 }).filter((s) => !CONTROL.test(s) && !s.includes('\r'));
const sgr = fc
  .array(fc.oneof(fc.integer({ min: 0, max: 255 }).map(String), fc.constantFrom('38;5;196', '48;2;1;2;3', '')), { maxLength: 6 })
  .map((ps) => `${E}[${ps.join(';')}m`);

const runs = { numRuns: Number(process.env.FC_RUNS || 2000) };

test('property: no control character survives, and plain is the segments joined', () => {
  fc.assert(
    fc.property(terminalText, (s) => {
      const { plain, segments } = parseAnsi(s);
      assert.ok(!CONTROL.test(plain), `control character in ${JSON.stringify(plain)}`);
      assert.equal(plain, segments.map((x) => x.text).join(''));
      assert.equal(stripAnsi(s), plain);
      for (const seg of segments) assert.ok(seg.text.length > 0, 'empty segment');
    }),
    runs,
  );
});

test('property: styles are only the parser\'s classes and rgb() colours', () => {
  fc.assert(
    fc.property(terminalText, (s) => {
      for (const seg of parseAnsi(s).segments) {
        assert.ok(seg.cls === '' || CLASSES.test(seg.cls), `class ${JSON.stringify(seg.cls)}`);
        for (const c of [seg.fg, seg.bg]) {
          if (c === null) continue;
          const m = RGB.exec(c);
          assert.ok(m, `colour ${JSON.stringify(c)}`);
          for (const v of m.slice(1)) assert.ok(Number(v) <= 255, `colour ${c}`);
        }
      }
    }),
    runs,
  );
});

test('property: printable text passes unchanged, and SGR escapes never change it', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(printable, sgr), { maxLength: 8 }), printable, (pairs, tail) => {
      const text = pairs.map(([t]) => t).join('') + tail;
      assert.equal(stripAnsi(text), text);
      const styled = pairs.map(([t, esc]) => t + esc).join('') + tail;
      assert.equal(stripAnsi(styled), text);
    }),
    runs,
  );
});
