// Unit tests of the ANSI parser (it has no DOM dependency, so it runs in node directly).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseAnsi, stripAnsi } from '../assets/ansi.js';

const E = '\u001b';
const simple = (line) => parseAnsi(line).segments.map((s) => [s.text, s.cls, s.fg, s.bg]);

test('plain text is one unstyled segment', () => {
  assert.deepEqual(simple('hello <b>&amp;</b>'), [['hello <b>&amp;</b>', '', null, null]]);
  assert.deepEqual(parseAnsi('').segments, []);
});

test('16 colours, bold, underline, italic and reset', () => {
  assert.deepEqual(simple(`${E}[31mred${E}[0m plain`), [['red', 'a-f1', null, null], [' plain', '', null, null]]);
  assert.deepEqual(simple(`${E}[1;4;3;92;44mx${E}[m`), [['x', 'a-f10 a-b4 a-bold a-italic a-under', null, null]]);
  assert.deepEqual(simple(`${E}[1mA${E}[22mB`), [['A', 'a-bold', null, null], ['B', '', null, null]]);
  assert.deepEqual(simple(`${E}[31mA${E}[39mB`), [['A', 'a-f1', null, null], ['B', '', null, null]]);
});

test('256 colours and truecolor, with ; and : separators', () => {
  assert.deepEqual(simple(`${E}[38;5;196mx`), [['x', '', 'rgb(255,0,0)', null]]);
  assert.deepEqual(simple(`${E}[38;5;9mx`), [['x', 'a-f9', null, null]]);
  assert.deepEqual(simple(`${E}[48;5;244mx`), [['x', '', null, 'rgb(128,128,128)']]);
  assert.deepEqual(simple(`${E}[38;2;10;20;30;48;2;1;2;3mx`), [['x', '', 'rgb(10,20,30)', 'rgb(1,2,3)']]);
  assert.deepEqual(simple(`${E}[38:2::10:20:30mx`), [['x', '', 'rgb(10,20,30)', null]]);
  assert.deepEqual(simple(`${E}[1;38;5;33;4mx`), [['x', 'a-bold a-under', 'rgb(0,135,255)', null]]);
});

test('other escapes and control characters are stripped', () => {
  assert.equal(stripAnsi(`a${E}[2Kb${E}[1;1Hc${E}]0;title\u0007d${E}]8;;http://x${E}\\e${E}(Bf\u0000g${E}`), 'abcdefg');
  assert.equal(stripAnsi('tab\there'), 'tab\there');
  assert.equal(stripAnsi(`50%\r100%`), '100%');
  assert.equal(stripAnsi(`done\r`), 'done');
  assert.equal(stripAnsi(`x\u009b31my`), 'x31my');
});

test('inverse swaps colours', () => {
  assert.deepEqual(simple(`${E}[7mx`), [['x', 'a-inv-fg a-inv-bg', null, null]]);
  assert.deepEqual(simple(`${E}[31;7mx`), [['x', 'a-inv-fg a-b1', null, null]]);
});

test('segment texts always concatenate to the plain text', () => {
  for (const line of [`${E}[31mred${E}[0m`, `a${E}[1mb${E}[0mc${E}[Kd`, 'x\ry', `${E}[38;2;300;-1;5mz`]) {
    const { plain, segments } = parseAnsi(line);
    assert.equal(segments.map((s) => s.text).join(''), plain);
    assert.ok(!plain.includes(E));
  }
});
