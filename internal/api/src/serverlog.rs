//! The server's own log store for `GET /trace/{request_id}`.
//!
//! [`ServerLogLayer`] is a `tracing` layer that turns every event emitted inside a request span
//! (one carrying `request_id`) into a JSON line `{time, level, message, request_id, user, route,
//! …fields}` and hands it to [`write_server_logs`], which appends batches to the store and keeps
//! only the newest lines. Events outside requests are not kept. The request span never holds a
//! key, token or raw path (see [`crate::auth::request_id`]), so neither do these lines.

use std::sync::Arc;

use runvoy_domain::clock::{now_ms, rfc3339};
use runvoy_domain::ports::{ServerLogLine, Store};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines waiting to be written; beyond this, new lines are dropped rather than slow requests.
const QUEUE: usize = 10_000;
/// Lines per store write.
const BATCH: usize = 500;

/// The request fields of a span, kept in its extensions.
#[derive(Debug, Default, Clone)]
struct RequestFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// Captures request-scoped events; see the module docs.
pub struct ServerLogLayer {
    tx: mpsc::Sender<ServerLogLine>,
}

/// The receiving end of a [`ServerLogLayer`], consumed by [`write_server_logs`].
pub struct ServerLogQueue(mpsc::Receiver<ServerLogLine>);

/// A layer and the queue its lines arrive on.
pub fn server_log_layer() -> (ServerLogLayer, ServerLogQueue) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (ServerLogLayer { tx }, ServerLogQueue(rx))
}

impl<S> tracing_subscriber::Layer<S> for ServerLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if fields.contains_key("request_id")
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(RequestFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<RequestFields>()
        {
            values.record(&mut JsonVisitor(&mut f.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let mut request = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(f) = span.extensions().get::<RequestFields>() {
                    request = Some(f.0.clone());
                    break;
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let request_id = fields
            .get("request_id")
            .or_else(|| request.as_ref().and_then(|r| r.get("request_id")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(request_id) = request_id else {
            return;
        };
        let ts = now_ms();
        line.insert("time".into(), rfc3339(ts).into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert(
            "message".into(),
            fields
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        line.insert("target".into(), event.metadata().target().into());
        if let Some(r) = request {
            for (k, v) in r {
                line.entry(k).or_insert(v);
            }
        }
        for (k, v) in fields {
            line.insert(k, v);
        }
        let _ = self.tx.try_send(ServerLogLine {
            ts_ms: ts,
            request_id,
            line: Value::Object(line).to_string(),
        });
    }
}

/// Appends queued lines to the store in batches, keeping the newest `keep`; runs until every
/// [`ServerLogLayer`] is gone.
pub async fn write_server_logs(queue: ServerLogQueue, store: Arc<dyn Store>, keep: u64) {
    let mut rx = queue.0;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Errors are not logged here: this task runs outside requests, and a store outage is
        // already reported by the requests that hit it.
        let _ = store.append_server_logs(&batch, keep).await;
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_request_events_only_with_their_span_fields() {
        let (layer, mut queue) = server_log_layer();
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("outside any request");
            let span = tracing::info_span!(
                "request",
                request_id = "req-12345678",
                route = tracing::field::Empty,
                user = tracing::field::Empty
            );
            let _g = span.enter();
            span.record("user", "a@b.c");
            span.record("route", "/api/v1/run");
            tracing::warn!(execution_id = "e1", "something happened");
        });
        let l = queue.0.try_recv().expect("one line");
        assert!(queue.0.try_recv().is_err(), "only request events are kept");
        assert_eq!(l.request_id, "req-12345678");
        let v: Value = serde_json::from_str(&l.line).unwrap();
        assert_eq!(v["message"], "something happened");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["user"], "a@b.c");
        assert_eq!(v["route"], "/api/v1/run");
        assert_eq!(v["execution_id"], "e1");
    }
}
