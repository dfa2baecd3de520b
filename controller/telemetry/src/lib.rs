//! Traces of runs over OTLP: the spans `tektite_engine::trace` computes
//! from run records, sent with OpenTelemetry's OTLP exporter over
//! HTTP (protobuf or JSON) or gRPC.
//!
//! Configured the OpenTelemetry way, by the environment
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `…_PROTOCOL`, `…_HEADERS`, `…_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_EXPORTER`,
//! `OTEL_SDK_DISABLED`), over which the controller's `config-defaults`
//! may set the endpoint and protocol ([`Settings`]).
//!
//! A trace's spans are built from what the runs recorded once they ended,
//! with their own times and ids: nothing is held open while a run goes on,
//! and an exporter that is down or slow costs a warning, never a run.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tektite_engine::trace::{Span, Value};

#[cfg(feature = "receiver")]
pub mod receiver;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318; the default).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

impl Protocol {
    /// The protocol named as OpenTelemetry names it.
    ///
    /// # Errors
    /// Not one of `grpc`, `http/protobuf`, `http/json`.
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            _ => Err(format!(
                "expected grpc, http/protobuf or http/json, got {text:?}"
            )),
        }
    }
}

/// Where and how to send spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`: HTTP
    /// appends `/v1/traces`), set by configuration over the environment's;
    /// `None`: the environment's, else OpenTelemetry's default
    /// (`http://localhost:4318`, or `:4317` for gRPC).
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// The service name when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` gives one.
    pub service_name: String,
    /// How long one export may take.
    pub timeout: Duration,
}

/// The environment's say on traces, read through `env` (the process's
/// environment in [`Settings::from_env`]; a map in tests).
///
/// Traces are on when an OTLP endpoint is set
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`)
/// or `OTEL_TRACES_EXPORTER` is `otlp`; off when `OTEL_TRACES_EXPORTER` is
/// `none` or `OTEL_SDK_DISABLED` is `true`.
///
/// # Errors
/// A protocol or exporter that is not one OpenTelemetry names, or a
/// timeout that is not milliseconds (naming the variable).
pub fn settings_from(
    env: impl Fn(&str) -> Option<String>,
    service_name: &str,
) -> Result<Option<Settings>, String> {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let exporter = get("OTEL_TRACES_EXPORTER");
    match exporter.as_deref() {
        Some("none") => return Ok(None),
        None | Some("otlp") => {}
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER: expected otlp or none, got {other:?}"
            ));
        }
    }
    if signal(get, "ENDPOINT").is_none() && exporter.is_none() {
        return Ok(None);
    }
    let protocol = match signal(get, "PROTOCOL") {
        Some((var, p)) => Protocol::parse(&p).map_err(|e| format!("{var}: {e}"))?,
        None => Protocol::HttpProtobuf,
    };
    let timeout = match signal(get, "TIMEOUT") {
        Some((var, t)) => Duration::from_millis(
            t.parse::<u64>()
                .map_err(|_| format!("{var}: expected a number of milliseconds, got {t:?}"))?,
        ),
        None => Duration::from_secs(10),
    };
    Ok(Some(Settings {
        endpoint: None,
        protocol,
        service_name: service_name.to_string(),
        timeout,
    }))
}

/// An OTLP exporter setting for traces, `OTEL_EXPORTER_OTLP_TRACES_<name>`
/// over `OTEL_EXPORTER_OTLP_<name>`, through `get`: the variable that set
/// it, and its value.
fn signal(get: impl Fn(&str) -> Option<String>, name: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{name}"),
        format!("OTEL_EXPORTER_OTLP_{name}"),
    ]
    .into_iter()
    .find_map(|var| get(&var).map(|v| (var, v)))
}

/// A variable of the process's environment, trimmed; `None` when empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Settings {
    /// [`settings_from`] the process's environment.
    ///
    /// # Errors
    /// See [`settings_from`].
    pub fn from_env(service_name: &str) -> Result<Option<Settings>, String> {
        settings_from(env_var, service_name)
    }

    /// Whether the endpoint in force (configured, else the environment's)
    /// is HTTPS.
    fn https(&self) -> bool {
        self.endpoint
            .clone()
            .or_else(|| signal(env_var, "ENDPOINT").map(|(_, e)| e))
            .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("https://"))
    }

    /// The endpoint the exporter is given: a configured base URL with
    /// `/v1/traces` for HTTP, as OpenTelemetry treats
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    fn exporter_endpoint(&self) -> Option<String> {
        let base = self.endpoint.as_deref()?;
        Some(match self.protocol {
            Protocol::Grpc => base.to_string(),
            _ => format!("{}/v1/traces", base.trim_end_matches('/')),
        })
    }
}

/// The resource of every span: the environment's (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service_name` when it names none.
fn resource(service_name: &str) -> Resource {
    // The builder's detectors read both variables.
    let named = env_var("OTEL_SERVICE_NAME").is_some()
        || env_var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_string()).build()
    }
}

/// An OTLP span exporter for [`Settings`].
#[derive(Debug)]
pub struct Exporter {
    inner: opentelemetry_otlp::SpanExporter,
    timeout: Duration,
}

impl Exporter {
    /// An exporter for `settings`. Call it within a tokio runtime (gRPC
    /// connects lazily on it).
    ///
    /// # Errors
    /// The endpoint is not a URL, or the TLS roots cannot be read.
    pub fn new(settings: &Settings) -> Result<Exporter, String> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let endpoint = settings.exporter_endpoint();
        let built = match settings.protocol {
            Protocol::Grpc => {
                let mut b = builder
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .with_timeout(settings.timeout);
                if settings.https() {
                    // Checked against the system's roots.
                    let tls = opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_native_roots();
                    b = b.with_tls_config(tls);
                }
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                b.build()
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let protocol = if settings.protocol == Protocol::HttpJson {
                    opentelemetry_otlp::Protocol::HttpJson
                } else {
                    opentelemetry_otlp::Protocol::HttpBinary
                };
                let mut b = builder
                    .with_http()
                    .with_protocol(protocol)
                    .with_timeout(settings.timeout)
                    .with_http_client(http_client(settings.timeout)?);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                b.build()
            }
        };
        let mut inner = built.map_err(|e| format!("OTLP exporter: {e}"))?;
        inner.set_resource(&resource(&settings.service_name));
        Ok(Exporter {
            inner,
            timeout: settings.timeout,
        })
    }

    /// Sends the sampled ones of `spans`; returns how many were sent.
    ///
    /// # Errors
    /// The collector could not be reached, refused the spans, or did not
    /// answer within the timeout.
    pub async fn export(&self, spans: &[Span]) -> Result<usize, String> {
        let batch: Vec<SpanData> = spans.iter().filter(|s| s.sampled).map(span_data).collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        let bound = self.timeout + Duration::from_secs(1);
        match tokio::time::timeout(bound, self.inner.export(batch)).await {
            Ok(Ok(())) => Ok(n),
            Ok(Err(e)) => Err(format!("OTLP export failed: {e}")),
            Err(_) => Err(format!(
                "OTLP export failed: no answer within {} ms",
                bound.as_millis()
            )),
        }
    }
}

/// The HTTP client: hyper, plain or TLS (the system's roots).
fn http_client(timeout: Duration) -> Result<impl opentelemetry_http::HttpClient, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| format!("OTLP exporter: TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

/// Exports `spans` from a thread with no runtime (`tkt`): on a runtime of
/// its own, within the settings' timeout and a second.
///
/// # Errors
/// See [`Exporter::new`] and [`Exporter::export`].
pub fn export_blocking(settings: &Settings, spans: &[Span]) -> Result<usize, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let sent = rt.block_on(async {
        let exporter = Exporter::new(settings)?;
        exporter.export(spans).await
    });
    // Nothing left behind waits: a DNS lookup that hangs on a blocking
    // thread does not hold `tkt` past the export's time.
    rt.shutdown_timeout(Duration::ZERO);
    sent
}

fn system_time(t: tektite_engine::trace::Timestamp) -> SystemTime {
    SystemTime::from(t)
}

/// A span as OpenTelemetry's SDK records one.
pub fn span_data(span: &Span) -> SpanData {
    let flags = if span.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let (parent, remote) = span
        .parent
        .map_or((SpanId::INVALID, false), |(id, remote)| {
            (SpanId::from_bytes(id), remote)
        });
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            flags,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: remote,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(span.name.clone()),
        start_time: system_time(span.start),
        end_time: system_time(span.end),
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| match v {
                Value::Str(s) => KeyValue::new(*k, s.clone()),
                Value::Int(i) => KeyValue::new(*k, *i),
                Value::Bool(b) => KeyValue::new(*k, *b),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &span.error {
            Some(m) => Status::error(m.clone()),
            None => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("tektite")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

/// Spans queued for the background exporter.
const QUEUE: usize = 4096;

enum Message {
    Configure(Option<Settings>),
    Spans(Vec<Span>),
}

/// The controller's exporter: a task on the controller's runtime that
/// sends the spans handed to it, so that no reconcile waits on a
/// collector. A full queue (a collector slower than the runs) drops spans
/// with a warning.
#[derive(Debug, Clone)]
pub struct Traces {
    tx: tokio::sync::mpsc::Sender<Message>,
    /// When spans were last dropped with a warning.
    dropped: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Configure(s) => write!(f, "Configure({s:?})"),
            Message::Spans(s) => write!(f, "Spans({})", s.len()),
        }
    }
}

impl Traces {
    /// Starts the exporter task (within a tokio runtime) with `settings`.
    pub fn start(settings: Option<Settings>) -> Traces {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(run(rx, settings));
        Traces {
            tx,
            dropped: std::sync::Arc::default(),
        }
    }

    /// Puts `settings` in force for the spans sent from now on (`None`:
    /// traces off).
    pub fn configure(&self, settings: Option<Settings>) {
        // A full queue still takes the new settings, in order.
        let tx = self.tx.clone();
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(m)) =
            self.tx.try_send(Message::Configure(settings))
        {
            tokio::spawn(async move { tx.send(m).await });
        }
    }

    /// Hands `spans` to the exporter.
    pub fn send(&self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        if self.tx.try_send(Message::Spans(spans)).is_err()
            && let Ok(mut last) = self.dropped.lock()
        {
            warn_now_and_then(
                &mut last,
                "the exporter's queue is full: a run's spans were dropped",
            );
        }
    }
}

/// The exporter task: rebuilds its exporter when the settings change,
/// and exports what it is sent in batches of what has queued up.
async fn run(mut rx: tokio::sync::mpsc::Receiver<Message>, mut settings: Option<Settings>) {
    let mut exporter: Option<Exporter> = None;
    let mut last_warning: Option<std::time::Instant> = None;
    // The runs whose spans were sent, by their root span: a reconcile that
    // works from a stale cache may end a run twice, and its spans go once.
    let mut sent = tektite_engine::recent::Recent::default();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Message::Configure(s) => {
                    if s != settings {
                        settings = s;
                        exporter = None;
                    }
                }
                Message::Spans(s) => {
                    let root = s.first().map(|r| (r.trace_id, r.span_id));
                    if root.is_some_and(|id| sent.first(id)) {
                        batch.extend(s);
                    }
                }
            }
            if batch.len() < 512 {
                next = rx.try_recv().ok();
            }
        }
        let Some(s) = settings.as_ref() else {
            continue;
        };
        if batch.is_empty() {
            continue;
        }
        if exporter.is_none() {
            match Exporter::new(s) {
                Ok(e) => exporter = Some(e),
                Err(e) => {
                    warn_now_and_then(&mut last_warning, &e);
                    continue;
                }
            }
        }
        if let Some(e) = exporter.as_ref()
            && let Err(error) = e.export(&batch).await
        {
            warn_now_and_then(&mut last_warning, &error);
        }
    }
}

/// A warning at most once a minute: a collector that is down would
/// otherwise fill the log.
fn warn_now_and_then(last: &mut Option<std::time::Instant>, error: &str) {
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(%error, "spans not exported (warned at most once a minute)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_environment_turns_traces_on_and_picks_the_protocol() {
        assert_eq!(settings_from(env(&[]), "tkt"), Ok(None));
        let on = settings_from(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
            "tkt",
        )
        .expect("valid")
        .expect("on");
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        assert_eq!(on.timeout, Duration::from_secs(10));
        let grpc = settings_from(
            env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            "tkt",
        )
        .expect("valid")
        .expect("on");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.timeout, Duration::from_millis(2500));
        assert!(
            settings_from(env(&[("OTEL_TRACES_EXPORTER", "otlp")]), "tkt")
                .expect("valid")
                .is_some()
        );
        for off in [
            [("OTEL_TRACES_EXPORTER", "none")],
            [("OTEL_SDK_DISABLED", "true")],
        ] {
            let mut pairs = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
            pairs.extend(off);
            assert_eq!(settings_from(env(&pairs), "tkt"), Ok(None));
        }
    }

    #[test]
    fn bad_settings_name_the_variable_and_what_was_expected() {
        let e = |pairs: &[(&str, &str)]| {
            let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
            all.extend_from_slice(pairs);
            settings_from(env(&all), "tkt").expect_err("invalid")
        };
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc, http/protobuf or http/json, got \"udp\""
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")]),
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: expected a number of milliseconds, got \"10s\""
        );
        assert_eq!(
            e(&[("OTEL_TRACES_EXPORTER", "jaeger")]),
            "OTEL_TRACES_EXPORTER: expected otlp or none, got \"jaeger\""
        );
    }

    /// Regression: the exporter was built without TLS, and refused a gRPC
    /// endpoint over HTTPS.
    #[test]
    fn grpc_over_https_is_not_refused_for_want_of_tls() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let settings = Settings {
            endpoint: Some("https://127.0.0.1:1".into()),
            protocol: Protocol::Grpc,
            service_name: "x".into(),
            timeout: Duration::from_secs(1),
        };
        let built = rt.block_on(async { Exporter::new(&settings).map(|_| ()) });
        assert_eq!(built, Ok(()));
    }

    #[test]
    fn a_configured_base_endpoint_gets_the_traces_path_over_http_only() {
        let mut s = Settings {
            endpoint: Some("http://collector:4318/".into()),
            protocol: Protocol::HttpProtobuf,
            service_name: "x".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            s.exporter_endpoint().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        s.protocol = Protocol::Grpc;
        s.endpoint = Some("http://collector:4317".into());
        assert_eq!(
            s.exporter_endpoint().as_deref(),
            Some("http://collector:4317")
        );
    }
}
