//! JSON log lines in Cloud Logging's structured format: `severity`, `message`, `time`, and every
//! event and span field (request_id, user, route, …) at the top level, so Cloud Logging indexes
//! them and `jsonPayload.request_id` filters work.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as Cloud Logging structured JSON lines.
pub struct CloudLogging;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0
            .insert(f.name().to_owned(), Value::from(format!("{v:?}")));
    }
}

fn severity(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S> FormatEvent<S, JsonFields> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut m = Map::new();
        // Span fields first (outermost to innermost), so event fields win on a name clash.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(f)
                {
                    m.extend(o);
                }
            }
        }
        event.record(&mut Fields(&mut m));
        let meta = event.metadata();
        m.insert("severity".into(), severity(meta.level()).into());
        m.insert(
            "time".into(),
            runvoy_domain::clock::rfc3339(runvoy_domain::clock::now_ms()).into(),
        );
        m.insert("target".into(), meta.target().into());
        if !m.contains_key("message") {
            m.insert("message".into(), Value::from(""));
        }
        writeln!(w, "{}", Value::Object(m))
    }
}
