// Test harness: starts a real runvoyd (local backend) and a headless Chromium.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Repository root (internal/web/e2e/../../..). */
export const repoRoot = path.resolve(here, '..', '..', '..');

/** Where screenshots and other artifacts go. */
export const artifactsDir = path.join(repoRoot, 'artifacts', 'web');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `runvoyd serve --backend local` on a free port with a fresh data dir and waits for it.
 * Set RUNVOY_E2E_URL and RUNVOY_E2E_KEY to test an already running server instead.
 * @returns {Promise<{url: string, key: string, stop: () => Promise<void>, log: () => string}>}
 */
export async function startServer() {
  if (process.env.RUNVOY_E2E_URL && process.env.RUNVOY_E2E_KEY) {
    return { url: process.env.RUNVOY_E2E_URL, key: process.env.RUNVOY_E2E_KEY, stop: async () => {}, log: () => '' };
  }
  const bin = path.resolve(here, process.env.RUNVOYD_BIN || '../../../target/debug/runvoyd');
  if (!fs.existsSync(bin)) throw new Error(`runvoyd not found at ${bin} (build it or set RUNVOYD_BIN)`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'runvoy-web-e2e-'));
  let output = '';
  const child = spawn(bin, ['serve', '--backend', 'local', '--data-dir', dataDir, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Keep the user's CLI config untouched.
    env: { ...process.env, HOME: dataDir, RUNVOY_NO_CLIENT_CONFIG: 'true', RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const collect = (d) => {
    output += d.toString();
    if (output.length > 200000) output = output.slice(-100000);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });

  const serverJson = path.join(dataDir, 'server.json');
  const keyFile = path.join(dataDir, 'admin.key');
  const deadline = Date.now() + 60000;
  let info = null;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`runvoyd exited early (${JSON.stringify(exited)}):\n${output}`);
    try {
      info = JSON.parse(fs.readFileSync(serverJson, 'utf8'));
      if (info.url && fs.existsSync(keyFile)) break;
    } catch {
      // Not written yet.
    }
    await sleep(100);
  }
  if (!info || !info.url) {
    child.kill('SIGKILL');
    throw new Error(`runvoyd did not write ${serverJson} in time:\n${output}`);
  }
  const key = fs.readFileSync(keyFile, 'utf8').trim();
  return {
    url: info.url.replace(/\/+$/, ''),
    key,
    log: () => output,
    stop: async () => {
      if (exited) return;
      child.kill('SIGTERM');
      for (let i = 0; i < 50 && !exited; i++) await sleep(100);
      if (!exited) child.kill('SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Launches headless Chromium with a fresh profile. */
export async function launchBrowser() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'runvoy-web-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1366, height: 800 },
    acceptDownloads: true,
  });
  return {
    context,
    close: async () => {
      await context.close();
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Calls the API from node. */
export async function api(server, method, p, body) {
  const resp = await fetch(`${server.url}/api/v1${p}`, {
    method,
    headers: { 'X-API-Key': server.key, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${p}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Polls `fn` until it returns a truthy value. */
export async function until(fn, { timeout = 30000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(interval);
  }
}

/** Saves a screenshot under artifacts/web/. */
export async function screenshot(page, name) {
  fs.mkdirSync(artifactsDir, { recursive: true });
  await page.screenshot({ path: path.join(artifactsDir, `${name}.png`) });
}
