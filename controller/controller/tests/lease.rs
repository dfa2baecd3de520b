//! Leader election against a mocked API server: each scenario checks the
//! calls (method, path, body) a step makes and where it leaves the replica.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tektite_controller::lease::{Config, Standing, step};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/tektite/leases";

fn cfg() -> Config {
    Config {
        name: "tektite-controller".into(),
        namespace: "tektite".into(),
        identity: "pod-a".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tektite-controller", "namespace": "tektite", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": "2026-11-27T09:00:00.000000Z", "renewTime": renewed,
                 "leaseTransitions": transitions}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found", "metadata": {}})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified", "metadata": {}})
}

/// Expected calls: method, path, a check of the body, the answer.
type Expect = (&'static str, String, fn(&Value), u16, Value);

async fn serve(mut handle: Handle, calls: Vec<Expect>) {
    for (method, path, check, status, answer) in calls {
        let (req, send) = handle
            .next_request()
            .await
            .expect("an expected call never came");
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            (method, path.as_str())
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        check(&body);
        let answer = if answer.is_null() { body } else { answer };
        send.send_response(
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
    }
    assert!(
        handle.next_request().await.is_none(),
        "a call that was not expected"
    );
}

async fn scenario(calls: Vec<Expect>) -> Standing {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, calls));
    let api: Api<Lease> = Api::namespaced(Client::new(svc, "tektite"), "tektite");
    let out = tokio::time::timeout(Duration::from_secs(5), step(&api, &cfg(), now()))
        .await
        .unwrap()
        .unwrap();
    drop(api);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    out
}

fn none(_: &Value) {}

#[tokio::test]
async fn no_lease_yet_creates_it_and_leads() {
    let out = scenario(vec![
        (
            "GET",
            format!("{PATH}/tektite-controller"),
            none,
            404,
            not_found(),
        ),
        (
            "POST",
            PATH.to_string(),
            |b| {
                assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                assert_eq!(b["spec"]["leaseTransitions"], 0);
            },
            201,
            Value::Null,
        ),
    ])
    .await;
    assert_eq!(out, Standing::Leader);
}

#[tokio::test]
async fn our_lease_is_renewed_with_its_resource_version() {
    let out = scenario(vec![
        (
            "GET",
            format!("{PATH}/tektite-controller"),
            none,
            200,
            lease("pod-a", "2026-11-27T09:59:55.000000Z", 2),
        ),
        (
            "PUT",
            format!("{PATH}/tektite-controller"),
            |b| {
                assert_eq!(b["metadata"]["resourceVersion"], "7");
                assert_eq!(b["spec"]["renewTime"], "2026-11-27T10:00:00.000000Z");
                assert_eq!(b["spec"]["acquireTime"], "2026-11-27T09:00:00.000000Z");
                assert_eq!(b["spec"]["leaseTransitions"], 2);
            },
            200,
            Value::Null,
        ),
    ])
    .await;
    assert_eq!(out, Standing::Leader);
}

#[tokio::test]
async fn a_lease_held_by_another_is_left_alone() {
    let out = scenario(vec![(
        "GET",
        format!("{PATH}/tektite-controller"),
        none,
        200,
        lease("pod-b", "2026-11-27T09:59:50.000000Z", 1),
    )])
    .await;
    assert_eq!(out, Standing::Follower(Some("pod-b".into())));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let out = scenario(vec![
        (
            "GET",
            format!("{PATH}/tektite-controller"),
            none,
            200,
            lease("pod-b", "2026-11-27T09:59:30.000000Z", 1),
        ),
        (
            "PUT",
            format!("{PATH}/tektite-controller"),
            |b| {
                assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                assert_eq!(b["spec"]["leaseTransitions"], 2);
                assert_eq!(b["spec"]["acquireTime"], "2026-11-27T10:00:00.000000Z");
            },
            200,
            Value::Null,
        ),
    ])
    .await;
    assert_eq!(out, Standing::Leader);
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_follows() {
    let out = scenario(vec![
        (
            "GET",
            format!("{PATH}/tektite-controller"),
            none,
            200,
            lease("pod-b", "2026-11-27T09:59:30.000000Z", 1),
        ),
        (
            "PUT",
            format!("{PATH}/tektite-controller"),
            none,
            409,
            conflict(),
        ),
    ])
    .await;
    assert_eq!(out, Standing::Follower(Some("pod-b".into())));
}
