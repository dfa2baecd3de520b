//! The tests' HTTP client for the fake API server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tektite_devcluster::apiserver::ApiServer;

/// `method path` with a `body` of `content_type` (none when null): status
/// and JSON body.
pub async fn call_as(
    api: &ApiServer,
    (method, path): (&str, &str),
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let addr = api.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(body).unwrap())
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", content_type)
        .body(Full::new(bytes))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&body).unwrap())
}
