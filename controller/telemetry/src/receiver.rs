//! A test OTLP receiver on loopback (feature `receiver`): gRPC (the
//! collector's `TraceService`, served by tonic) and HTTP (`POST
//! /v1/traces`, protobuf or JSON bodies), decoding what it gets with the
//! `opentelemetry-proto` types and keeping the spans for a test to check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Attribute values as text.
    pub attributes: BTreeMap<String, String>,
    /// The status message of a span that failed.
    pub error: Option<String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The resource's attributes, as text.
    pub resource: BTreeMap<String, String>,
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: &'static str,
}

type Store = Arc<Mutex<Vec<Received>>>;

/// A running receiver; it stops with the test process.
#[derive(Debug)]
pub struct Receiver {
    /// The gRPC endpoint (`http://127.0.0.1:PORT`).
    pub grpc: String,
    /// The HTTP base endpoint (`http://127.0.0.1:PORT`).
    pub http: String,
    spans: Store,
}

impl Receiver {
    /// Starts both listeners on loopback, on a thread of their own.
    ///
    /// # Panics
    /// The listeners cannot bind.
    #[allow(clippy::expect_used)]
    pub fn start() -> Receiver {
        let spans: Store = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let store = spans.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let http = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addrs = (
                    grpc.local_addr().expect("addr"),
                    http.local_addr().expect("addr"),
                );
                tokio::spawn(serve_http(http, store.clone()));
                let service = TraceServiceServer::new(Grpc(store));
                let _ = tx.send(addrs);
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc))
                    .await;
            });
        });
        let (grpc, http): (SocketAddr, SocketAddr) = rx.recv().expect("the receiver started");
        Receiver {
            grpc: format!("http://{grpc}"),
            http: format!("http://{http}"),
            spans,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The spans once `done` holds for them, or what came within
    /// `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let until = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= until {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, &request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve_http(listener: tokio::net::TcpListener, store: Store) {
    while let Ok((stream, _)) = listener.accept().await {
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, hyper::Error>(answer(req, &store).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    store: &Store,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let status = |code: u16, body: &str| {
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )));
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
        r
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return status(404, "not found");
    }
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(body) = req.into_body().collect().await else {
        return status(400, "no body");
    };
    let body = body.to_bytes();
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    match decoded {
        Ok(request) => {
            keep(
                store,
                &request,
                if json { "http/json" } else { "http/protobuf" },
            );
            status(200, "")
        }
        Err(e) => status(400, &e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn keep(store: &Store, request: &ExportTraceServiceRequest, protocol: &'static str) {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource: BTreeMap<String, String> = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .map(|a| (a.key.clone(), text(a.value.as_ref())))
            .collect();
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let error = span
                .status
                .as_ref()
                .filter(|s| s.code == 2)
                .map(|s| s.message.clone());
            out.push(Received {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name.clone(),
                start_unix_nano: span.start_time_unix_nano,
                end_unix_nano: span.end_time_unix_nano,
                attributes: span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a.value.as_ref())))
                    .collect(),
                error,
                service_name: service_name.clone(),
                resource: resource.clone(),
                protocol,
            });
        }
    }
    if let Ok(mut s) = store.lock() {
        s.extend(out);
    }
}
