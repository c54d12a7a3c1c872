//! The SDK's own diagnostics as lines that say what happened.
//!
//! The SDK reports through `tracing` events (its `internal-logs`), most of them with their meaning
//! in fields (`name`, `error`) and no message: bunyan would write the crate's name as `msg`. And the
//! exporters are built before the service's subscriber exists, so what the SDK says while building
//! them (an unsupported `OTEL_EXPORTER_OTLP_COMPRESSION`, say) would reach no subscriber at all.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::callsite::{Callsite, Identifier};
use tracing::field::FieldSet;
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use crate::human::Fields;
use crate::subscriber::is_transport;

/// `msg` for an SDK or transport diagnostic that has no message: what failed (its event name) and
/// why (its `error`), as the CLI's readable lines say it. `None` for every other event.
pub(crate) fn missing_message(event: &Event<'_>) -> Option<String> {
    let meta = event.metadata();
    if !is_transport(meta.target()) || *meta.level() > Level::WARN {
        return None;
    }
    let fields = Fields::of(event);
    fields
        .message
        .is_empty()
        .then(|| fields.text(meta.target()))
}

/// Hands `layer` the event `event` would be with `message` as its message: same callsite details
/// (target, level, file, line), so the line still says where it came from, and same parent.
pub(crate) fn with_message<S, L>(layer: &L, event: &Event<'_>, message: &str, ctx: Context<'_, S>)
where
    S: Subscriber,
    L: Layer<S>,
{
    let meta = restated(event.metadata());
    let Some(field) = meta.fields().field("message") else {
        return;
    };
    let values = [(&field, Some(&message as &dyn tracing::Value))];
    let values = meta.fields().value_set(&values);
    let restated = if event.is_contextual() {
        Event::new(meta, &values)
    } else {
        Event::new_child_of(event.parent().cloned(), meta, &values)
    };
    layer.on_event(&restated, ctx);
}

/// A callsite like an SDK diagnostic's, with a `message` field: one per SDK callsite that ever
/// writes a line without a message, made once and kept (a few dozen at most).
struct Restated(OnceLock<Metadata<'static>>);

impl Callsite for Restated {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.0
            .get()
            .unwrap_or_else(|| unreachable!("set before it is handed out"))
    }
}

fn restated(original: &'static Metadata<'static>) -> &'static Metadata<'static> {
    static MADE: Mutex<Vec<(Identifier, &'static Metadata<'static>)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    let id = original.callsite();
    if let Some((_, meta)) = made.iter().find(|(made_for, _)| *made_for == id) {
        return meta;
    }
    let callsite: &'static Restated = Box::leak(Box::new(Restated(OnceLock::new())));
    let meta = callsite.0.get_or_init(|| {
        Metadata::new(
            original.name(),
            original.target(),
            *original.level(),
            original.file(),
            original.line(),
            original.module_path(),
            FieldSet::new(&["message"], Identifier(callsite)),
            Kind::EVENT,
        )
    });
    made.push((id, meta));
    meta
}

/// Runs `build` with a subscriber of its own that keeps the SDK's and the transport's warnings and
/// errors, one text each (their message, or what failed and why), for the service's subscriber to
/// write once it exists.
pub(crate) fn collected_while<T>(build: impl FnOnce() -> T) -> (T, Vec<String>) {
    let said = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Collect(Arc::clone(&said)));
    let built = tracing::subscriber::with_default(subscriber, build);
    let said = std::mem::take(&mut *said.lock().unwrap_or_else(PoisonError::into_inner));
    (built, said)
}

struct Collect(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if !is_transport(meta.target()) || *meta.level() > Level::WARN {
            return;
        }
        let fields = Fields::of(event);
        let text = if fields.message.is_empty() {
            fields.text(meta.target())
        } else {
            fields.message
        };
        // Each exporter reads the same variables: one line for what all three say.
        let mut said = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !said.contains(&text) {
            said.push(text);
        }
    }
}
