//! The log archive on its two backends: a directory (a temp dir) and an
//! S3-compatible bucket (moto's S3 server on loopback, with signature
//! checking on: hack/s3-server.py, installed by hack/setup-s3.sh). Each
//! behaviour is checked on both, by the same code.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tektite_controller::logs::store::{Error, PodId, Progress, RunKey};
use tektite_controller::logs::{LogStore, S3, open};

fn run(pr: Option<(&str, &str)>, tr: &str, uid: &str) -> RunKey {
    RunKey {
        namespace: "ci".into(),
        pipelinerun: pr.map(|(n, u)| (n.to_string(), u.to_string())),
        taskrun: tr.into(),
        taskrun_uid: uid.into(),
    }
}

fn build() -> RunKey {
    run(Some(("release", "pr-uid-1")), "release-build", "tr-uid-1")
}

fn pod_id(name: &str, uid: &str) -> PodId {
    PodId {
        name: name.into(),
        uid: uid.into(),
    }
}

fn pod() -> PodId {
    pod_id("release-build-pod", "pod-uid-1")
}

/// The S3 server of one test, killed on drop.
struct S3Server(Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KEY_ID: &str = "AKIATEKTITETESTS";
const SECRET: &str = "tektite/test+secret";

fn s3_python() -> PathBuf {
    let p = std::env::var_os("TEKTITE_S3_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/tektite-s3/bin/python"));
    assert!(
        p.exists(),
        "{}: no python with moto's S3 server; run hack/setup-s3.sh (hack/test.sh does)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the S3 server with bucket `logs`; waits for it.
fn s3_server() -> (S3Server, String) {
    use std::io::BufRead;
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../hack/s3-server.py");
    let mut child = Command::new(s3_python())
        .args([script, &port.to_string(), KEY_ID, SECRET, "logs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hack/s3-server.py");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read the server's first line");
    assert!(line.starts_with("ready"), "s3-server.py said {line:?}");
    (S3Server(child), format!("http://127.0.0.1:{port}"))
}

fn s3_settings(endpoint: &str, secret: &str) -> S3 {
    S3 {
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".into(),
        keys: Some((KEY_ID.into(), secret.into())),
        token: None,
    }
}

/// Runs `check` on a directory store and on an S3 store.
async fn on_both<F, Fut>(check: F)
where
    F: Fn(LogStore, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    check(open(&url, &S3::default()).expect("file store"), "file").await;
    let (_server, endpoint) = s3_server();
    let store = open("s3://logs/tektite", &s3_settings(&endpoint, SECRET)).expect("s3 store");
    check(store, "s3").await;
}

#[tokio::test]
async fn parts_are_read_in_order_and_say_how_far_the_log_is_archived() {
    on_both(|store, backend| async move {
        let r = build();
        assert_eq!(
            store.progress(&r, &pod(), "step-a").await.unwrap(),
            Progress::Open(0),
            "{backend}"
        );
        store
            .append(&r, &pod(), "step-a", 0, b"one\ntwo\n")
            .await
            .unwrap();
        store
            .append(&r, &pod(), "step-a", 8, b"three\n")
            .await
            .unwrap();
        assert_eq!(
            store.progress(&r, &pod(), "step-a").await.unwrap(),
            Progress::Open(14),
            "{backend}"
        );
        let log = store.read(&r, &pod(), "step-a").await.unwrap();
        assert_eq!(log.as_deref(), Some(&b"one\ntwo\nthree\n"[..]), "{backend}");
        let listed = store.containers(&r).await.unwrap();
        assert_eq!(listed.len(), 1, "{backend}");
        assert!(!listed[0].complete, "{backend}: not sealed yet");
        assert_eq!(
            store.read(&r, &pod(), "step-b").await.unwrap(),
            None,
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn sealing_makes_one_object_ending_with_the_trailer() {
    on_both(|store, backend| async move {
        let r = build();
        store.append(&r, &pod(), "step-a", 0, b"a\n").await.unwrap();
        store.append(&r, &pod(), "step-a", 2, b"b\n").await.unwrap();
        store
            .seal(&r, &pod(), "step-a", b"[truncated]\n")
            .await
            .unwrap();
        assert_eq!(
            store.progress(&r, &pod(), "step-a").await.unwrap(),
            Progress::Sealed,
            "{backend}"
        );
        let log = store.read(&r, &pod(), "step-a").await.unwrap();
        assert_eq!(
            log.as_deref(),
            Some(&b"a\nb\n[truncated]\n"[..]),
            "{backend}"
        );
        let listed = store.containers(&r).await.unwrap();
        assert_eq!(listed.len(), 1, "{backend}: the parts are gone: {listed:?}");
        assert!(listed[0].complete, "{backend}");
        // Sealing again (a restarted archiver) changes nothing.
        store.seal(&r, &pod(), "step-a", b"").await.unwrap();
        let again = store.read(&r, &pod(), "step-a").await.unwrap();
        assert_eq!(again, log, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn regression_a_container_that_printed_nothing_read_as_a_corrupt_log() {
    on_both(|store, backend| async move {
        let r = build();
        store.seal(&r, &pod(), "step-quiet", b"").await.unwrap();
        let log = store.read(&r, &pod(), "step-quiet").await;
        assert_eq!(log.unwrap().as_deref(), Some(&b""[..]), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn two_archivers_writing_the_same_log_make_it_once() {
    // Two leaders for a moment, each with its own part boundaries.
    on_both(|store, backend| async move {
        let r = build();
        let log: Vec<u8> = (0..250u32).map(|i| b'a' + (i % 26) as u8).collect();
        for (s, e) in [(0, 100), (100, 250), (0, 120), (120, 250)] {
            store
                .append(&r, &pod(), "step-a", s, &log[s as usize..e as usize])
                .await
                .unwrap();
        }
        assert_eq!(
            store.progress(&r, &pod(), "step-a").await.unwrap(),
            Progress::Open(250),
            "{backend}"
        );
        let read = store.read(&r, &pod(), "step-a").await.unwrap();
        assert_eq!(read.as_deref(), Some(&log[..]), "{backend}");
        store.seal(&r, &pod(), "step-a", b"").await.unwrap();
        let sealed = store.read(&r, &pod(), "step-a").await.unwrap();
        assert_eq!(sealed.as_deref(), Some(&log[..]), "{backend}");
        // A part that starts inside another and goes past it.
        for (s, e) in [(0, 10), (10, 20), (10, 25), (25, 40)] {
            store
                .append(&r, &pod(), "step-b", s, &log[s as usize..e as usize])
                .await
                .unwrap();
        }
        let read = store.read(&r, &pod(), "step-b").await.unwrap();
        assert_eq!(read.as_deref(), Some(&log[..40]), "{backend}");
        store.seal(&r, &pod(), "step-b", b"").await.unwrap();
        let sealed = store.read(&r, &pod(), "step-b").await.unwrap();
        assert_eq!(sealed.as_deref(), Some(&log[..40]), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn a_log_longer_than_one_put_is_sealed_in_pieces() {
    on_both(|store, backend| async move {
        let r = build();
        // 12 MB that gzip cannot shrink (a xorshift stream), in 1 MB parts.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let log: Vec<u8> = (0..12_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for (i, chunk) in log.chunks(1_000_000).enumerate() {
            let at = (i * 1_000_000) as u64;
            store
                .append(&r, &pod(), "step-big", at, chunk)
                .await
                .unwrap();
        }
        store
            .seal(&r, &pod(), "step-big", b"the end\n")
            .await
            .unwrap();
        let read = store.read(&r, &pod(), "step-big").await.unwrap().unwrap();
        assert_eq!(read.len(), log.len() + 8, "{backend}");
        assert!(read[..log.len()] == log[..], "{backend}");
        assert!(read.ends_with(b"the end\n"), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn a_later_run_of_the_same_name_and_a_retry_never_mix_in() {
    on_both(|store, backend| async move {
        let first = build();
        let later = run(Some(("release", "pr-uid-2")), "release-build", "tr-uid-2");
        store
            .append(&first, &pod(), "step-a", 0, b"first\n")
            .await
            .unwrap();
        store
            .append(
                &first,
                &pod_id("release-build-pod-retry1", "pod-uid-2"),
                "step-a",
                0,
                b"retry\n",
            )
            .await
            .unwrap();
        assert_eq!(
            store.read(&later, &pod(), "step-a").await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.containers(&later).await.unwrap().is_empty(),
            "{backend}"
        );
        let mut pods: Vec<String> = store
            .containers(&first)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.pod)
            .collect();
        pods.dedup();
        assert_eq!(
            pods,
            ["release-build-pod", "release-build-pod-retry1"],
            "{backend}"
        );
        // The pod deleted and made again under its name: another log.
        let again = pod_id("release-build-pod", "pod-uid-3");
        assert_eq!(
            store.read(&first, &again, "step-a").await.unwrap(),
            None,
            "{backend}"
        );
        store
            .append(&first, &again, "step-a", 0, b"again\n")
            .await
            .unwrap();
        let listed = store.containers(&first).await.unwrap();
        let order: Vec<&str> = listed.iter().map(|a| a.pod_uid.as_str()).collect();
        assert_eq!(order, ["pod-uid-1", "pod-uid-3", "pod-uid-2"], "{backend}");
        let retry = store
            .read(
                &first,
                &pod_id("release-build-pod-retry1", "pod-uid-2"),
                "step-a",
            )
            .await
            .unwrap();
        assert_eq!(retry.as_deref(), Some(&b"retry\n"[..]), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn the_sweep_deletes_runs_gone_and_runs_past_retention_only() {
    on_both(|store, backend| async move {
        let kept = build();
        let gone = run(Some(("old", "pr-uid-9")), "old-build", "tr-uid-9");
        let alone = run(None, "lone", "tr-uid-5");
        for r in [&kept, &gone, &alone] {
            store.append(r, &pod(), "step-a", 0, b"x\n").await.unwrap();
        }
        let live = |uid: &str| uid == "pr-uid-1" || uid == "tr-uid-5";
        // Within the grace nothing goes, gone or not.
        let none = store
            .sweep(&live, None, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(none.is_empty(), "{backend}: {none:?}");
        let deleted = store.sweep(&live, None, Duration::ZERO).await.unwrap();
        assert_eq!(deleted, ["ci/old/pr-uid-9"], "{backend}");
        assert_eq!(
            store.read(&gone, &pod(), "step-a").await.unwrap(),
            None,
            "{backend}"
        );
        assert!(
            store.read(&kept, &pod(), "step-a").await.unwrap().is_some(),
            "{backend}"
        );
        // Past retention, live runs go too (a standalone TaskRun by its uid).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut expired = store
            .sweep(&live, Some(Duration::from_millis(500)), Duration::ZERO)
            .await
            .unwrap();
        expired.sort();
        assert_eq!(
            expired,
            ["ci/-/tr-uid-5", "ci/release/pr-uid-1"],
            "{backend}"
        );
        assert_eq!(
            store.read(&kept, &pod(), "step-a").await.unwrap(),
            None,
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn names_that_are_not_kubernetes_names_are_refused_before_any_write() {
    on_both(|store, backend| async move {
        for (r, pod, container) in [
            (run(None, "..", "u1"), pod(), "step-a"),
            (run(None, "a/b", "u1"), pod(), "step-a"),
            (run(None, "Build", "u1"), pod(), "step-a"),
            (build(), pod_id("..", "u"), "step-a"),
            (build(), pod_id("p", "u_v"), "step-a"),
            (build(), pod(), "../../etc"),
            (build(), pod(), ""),
        ] {
            let e = store
                .append(&r, &pod, container, 0, b"x")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Name { .. }), "{backend}: {e}");
        }
        let everything = store.sweep(&|_| false, None, Duration::ZERO).await.unwrap();
        assert!(everything.is_empty(), "{backend}: written: {everything:?}");
    })
    .await;
}

#[tokio::test]
async fn the_directory_store_keeps_its_keys_beneath_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = open(&format!("file://{}", root.display()), &S3::default()).unwrap();
    store
        .append(&build(), &pod(), "step-a", 0, b"x\n")
        .await
        .unwrap();
    store.seal(&build(), &pod(), "step-a", b"").await.unwrap();
    let file = root.join(
        "ci/release/pr-uid-1/release-build/tr-uid-1/release-build-pod_pod-uid-1/step-a.log.gz",
    );
    assert!(file.is_file(), "{} missing", file.display());
    let mut all = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.push(p);
            }
        }
    }
    assert_eq!(all, [file]);
}

#[tokio::test]
async fn s3_requests_signed_with_a_wrong_secret_are_refused() {
    let (_server, endpoint) = s3_server();
    let store = open("s3://logs", &s3_settings(&endpoint, "not-the-secret")).unwrap();
    let e = store
        .append(&build(), &pod(), "step-a", 0, b"x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("log store"), "{e}");
    let good = open("s3://logs", &s3_settings(&endpoint, SECRET)).unwrap();
    assert_eq!(good.read(&build(), &pod(), "step-a").await.unwrap(), None);
}

#[test]
fn archive_urls_are_checked() {
    for (url, want) in [
        ("file://relative/dir", "expected file:///ABSOLUTE/DIR"),
        ("s3://", "expected s3://BUCKET[/PREFIX]"),
        (
            "gs://bucket",
            "expected file:///DIR or s3://BUCKET[/PREFIX]",
        ),
    ] {
        let e = open(url, &S3::default()).unwrap_err().to_string();
        assert!(e.contains(want), "{url}: {e}");
    }
}
