// Follows an execution's logs: the stored backlog over REST, then live frames over the WebSocket,
// reconnecting with backoff and resuming after the last record seen. Records reach the consumer
// exactly once and in `seq` order.

import { ApiError, TERMINAL } from './api.js';

const PAGE = 5000;
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 10000;

/** Connection states reported through `onState`. */
export const State = Object.freeze({
  LOADING: 'loading',
  LIVE: 'live',
  RECONNECTING: 'reconnecting',
  DONE: 'done',
  ERROR: 'error',
});

/** Streams one execution's log records. */
export class LogStream {
  /**
   * @param {import('./api.js').Client} client
   * @param {string} id Execution id.
   * @param {{
   *   onEvents: (events: object[]) => void,
   *   onDone: (info: {status: string, exit_code: ?number, timed_out: boolean}) => void,
   *   onState: (state: string, detail?: string) => void,
   *   onError: (err: Error) => void,
   * }} handlers
   */
  constructor(client, id, handlers) {
    this.client = client;
    this.id = id;
    this.h = handlers;
    /** Highest `seq` delivered so far. */
    this.lastSeq = 0;
    this.ws = null;
    this.stopped = false;
    this.done = false;
    this.attempt = 0;
    this.timer = null;
    this.abort = null;
    this.generation = 0;
  }

  /** Starts (or restarts) following. */
  start() {
    this.stopped = false;
    this.h.onState(State.LOADING);
    this.connect();
  }

  /** Stops for good: closes the socket and cancels timers and requests. */
  stop() {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    this.closeSocket();
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // Already closed.
      }
    }
  }

  /** Delivers records newer than `lastSeq`; returns false on a gap (the caller resyncs). */
  deliver(events) {
    const fresh = [];
    for (const ev of events) {
      if (typeof ev.seq !== 'number' || ev.seq <= this.lastSeq) continue;
      if (ev.seq > this.lastSeq + 1) {
        if (fresh.length) this.h.onEvents(fresh);
        return false;
      }
      fresh.push(ev);
      this.lastSeq = ev.seq;
    }
    if (fresh.length) this.h.onEvents(fresh);
    return true;
  }

  /** Reads the backlog after `lastSeq`, then opens the WebSocket after the last record. */
  async connect() {
    const gen = ++this.generation;
    this.closeSocket();
    let page;
    try {
      for (;;) {
        this.abort = new AbortController();
        page = await this.client.logs(this.id, this.lastSeq, PAGE, this.abort.signal);
        if (gen !== this.generation) return;
        this.deliver(page.events || []);
        if (!page.has_more || !(page.events || []).length) break;
      }
    } catch (err) {
      if (gen !== this.generation) return;
      if (err instanceof ApiError && [401, 403, 404].includes(err.status)) {
        this.h.onState(State.ERROR, err.message);
        this.h.onError(err);
        return;
      }
      this.retry(err.message || String(err));
      return;
    }
    if (page.logs_complete && TERMINAL.has(page.status)) {
      this.finish(null);
      return;
    }
    if (!page.websocket_url) {
      this.retry('no websocket_url');
      return;
    }
    this.openSocket(page.websocket_url, gen);
  }

  openSocket(url, gen) {
    let wsUrl = url;
    if (wsUrl.startsWith('/')) wsUrl = this.client.baseUrl.replace(/^http/, 'ws') + wsUrl;
    wsUrl += `${wsUrl.includes('?') ? '&' : '?'}after_seq=${this.lastSeq}`;
    let ws;
    try {
      ws = new WebSocket(wsUrl);
    } catch (err) {
      this.retry(err.message);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.h.onState(State.LIVE);
    };
    ws.onmessage = (msg) => {
      if (gen !== this.generation || typeof msg.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame && frame.type === 'disconnect') {
        this.finish(frame);
        return;
      }
      this.attempt = 0;
      if (!this.deliver([frame])) {
        // A record is missing: resume from the last one we have.
        this.closeSocket();
        this.h.onState(State.RECONNECTING, 'gap in the stream');
        this.connect();
      }
    };
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.ws = null;
      this.retry(ev.reason || `connection closed (${ev.code})`);
    };
    ws.onerror = () => {
      // onclose follows and schedules the reconnect.
    };
  }

  finish(frame) {
    this.done = true;
    this.generation++;
    this.closeSocket();
    this.h.onState(State.DONE);
    this.h.onDone(frame);
  }

  retry(reason) {
    if (this.stopped || this.done) return;
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.h.onState(State.RECONNECTING, reason);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.stopped && !this.done) this.connect();
    }, delay);
  }

  /** Reconnects now (e.g. when the tab becomes visible or the network comes back). */
  nudge() {
    if (this.stopped || this.done || this.ws) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }
}
