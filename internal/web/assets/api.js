// REST client for the runvoy API (/api/v1) and the sign-in session.

/** An error answer from the API (`{"error","code","details"}`) or a network failure. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 for a network failure.
   * @param {string} code Stable error code.
   * @param {string} message Short summary.
   * @param {string} [details] More detail.
   */
  constructor(status, code, message, details) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details || '';
  }
}

/** Normalises a server URL: trims it, adds http:// when no scheme, drops trailing slashes. */
export function normaliseBaseUrl(raw) {
  let url = String(raw || '').trim();
  if (!url) return window.location.origin;
  if (!/^https?:\/\//i.test(url)) url = `http://${url}`;
  const u = new URL(url);
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/** A client bound to one server and one API key. */
export class Client {
  /**
   * @param {string} baseUrl Server URL such as `https://runvoy.example.com`.
   * @param {string} apiKey The user's API key (sent as `X-API-Key`).
   */
  constructor(baseUrl, apiKey) {
    this.baseUrl = normaliseBaseUrl(baseUrl);
    this.apiKey = apiKey;
  }

  /** Sends a request to `/api/v1{path}` and returns the decoded JSON body (null for 204). */
  async request(method, path, opts = {}) {
    return (await this.send(method, path, opts)).data;
  }

  /** Like `request`, but returns `{ data, headers }`. */
  async send(method, path, { query, body, signal } = {}) {
    const url = new URL(`${this.baseUrl}/api/v1${path}`);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    }
    const headers = { 'X-API-Key': this.apiKey, Accept: 'application/json' };
    const init = { method, headers, signal, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'NETWORK_ERROR', `Cannot reach ${this.baseUrl}`,
        String((e && e.message) || e));
    }
    if (resp.status === 204) return { data: null, headers: resp.headers };
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!resp.ok) {
      if (data && typeof data === 'object' && data.error) {
        throw new ApiError(resp.status, data.code || `HTTP_${resp.status}`, data.error, data.details);
      }
      throw new ApiError(resp.status, `HTTP_${resp.status}`, resp.statusText || `HTTP ${resp.status}`,
        text.slice(0, 500));
    }
    return { data, headers: resp.headers };
  }

  /** `GET /health` (public). */
  health() {
    return this.request('GET', '/health');
  }

  /**
   * `GET /executions` newest first; `status` is a comma-separated list or empty. The answer is
   * a JSON array; the next page's cursor comes from its `Link: <…>; rel="next"` header.
   * Returns `{ executions, next_cursor }` (`next_cursor` null on the last page).
   */
  async listExecutions({ limit = 50, status = '', cursor } = {}) {
    const { data, headers } = await this.send('GET', '/executions', { query: { limit, status, cursor } });
    return { executions: Array.isArray(data) ? data : [], next_cursor: nextCursor(headers.get('Link')) };
  }

  /** `GET /executions/{id}`. */
  getExecution(id) {
    return this.request('GET', `/executions/${encodeURIComponent(id)}`);
  }

  /** `GET /executions/{id}/logs`: a page of stored records after `afterSeq` and a WebSocket URL. */
  logs(id, afterSeq = 0, limit = 5000, signal) {
    return this.request('GET', `/executions/${encodeURIComponent(id)}/logs`, {
      query: { after_seq: afterSeq, limit },
      signal,
    });
  }

  /**
   * `DELETE /executions/{id}`: starts a kill. The answer's `status` is TERMINATING, or the
   * terminal status of an execution that had already finished.
   */
  kill(id) {
    return this.request('DELETE', `/executions/${encodeURIComponent(id)}`);
  }

  /** `GET /users/me`: the caller's own user (email, role). */
  me() {
    return this.request('GET', '/users/me');
  }

  /** `POST /run`. */
  run(req) {
    return this.request('POST', '/run', { body: req });
  }
}

const KEY = 'runvoy.session';

/** Reads the saved session (`{baseUrl, apiKey, remember}`) or null. */
export function loadSession() {
  for (const [store, remember] of [[sessionStorage, false], [localStorage, true]]) {
    try {
      const raw = store.getItem(KEY);
      if (!raw) continue;
      const s = JSON.parse(raw);
      if (s && s.apiKey && s.baseUrl) return { baseUrl: s.baseUrl, apiKey: s.apiKey, remember };
    } catch {
      // Ignore unreadable storage.
    }
  }
  return null;
}

/** Saves the session: in localStorage when `remember`, else only for this tab (sessionStorage). */
export function saveSession({ baseUrl, apiKey, remember }) {
  clearSession();
  const store = remember ? localStorage : sessionStorage;
  store.setItem(KEY, JSON.stringify({ baseUrl, apiKey }));
}

/** Forgets the session everywhere. */
export function clearSession() {
  try {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  } catch {
    // Storage may be disabled.
  }
}

/** Statuses after which an execution never changes. */
export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'STOPPED']);

/** Every status, in lifecycle order. */
export const STATUSES = ['STARTING', 'RUNNING', 'TERMINATING', 'SUCCEEDED', 'FAILED', 'STOPPED'];

/**
 * The `cursor` of the `rel="next"` target of a `Link` header, or null. Targets may contain
 * commas (`status=RUNNING,FAILED`), so links are found by their `<…>`.
 */
export function nextCursor(link) {
  if (!link) return null;
  const re = /<([^>]*)>([^<]*)/g;
  let m;
  while ((m = re.exec(link)) !== null) {
    if (!/(^|[;,])\s*rel="?next"?\s*([;,]|$)/.test(m[2])) continue;
    try {
      return new URL(m[1], 'http://base').searchParams.get('cursor');
    } catch {
      return null;
    }
  }
  return null;
}
