//! The real `entrypoint` binary in temporary directories.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_entrypoint");

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("ep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn p(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    spawn(args).wait_with_output().unwrap()
}

fn report(dir: &str) -> Value {
    serde_json::from_slice(&std::fs::read(Path::new(dir).join("report.json")).unwrap()).unwrap()
}

/// Waits (bounded) for a condition that another process makes true.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Steps all launched at once run strictly in marker order.
#[test]
fn steps_launched_together_run_in_order() {
    let d = Dir::new("order");
    let log = d.p("log");
    let n = 8;
    let mut children = Vec::new();
    // Launch in reverse, so start order cannot explain the result.
    for i in (0..n).rev() {
        let wait = if i == 0 {
            String::new()
        } else {
            d.p(&format!("run/{}/out", i - 1))
        };
        let post = d.p(&format!("run/{i}/out"));
        let meta = d.p(&format!("run/{i}/status"));
        let script = format!("echo {i} >> {log}");
        let mut args = vec![
            "-post_file",
            &post,
            "-step_metadata_dir",
            &meta,
            "-termination_path",
            "",
        ];
        if !wait.is_empty() {
            args.extend(["-wait_file", &wait]);
        }
        args.extend(["--", "sh", "-c", &script]);
        children.push(spawn(&args));
    }
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    let order: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(order, expected);
    for i in 0..n {
        assert!(Path::new(&d.p(&format!("run/{i}/out"))).exists());
        assert_eq!(
            std::fs::read_to_string(d.p(&format!("run/{i}/status/exitCode"))).unwrap(),
            "0"
        );
    }
}

#[test]
fn failure_propagates_its_code_and_skips_the_next_step() {
    let d = Dir::new("skip");
    let (out0, meta0, out1, meta1, ran) = (
        d.p("run/0/out"),
        d.p("run/0/status"),
        d.p("run/1/out"),
        d.p("run/1/status"),
        d.p("ran"),
    );
    let o = run(&[
        "-post_file",
        &out0,
        "-step_metadata_dir",
        &meta0,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        "exit 42",
    ]);
    assert_eq!(o.status.code(), Some(42));
    assert!(Path::new(&format!("{out0}.err")).exists());
    assert!(!Path::new(&out0).exists());
    assert_eq!(
        std::fs::read_to_string(format!("{meta0}/exitCode")).unwrap(),
        "42"
    );
    let r = report(&meta0);
    assert_eq!(
        (r["exitCode"].as_i64(), r["reason"].as_str()),
        (Some(42), Some("Error"))
    );
    assert_eq!(r["message"], "the command exited with code 42");

    let touch = format!("touch {ran}");
    let o = run(&[
        "-wait_file",
        &out0,
        "-post_file",
        &out1,
        "-step_metadata_dir",
        &meta1,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    assert_eq!(
        o.status.code(),
        Some(243),
        "skipped steps use the entrypoint's own code"
    );
    assert!(
        !Path::new(&ran).exists(),
        "a skipped step does not run its command"
    );
    assert!(
        Path::new(&format!("{out1}.err")).exists(),
        "the skip passes on to the next step"
    );
    let r = report(&meta1);
    assert_eq!(r["reason"], "Skipped");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not run: a previous step failed"));
}

#[test]
fn on_error_continue_and_stop_and_fail() {
    let d = Dir::new("onerror");
    let (out, meta) = (d.p("out"), d.p("status"));
    let o = run(&[
        "-on_error",
        "continue",
        "-post_file",
        &out,
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(0), "the container succeeds");
    assert!(Path::new(&out).exists(), "the next step runs");
    let r = report(&meta);
    assert_eq!(
        (r["exitCode"].as_i64(), r["reason"].as_str()),
        (Some(3), Some("Continued"))
    );
    assert_eq!(
        std::fs::read_to_string(format!("{meta}/exitCode")).unwrap(),
        "3",
        "the real code is recorded"
    );

    let (out2, meta2) = (d.p("out2"), d.p("status2"));
    let o = run(&[
        "-on_error",
        "stopAndFail",
        "-post_file",
        &out2,
        "-step_metadata_dir",
        &meta2,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(Path::new(&format!("{out2}.err")).exists());
}

fn alive(pid: &str) -> bool {
    // A zombie has ended; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        state != "Z" && state != "X"
    })
}

#[test]
fn timeout_stops_the_whole_group_including_grandchildren() {
    let d = Dir::new("timeout");
    let (out, meta, pidfile) = (d.p("out"), d.p("status"), d.p("pid"));
    // The grandchild ignores nothing, but outlives the step if not killed.
    let script = format!("sleep 300 & echo $! > {pidfile}; wait");
    let o = run(&[
        "-timeout",
        "300ms",
        "-grace_period",
        "200ms",
        "-post_file",
        &out,
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(o.status.code(), Some(246));
    let r = report(&meta);
    assert_eq!(r["reason"], "TimeoutExceeded");
    assert!(
        r["message"].as_str().unwrap().contains("timeout of 300ms"),
        "{r}"
    );
    assert!(Path::new(&format!("{out}.err")).exists());
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    eventually("the grandchild to be gone", || !alive(&pid));
}

#[test]
fn timeout_escalates_to_sigkill_when_sigterm_is_ignored() {
    let d = Dir::new("kill");
    let meta = d.p("status");
    let o = run(&[
        "-timeout",
        "200ms",
        "-grace_period",
        "200ms",
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.05; done",
    ]);
    assert_eq!(o.status.code(), Some(246));
    assert_eq!(report(&meta)["exitCode"], 137, "killed by SIGKILL");
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let d = Dir::new("signal");
    let (meta, ready, got) = (d.p("status"), d.p("ready"), d.p("got"));
    let script = format!(
        "trap 'echo term > {got}; exit 7' TERM; touch {ready}; while true; do sleep 0.05; done"
    );
    let child = spawn(&[
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    eventually("the command to start", || Path::new(&ready).exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "term\n");
    assert_eq!(report(&meta)["exitCode"], 7);
}

/// The wrapper with `meta` as its metadata directory, running `sh -c
/// script`, started (by python, whose exec keeps both) with SIGHUP, SIGINT,
/// SIGQUIT, SIGUSR1, SIGUSR2 and SIGTERM blocked and, with `ignore`,
/// SIGHUP and SIGTERM ignored: as a runtime that started it so would.
fn started_blocked(ignore: bool, meta: &str, script: &str) -> Command {
    let ignored = if ignore {
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
         signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    } else {
        ""
    };
    let wrapper = format!(
        "import os, signal, sys\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, [1, 2, 3, 10, 12, 15])\n\
         {ignored}os.execv(sys.argv[1], sys.argv[1:])\n"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &wrapper, BIN, "-step_metadata_dir", meta])
        .args(["-termination_path", "", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Regression: steps started with SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2
/// and SIGTERM blocked (and with whatever the wrapper was started with
/// ignored), so a step's `trap … TERM` never ran. The wrapper here starts
/// with those blocked and SIGHUP, SIGTERM ignored; the command must start
/// with none blocked and none ignored.
#[test]
fn regression_steps_start_with_signals_blocked() {
    let d = Dir::new("sigmask");
    let o = started_blocked(
        true,
        &d.p("status"),
        "grep -E '^Sig(Blk|Ign):' /proc/self/status",
    )
    .output()
    .expect("python3 runs the wrapper with signals blocked (hack/test.sh installs it)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(common::sig_masks(&out), (0, 0), "{out}");
}

/// A step that traps SIGTERM gets it, even with the wrapper started with
/// the signals blocked, and ends the way its trap says.
#[test]
fn a_step_trap_runs_on_sigterm_even_when_started_blocked() {
    let d = Dir::new("trap");
    let (meta, ready, got) = (d.p("status"), d.p("ready"), d.p("got"));
    let script = format!(
        "trap 'echo term > {got}; exit 0' TERM; touch {ready}; while true; do sleep 0.05; done"
    );
    let child = started_blocked(false, &meta, &script).spawn().unwrap();
    eventually("the command to start", || Path::new(&ready).exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "term\n");
}

#[test]
fn a_signal_while_waiting_ends_the_wait() {
    let d = Dir::new("waitsig");
    let (meta, out) = (d.p("status"), d.p("out"));
    let never = d.p("never");
    let child = spawn(&[
        "-wait_file",
        &never,
        "-post_file",
        &out,
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "true",
    ]);
    // Once it watches the directory it has its signal handling in place.
    let fdinfo = format!("/proc/{}/fdinfo", child.id());
    eventually("the entrypoint to wait", || {
        std::fs::read_dir(&fdinfo)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("inotify")))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(242));
    assert_eq!(report(&meta)["reason"], "WaitInterrupted");
    assert!(Path::new(&format!("{out}.err")).exists());
}

#[test]
fn results_are_harvested_into_report_and_termination_message() {
    let d = Dir::new("results");
    let (results, meta, term) = (d.p("results"), d.p("status"), d.p("termination"));
    std::fs::create_dir_all(&results).unwrap();
    std::fs::create_dir_all(format!("{meta}/results")).unwrap();
    let script =
        format!("printf sha256:abc > {results}/digest; printf 'ok' > {meta}/results/summary");
    let o = run(&[
        "-results",
        "digest,missing",
        "-results_dir",
        &results,
        "-step_results",
        "summary",
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        &term,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let r = report(&meta);
    assert_eq!(
        r["results"],
        serde_json::json!([{"name": "digest", "kind": "task", "value": "sha256:abc"}, {"name": "summary", "kind": "step", "value": "ok"}])
    );
    assert!(r["startedAt"].as_str().unwrap().ends_with('Z'));
    assert!(r["finishedAt"].as_str().unwrap() >= r["startedAt"].as_str().unwrap());
    let t: Value = serde_json::from_slice(&std::fs::read(&term).unwrap()).unwrap();
    let keys: Vec<(&str, i64)> = t
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["type"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("StartedAt", 3),
            ("ExitCode", 3),
            ("Reason", 3),
            ("digest", 1),
            ("summary", 4)
        ]
    );
}

#[test]
fn an_oversized_result_fails_the_step() {
    let d = Dir::new("big");
    let (results, meta, out) = (d.p("results"), d.p("status"), d.p("out"));
    std::fs::create_dir_all(&results).unwrap();
    let script = format!("printf 01234567890 > {results}/blob");
    let o = run(&[
        "-results",
        "blob",
        "-results_dir",
        &results,
        "-max_result_size",
        "10",
        "-post_file",
        &out,
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(o.status.code(), Some(244));
    let r = report(&meta);
    assert_eq!(r["reason"], "ResultTooLarge");
    assert_eq!(
        r["message"],
        "result \"blob\" is 11 bytes, over the limit of 10 bytes"
    );
    assert!(Path::new(&format!("{out}.err")).exists());
}

#[test]
fn own_failures_have_their_own_codes() {
    let d = Dir::new("own");
    let meta = d.p("status");
    let o = run(&[
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "/does/not/exist",
    ]);
    assert_eq!(o.status.code(), Some(241));
    assert_eq!(report(&meta)["reason"], "CannotExec");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot run \"/does/not/exist\""));

    let o = run(&["-nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(240));
    assert!(String::from_utf8_lossy(&o.stderr).contains("entrypoint: unknown flag -nope"));
    let o = run(&["-post_file", "x"]);
    assert_eq!(o.status.code(), Some(240));
}

#[test]
fn script_arguments_are_positional_parameters_and_output_is_copied() {
    let d = Dir::new("script");
    let (script, out) = (d.p("script.sh"), d.p("stdout.txt"));
    std::fs::write(&script, "#!/bin/sh\necho \"$# $1 $2\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = run(&[
        "-stdout_path",
        &out,
        "-termination_path",
        "",
        "--",
        &script,
        "a b",
        "c",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2 a b c\n");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "2 a b c\n");
}

#[test]
fn init_copies_itself_and_links_steps_and_decode_script_works() {
    let d = Dir::new("init");
    let root = d.p("tekton");
    let dst = format!("{root}/bin/entrypoint");
    let o = Command::new(BIN)
        .args(["init", BIN, &dst, "step-build", "step-test"])
        .env("TEKTITE_TEKTON_ROOT", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(
        std::fs::read_link(format!("{root}/steps/step-test")).unwrap(),
        PathBuf::from(format!("{root}/run/1/status"))
    );
    assert_eq!(
        std::fs::read_link(format!("{root}/steps/0")).unwrap(),
        PathBuf::from(format!("{root}/run/0/status"))
    );

    let script = d.p("script");
    std::fs::write(&script, "IyEvYmluL3NoCmVjaG8gaGkK\n").unwrap();
    let o = Command::new(BIN)
        .args(["decode-script", &script])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    let o = Command::new(BIN)
        .args(["decode-script", &d.p("missing")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(245));
}

/// One request the test API server received.
#[derive(Debug)]
struct Request {
    head: String,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A loopback HTTPS server answering `codes` in turn, one per connection.
fn api_server(codes: Vec<u16>) -> (u16, String, std::thread::JoinHandle<Vec<Request>>) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        // Never block the test run: give up on connections that do not come.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        for code in codes {
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break Some(s),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break None,
                }
            };
            let Some(stream) = stream else { break };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                tls.read_exact(&mut byte).unwrap();
                buf.push(byte[0]);
            }
            let head = String::from_utf8(buf).unwrap();
            let mut req = Request {
                head,
                body: String::new(),
            };
            let len: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            tls.read_exact(&mut body).unwrap();
            req.body = String::from_utf8(body).unwrap();
            seen.push(req);
            let answer = format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            tls.write_all(answer.as_bytes()).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        seen
    });
    (port, ca_pem, handle)
}

fn api_env(cmd: &mut Command, d: &Dir, port: u16, ca_pem: &str) {
    let sa = d.p("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(format!("{sa}/token"), "secret-token\n").unwrap();
    std::fs::write(format!("{sa}/ca.crt"), ca_pem).unwrap();
    cmd.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .env("TEKTITE_SERVICEACCOUNT_DIR", &sa)
        .env("TEKTITE_POD_NAME", "build-pod")
        .env("TEKTITE_POD_NAMESPACE", "ci")
        .env("TEKTITE_REPORT_DEADLINE_MS", "3000");
}

#[test]
fn reports_by_patching_its_pod_retrying_a_conflict() {
    let d = Dir::new("patch");
    let (meta, term) = (d.p("run/0/status"), d.p("termination"));
    let (port, ca_pem, server) = api_server(vec![409, 200]);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        &term,
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    api_env(&mut cmd, &d, port, &ca_pem);
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let requests = server.join().unwrap();
    assert_eq!(requests.len(), 2, "a 409 is retried");
    for r in &requests {
        assert!(
            r.head
                .starts_with("PATCH /api/v1/namespaces/ci/pods/build-pod HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            r.header("authorization").as_deref(),
            Some("Bearer secret-token")
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let annotation = body["metadata"]["annotations"]["tektite.dev/step.0"]
            .as_str()
            .unwrap();
        let report: Value = serde_json::from_str(annotation).unwrap();
        assert_eq!(
            (report["reason"].as_str(), report["exitCode"].as_i64()),
            (Some("Completed"), Some(0))
        );
    }
    assert!(
        !Path::new(&term).exists(),
        "no termination message when the pod was patched"
    );
    assert_eq!(
        report(&meta)["reason"],
        "Completed",
        "the report file is always written"
    );
}

#[test]
fn falls_back_to_the_termination_message_without_the_api() {
    let d = Dir::new("fallback");
    let (meta, term) = (d.p("status"), d.p("termination"));
    // A server that only says no.
    let (port, ca_pem, server) = api_server(vec![403]);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        &term,
        "--",
        "sh",
        "-c",
        "exit 5",
    ]);
    api_env(&mut cmd, &d, port, &ca_pem);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(server.join().unwrap().len(), 1, "a 403 is not retried");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("cannot report to the API server, using the termination message")
    );
    let t: Value = serde_json::from_slice(&std::fs::read(&term).unwrap()).unwrap();
    assert_eq!(
        t[1],
        serde_json::json!({"key": "ExitCode", "value": "5", "type": 3})
    );
}

/// A link planted at the report's temporary name (by another container of
/// the pod, or the step itself) is neither written through nor renamed
/// into place, where the host would read the report through it.
#[test]
fn regression_a_planted_report_tmp_link_is_not_written_through() {
    let d = Dir::new("planted-tmp");
    let meta = d.p("status");
    std::fs::create_dir_all(&meta).unwrap();
    let victim = d.p("victim");
    std::fs::write(&victim, "host file").unwrap();
    std::os::unix::fs::symlink(&victim, format!("{meta}/report.json.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, format!("{meta}/exitCode.tmp")).unwrap();
    let o = run(&[
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
    let placed = std::fs::symlink_metadata(format!("{meta}/report.json")).unwrap();
    assert!(
        placed.is_file(),
        "report.json is a regular file, not the link"
    );
    assert_eq!(report(&meta)["reason"], "Completed");
}

/// Results are files the step wrote: a link (to a file of a workspace
/// only this wrapper's step may see, or to a host file) is not read, and
/// a FIFO neither blocks the wrapper nor is read.
#[test]
fn regression_result_links_and_fifos_are_not_read() {
    let d = Dir::new("result-links");
    let (results, meta) = (d.p("results"), d.p("status"));
    std::fs::create_dir_all(&results).unwrap();
    let secret = d.p("secret");
    std::fs::write(&secret, "top secret").unwrap();
    let script = format!(
        "ln -s {secret} {results}/stolen && mkfifo {results}/pipe && printf fine > {results}/ok"
    );
    let o = run(&[
        "-results",
        "stolen,pipe,ok",
        "-results_dir",
        &results,
        "-step_metadata_dir",
        &meta,
        "-termination_path",
        "",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        report(&meta)["results"],
        serde_json::json!([{"name": "ok", "kind": "task", "value": "fine"}])
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("stolen is a symbolic link: not read"),
        "{stderr}"
    );
    assert!(stderr.contains("pipe is not a regular file"), "{stderr}");
}
