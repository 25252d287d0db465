//! A fake of Cloud Logging's `entries.list` (`POST /v2/entries:list`), serving the entries a
//! [`LogStore`] holds.
//!
//! Request `{resourceNames[], filter, orderBy, pageSize, pageToken}`, answer `{entries[],
//! nextPageToken}` (cloud.google.com/logging/docs/reference/v2/rest/v2/entries/list). The filter
//! language is the subset runvoy sends: terms joined by `AND`, each `FIELD OP VALUE` with `OP`
//! one of `=`, `>`, `>=`, `<`, `<=`, a dotted field path (quoted segments allowed:
//! `labels."run.googleapis.com/execution_name"`) and a quoted string or a number. Anything else
//! is refused with `INVALID_ARGUMENT`, as the real service refuses a filter it cannot parse.
//! `resourceNames` is required; `orderBy` is `timestamp asc` (default) or `timestamp desc`;
//! `pageSize` is capped at 1000.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The entries the fake has "ingested".
#[derive(Clone, Default)]
pub struct LogStore {
    entries: Arc<Mutex<Vec<Value>>>,
}

impl LogStore {
    /// Ingests one entry.
    pub fn push(&self, entry: Value) {
        self.entries.lock().expect("log store").push(entry);
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("log store").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `entries.list` route.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v2/entries:list", axum::routing::post(list))
            .with_state(self.clone())
    }
}

fn error(http: StatusCode, status: &str, message: &str) -> Response {
    (
        http,
        Json(json!({"error": {"code": http.as_u16(), "message": message, "status": status}})),
    )
        .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone)]
struct Term {
    path: Vec<String>,
    op: Op,
    value: Value,
}

/// Parses the filter subset; the error is the message the service would give.
fn parse_filter(filter: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    if filter.trim().is_empty() {
        return Ok(terms);
    }
    for raw in split_and(filter)? {
        let raw = raw.trim();
        let (path_end, op, op_len) = find_op(raw).ok_or_else(|| unparsable(raw))?;
        let path = parse_path(raw[..path_end].trim()).ok_or_else(|| unparsable(raw))?;
        let v = raw[path_end + op_len..].trim();
        let value = if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Value::String(s.replace("\\\"", "\"").replace("\\\\", "\\"))
        } else if let Ok(n) = v.parse::<i64>() {
            json!(n)
        } else {
            return Err(unparsable(raw));
        };
        terms.push(Term { path, op, value });
    }
    Ok(terms)
}

fn unparsable(term: &str) -> String {
    format!("Unparseable filter: syntax error at or near {term:?}")
}

/// Splits on ` AND ` outside quotes.
fn split_and(filter: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut i) = (0, false, 0);
    let b = filter.as_bytes();
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            _ if !quoted && filter[i..].starts_with(" AND ") => {
                parts.push(&filter[start..i]);
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err("Unparseable filter: unterminated string".into());
    }
    parts.push(&filter[start..]);
    Ok(parts)
}

/// The first comparison operator outside quotes.
fn find_op(term: &str) -> Option<(usize, Op, usize)> {
    let b = term.as_bytes();
    let mut quoted = false;
    for i in 0..b.len() {
        match b[i] {
            b'"' => quoted = !quoted,
            b'>' | b'<' | b'=' if !quoted => {
                let eq = b.get(i + 1) == Some(&b'=');
                return Some(match (b[i], eq) {
                    (b'>', true) => (i, Op::Ge, 2),
                    (b'>', false) => (i, Op::Gt, 1),
                    (b'<', true) => (i, Op::Le, 2),
                    (b'<', false) => (i, Op::Lt, 1),
                    _ => (i, Op::Eq, 1),
                });
            }
            _ => {}
        }
    }
    None
}

/// `a.b."c.d/e"` → `["a", "b", "c.d/e"]`.
fn parse_path(p: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"')?;
            out.push(q[..end].to_owned());
            rest = &q[end + 1..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let seg = &rest[..end];
            if seg.is_empty() || !seg.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return None;
            }
            out.push(seg.to_owned());
            rest = &rest[end..];
        }
        rest = match rest.strip_prefix('.') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return None,
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    (!out.is_empty()).then_some(out)
}

fn matches(entry: &Value, t: &Term) -> bool {
    let mut v = entry;
    for seg in &t.path {
        match v.get(seg) {
            Some(x) => v = x,
            None => return false,
        }
    }
    match (&t.value, t.op) {
        (Value::String(want), Op::Eq) => v.as_str() == Some(want.as_str()),
        (Value::String(want), op) => v.as_str().is_some_and(|have| cmp(have.cmp(want), op)),
        (n, op) => match (v.as_i64(), n.as_i64()) {
            (Some(have), Some(want)) => cmp(have.cmp(&want), op),
            _ => false,
        },
    }
}

fn cmp(o: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
    }
}

async fn list(
    State(store): State<LogStore>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential.",
        );
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            );
        }
    };
    let known = [
        "resourceNames",
        "filter",
        "orderBy",
        "pageSize",
        "pageToken",
        "projectIds",
    ];
    if let Some(k) = req
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."),
        );
    }
    let resources: Vec<&str> = req["resourceNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if resources.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "resourceNames: at least one resource name is required",
        );
    }
    let terms = match parse_filter(req["filter"].as_str().unwrap_or("")) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &e),
    };
    let desc = match req["orderBy"].as_str().unwrap_or("timestamp asc") {
        "timestamp asc" | "timestamp" => false,
        "timestamp desc" => true,
        o => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("invalid orderBy {o:?}: only timestamp asc|desc"),
            );
        }
    };
    let size = req["pageSize"].as_u64().unwrap_or(50).clamp(1, 1000) as usize;
    let from = match req["pageToken"].as_str() {
        None | Some("") => 0,
        Some(t) => match t.strip_prefix("p").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "invalid page token",
                );
            }
        },
    };
    let mut hits: Vec<Value> = {
        let all = store.entries.lock().expect("log store");
        all.iter()
            .filter(|e| {
                let project = e["logName"]
                    .as_str()
                    .and_then(|l| l.strip_prefix("projects/"))
                    .and_then(|l| l.split('/').next())
                    .map(|p| format!("projects/{p}"));
                project.is_some_and(|p| resources.contains(&p.as_str()))
                    && terms.iter().all(|t| matches(e, t))
            })
            .cloned()
            .collect()
    };
    // RFC 3339 timestamps of one format sort as strings; the sort is stable, so entries of one
    // instant keep the order they were ingested in.
    hits.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    if desc {
        hits.reverse();
    }
    let to = (from + size).min(hits.len());
    let mut out = json!({"entries": hits[from.min(to)..to]});
    if to < hits.len() {
        out["nextPageToken"] = json!(format!("p{to}"));
    }
    Json(out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let e = json!({"logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            "labels": {"run.googleapis.com/execution_name": "j-abc"},
            "jsonPayload": {"exec": "x1", "seq": 5}});
        let f = r#"logName="projects/p/logs/run.googleapis.com%2Fstdout" AND labels."run.googleapis.com/execution_name"="j-abc" AND jsonPayload.exec="x1" AND jsonPayload.seq>4"#;
        let t = parse_filter(f).unwrap();
        assert!(t.iter().all(|t| matches(&e, t)));
        let t = parse_filter("jsonPayload.seq>5").unwrap();
        assert!(!matches(&e, &t[0]));
        let t = parse_filter(r#"jsonPayload.exec="a AND b""#).unwrap();
        assert_eq!(t.len(), 1);
        assert!(parse_filter("jsonPayload.seq").is_err());
        assert!(parse_filter("jsonPayload.exec=unquoted").is_err());
        assert!(parse_filter(r#"a..b="x""#).is_err());
    }
}
