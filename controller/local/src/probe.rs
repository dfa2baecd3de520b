//! Readiness and startup probes, run as a kubelet runs them, for the
//! containers of a local pod: they decide when a sidecar is Ready, and so
//! when the engine releases the first step (`tekton.dev/ready`).
//!
//! Data flows one way: a runtime hands [`Probes::tick`] which containers
//! run (and the address tcpSocket and httpGet probes default to); due
//! probes start in threads of their own, each bounded by its
//! `timeoutSeconds`, so the runner's loop never waits for one; their
//! outcomes are counted at a later tick against `successThreshold` and
//! `failureThreshold`. How an `exec` probe runs is the runtime's
//! ([`ExecIn`]): `podman exec` in the container, or a host process with
//! the container's mounts, environment and working directory.
//!
//! Must not depend on the runner or on a runtime's types.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::procs::{self, ProcId};

/// The timing of a probe, with Kubernetes' defaults for what is unset (or
/// zero): no initial delay, every 10 s, 1 s timeout, ready after 1
/// success, not ready after 3 failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    /// The timing of `p`.
    pub fn of(p: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| match v {
            Some(s) if s > 0 => Duration::from_secs(s as u64),
            _ => Duration::from_secs(default),
        };
        let count = |v: Option<i32>, default: u32| match v {
            Some(n) if n > 0 => n as u32,
            _ => default,
        };
        Timing {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command in the container: ready when it exits 0.
    Exec(Vec<String>),
    /// Open a TCP connection: ready when it opens.
    Tcp { host: Option<String>, port: u16 },
    /// GET a path over HTTP: ready on a status from 200 to 399.
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A probe this machine cannot run (HTTPS, gRPC, a port the container
    /// does not name): it fails every time, with this reason.
    Unsupported(String),
}

/// The port of a probe: a number, or the name of one of `c`'s ports.
fn port_of(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(s) => match s.parse::<u16>() {
            Ok(n) => Ok(n),
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("the container has no port named {s:?}")),
        },
    }
}

impl Action {
    /// What probe `p` of container `c` does.
    pub fn of(p: &Probe, c: &Container) -> Action {
        if let Some(e) = &p.exec {
            return Action::Exec(e.command.clone().unwrap_or_default());
        }
        if let Some(t) = &p.tcp_socket {
            return match port_of(&t.port, c) {
                Ok(port) => Action::Tcp {
                    host: t.host.clone().filter(|h| !h.is_empty()),
                    port,
                },
                Err(e) => Action::Unsupported(e),
            };
        }
        if let Some(h) = &p.http_get {
            if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return Action::Unsupported(
                    "httpGet probes with scheme HTTPS are not run locally".into(),
                );
            }
            return match port_of(&h.port, c) {
                Ok(port) => Action::Http {
                    host: h.host.clone().filter(|h| !h.is_empty()),
                    port,
                    path: h
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or("/".into()),
                    headers: h
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|x| (x.name.clone(), x.value.clone()))
                        .collect(),
                },
                Err(e) => Action::Unsupported(e),
            };
        }
        if p.grpc.is_some() {
            return Action::Unsupported("grpc probes are not run locally".into());
        }
        Action::Unsupported("the probe names no action (exec, tcpSocket or httpGet)".into())
    }
}

/// How one probe ended: passed, or failed and why.
pub type Outcome = Result<(), String>;

/// The counting of one probe's outcomes, as a kubelet counts them (pure).
#[derive(Debug, Clone)]
pub struct Counter {
    pub timing: Timing,
    successes: u32,
    failures: u32,
    /// Whether the probe holds as passed (ready, started).
    pub passed: bool,
    /// Whether it has failed `failureThreshold` times in a row since it
    /// last held.
    pub failed: bool,
    /// The last failure's reason.
    pub last_failure: Option<String>,
    /// When it is next due (none: at `initialDelaySeconds` after start).
    next: Option<Instant>,
}

impl Counter {
    pub fn new(timing: Timing) -> Counter {
        Counter {
            timing,
            successes: 0,
            failures: 0,
            passed: false,
            failed: false,
            last_failure: None,
            next: None,
        }
    }

    /// Whether a probe is due at `now`, the container having started at
    /// `started`.
    pub fn due(&self, started: Instant, now: Instant) -> bool {
        now >= self.next.unwrap_or(started + self.timing.initial_delay)
    }

    /// A probe starts at `now`: the next one is a period later.
    pub fn begun(&mut self, now: Instant) {
        self.next = Some(now + self.timing.period);
    }

    /// Counts an outcome: `successThreshold` successes in a row make the
    /// probe pass, `failureThreshold` failures in a row make it fail.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.timing.success_threshold {
                    self.passed = true;
                    self.failed = false;
                }
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(why);
                if self.failures >= self.timing.failure_threshold {
                    self.passed = false;
                    self.failed = true;
                }
            }
        }
    }
}

/// Runs a probe's command in a container: the runtime's part.
pub trait ExecIn: Send + Sync {
    /// The command that runs `argv` in container `container`, in a session
    /// of its own ([`procs::session_command`]); none when it cannot run.
    fn command(&self, container: &str, argv: &[String]) -> Option<Command>;

    /// Time the command's own start takes on top of the probe's
    /// `timeoutSeconds` (`podman exec` itself takes a moment, which a
    /// kubelet's timeout does not count).
    fn allowance(&self) -> Duration {
        Duration::ZERO
    }
}

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Readiness,
}

/// A container's probes and what they have shown.
struct Probed {
    action_startup: Option<Action>,
    startup: Option<Counter>,
    action_readiness: Option<Action>,
    readiness: Option<Counter>,
    /// When the container was first seen running.
    started: Option<Instant>,
    in_flight: Option<(Kind, Receiver<Outcome>)>,
}

impl Probed {
    /// Ready: running, started (startup probe passed) and its readiness
    /// probe passing; a container without probes is ready once it runs.
    fn ready(&self) -> bool {
        self.started.is_some()
            && self.startup.as_ref().is_none_or(|c| c.passed)
            && self.readiness.as_ref().is_none_or(|c| c.passed)
    }

    /// The probe due now, if any: the startup probe until it passes, then
    /// the readiness probe.
    fn due(&self, now: Instant) -> Option<Kind> {
        let started = self.started?;
        if self.in_flight.is_some() {
            return None;
        }
        match (&self.startup, &self.readiness) {
            (Some(s), _) if !s.passed => s.due(started, now).then_some(Kind::Startup),
            (_, Some(r)) => r.due(started, now).then_some(Kind::Readiness),
            _ => None,
        }
    }

    fn counter(&mut self, kind: Kind) -> Option<&mut Counter> {
        match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        }
    }

    fn action(&self, kind: Kind) -> Option<&Action> {
        match kind {
            Kind::Startup => self.action_startup.as_ref(),
            Kind::Readiness => self.action_readiness.as_ref(),
        }
    }

    /// Counts the outcome of the probe in flight, if it has ended.
    fn collect(&mut self) {
        let Some((kind, rx)) = &self.in_flight else {
            return;
        };
        let kind = *kind;
        let outcome = match rx.try_recv() {
            Ok(o) => o,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err("the probe did not report".into()),
        };
        self.in_flight = None;
        if let Some(c) = self.counter(kind) {
            c.record(outcome);
        }
    }
}

/// The probes of a pod's containers.
pub struct Probes {
    containers: BTreeMap<String, Probed>,
    exec: Arc<dyn ExecIn>,
    /// Set when the pod is finished: probes in flight stop at once.
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("containers", &self.containers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Probes {
    /// The startup and readiness probes of `containers` (those with
    /// neither are not probed: ready once they run).
    pub fn new(containers: &[Container], exec: Arc<dyn ExecIn>) -> Probes {
        let containers = containers
            .iter()
            .filter(|c| c.readiness_probe.is_some() || c.startup_probe.is_some())
            .map(|c| {
                let startup = c.startup_probe.as_ref();
                let readiness = c.readiness_probe.as_ref();
                let probed = Probed {
                    action_startup: startup.map(|p| Action::of(p, c)),
                    startup: startup.map(|p| Counter::new(Timing::of(p))),
                    action_readiness: readiness.map(|p| Action::of(p, c)),
                    readiness: readiness.map(|p| Counter::new(Timing::of(p))),
                    started: None,
                    in_flight: None,
                };
                (c.name.clone(), probed)
            })
            .collect();
        Probes {
            containers,
            exec,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts the probes that have ended and starts those due. `running`
    /// says whether a container runs; `host` is where tcpSocket and
    /// httpGet probes connect when they name no host (the pod's address),
    /// or why there is none. Returns the containers whose startup probe
    /// has failed for good: a kubelet kills them.
    pub fn tick(
        &mut self,
        running: &dyn Fn(&str) -> bool,
        host: &Result<String, String>,
        now: Instant,
    ) -> Vec<String> {
        let mut give_up = Vec::new();
        for (name, p) in self.containers.iter_mut() {
            p.collect();
            if !running(name) {
                continue;
            }
            let started = *p.started.get_or_insert(now);
            if p.startup.as_ref().is_some_and(|c| c.failed) {
                give_up.push(name.clone());
                continue;
            }
            let Some(kind) = p.due(now) else { continue };
            let Some(action) = p.action(kind).cloned() else {
                continue;
            };
            let Some(counter) = p.counter(kind) else {
                continue;
            };
            counter.begun(now.max(started));
            let timeout = counter.timing.timeout;
            let (tx, rx) = mpsc::channel();
            let (exec, stopped, name) = (self.exec.clone(), self.stopped.clone(), name.clone());
            let host = host.clone();
            std::thread::spawn(move || {
                let outcome = run(&action, &name, &host, timeout, exec.as_ref(), &stopped);
                let _ = tx.send(outcome);
            });
            p.in_flight = Some((kind, rx));
        }
        give_up
    }

    /// Whether container `name` is ready (`running`: it runs now).
    pub fn ready(&self, name: &str, running: bool) -> bool {
        running && self.containers.get(name).is_none_or(Probed::ready)
    }

    /// Why a probed container is not ready, for messages: the last probe
    /// failure, if there was one.
    pub fn why_not_ready(&self, name: &str) -> Option<String> {
        let p = self.containers.get(name)?;
        if p.ready() {
            return None;
        }
        let (kind, c) = match (&p.startup, &p.readiness) {
            (Some(s), _) if !s.passed => ("startup", s),
            (_, Some(r)) => ("readiness", r),
            _ => return None,
        };
        let why = c.last_failure.clone()?;
        Some(format!("{kind} probe failed: {why}"))
    }

    /// Stops the probes in flight (the pod is finished).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use tektite_engine::taskrun::NOT_READY_ANNOTATION;

/// Sets each container status's `ready` as a kubelet does (running, and
/// its probes passing) and annotates the pod as the controller and a
/// kubelet would: `tekton.dev/ready` once the steps were released
/// (`released`), and why each probed container is not ready.
pub fn mark_statuses(
    probes: &Probes,
    statuses: &mut [ContainerStatus],
    annotations: &mut BTreeMap<String, String>,
    released: bool,
) {
    for s in statuses.iter_mut() {
        let running = s.state.as_ref().is_some_and(|x| x.running.is_some());
        s.ready = probes.ready(&s.name, running);
        if running && let Some(why) = probes.why_not_ready(&s.name) {
            annotations.insert(format!("{NOT_READY_ANNOTATION}{}", s.name), why);
        }
    }
    if released {
        annotations.insert("tekton.dev/ready".into(), "READY".into());
    }
}

/// Runs one probe to its outcome within `timeout`.
fn run(
    action: &Action,
    container: &str,
    host: &Result<String, String>,
    timeout: Duration,
    exec: &dyn ExecIn,
    stopped: &AtomicBool,
) -> Outcome {
    let host_of = |h: &Option<String>| match h {
        Some(h) => Ok(h.clone()),
        None => host.clone(),
    };
    match action {
        Action::Exec(argv) => {
            let cmd = exec.command(container, argv);
            run_exec(cmd, timeout, exec.allowance(), stopped)
        }
        Action::Tcp { host, port } => connect(&host_of(host)?, *port, timeout).map(|_| ()),
        Action::Http {
            host,
            port,
            path,
            headers,
        } => http_get(&host_of(host)?, *port, path, headers, timeout),
        Action::Unsupported(why) => Err(why.clone()),
    }
}

/// Runs a probe's command: passed when it exits 0 within `timeout`;
/// killed (its whole session) when it does not.
fn run_exec(
    cmd: Option<Command>,
    timeout: Duration,
    allowance: Duration,
    stopped: &AtomicBool,
) -> Outcome {
    let Some(mut cmd) = cmd else {
        return Err("the command cannot be run in this container".into());
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    let session = i32::try_from(child.id()).ok().and_then(ProcId::of);
    let deadline = Instant::now() + timeout + allowance;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(match status.code() {
                    Some(c) => format!("the command exited with code {c}"),
                    None => "the command was killed".into(),
                });
            }
            Ok(None) if Instant::now() < deadline && !stopped.load(Ordering::SeqCst) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => break,
        }
    }
    if let Some(s) = session {
        procs::kill_session(s.pid, s.start, false);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "the command timed out after {}s",
        timeout.as_secs()
    ))
}

/// A TCP connection to `host:port` within `timeout`.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("no address for {host}");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("dial tcp {a}: {e}"),
        }
    }
    Err(last)
}

/// A GET of `path` at `host:port`: passed on a status from 200 to 399 (a
/// redirect is not followed, as a kubelet does not follow one to another
/// host, and counts as a success).
fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let mut s = connect(host, port, timeout)?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        req.push_str("User-Agent: kube-probe/tektite\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Accept: */*\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 1024 && !head.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("GET http://{host}:{port}{path}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("GET http://{host}:{port}{path}: no HTTP status line"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {code} (GET http://{host}:{port}{path})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, TCPSocketAction};

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(2),
            period: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn unset_or_zero_timing_fields_take_kubernetes_defaults() {
        let t = Timing::of(&Probe {
            period_seconds: Some(0),
            ..Default::default()
        });
        assert_eq!(
            t,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn a_probe_is_first_due_after_the_initial_delay_then_each_period() {
        let t0 = Instant::now();
        let mut c = Counter::new(timing(1, 3));
        assert!(!c.due(t0, t0 + Duration::from_secs(1)));
        assert!(c.due(t0, t0 + Duration::from_secs(2)));
        c.begun(t0 + Duration::from_secs(2));
        assert!(!c.due(t0, t0 + Duration::from_secs(6)));
        assert!(c.due(t0, t0 + Duration::from_secs(7)));
    }

    #[test]
    fn success_and_failure_thresholds_count_outcomes_in_a_row() {
        let mut c = Counter::new(timing(2, 2));
        c.record(Ok(()));
        assert!(!c.passed, "one success of two");
        c.record(Err("no".into()));
        c.record(Ok(()));
        assert!(!c.passed, "a failure resets the successes");
        c.record(Ok(()));
        assert!(c.passed);
        c.record(Err("down".into()));
        assert!(c.passed, "one failure of two keeps it ready");
        c.record(Err("down".into()));
        assert!(!c.passed && c.failed);
        assert_eq!(c.last_failure.as_deref(), Some("down"));
    }

    #[test]
    fn actions_resolve_named_ports_and_refuse_what_cannot_run() {
        let c = Container {
            name: "sidecar-web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            Action::of(&http, &c),
            Action::Http {
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![],
            }
        );
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("grpc".into()),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            Action::of(&tcp, &c),
            Action::Unsupported("the container has no port named \"grpc\"".into())
        );
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(Action::of(&exec, &c), Action::Exec(vec!["true".into()]));
    }

    struct Host;
    impl ExecIn for Host {
        fn command(&self, _: &str, argv: &[String]) -> Option<Command> {
            let mut c = procs::session_command(argv.first()?);
            c.args(&argv[1..]);
            Some(c)
        }
    }

    #[test]
    fn an_exec_probe_passes_on_exit_0_and_is_killed_at_its_timeout() {
        let stopped = AtomicBool::new(false);
        let t = Duration::from_millis(300);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            run_exec(
                Host.command("c", &argv(&["true"])),
                t,
                Duration::ZERO,
                &stopped
            ),
            Ok(())
        );
        assert_eq!(
            run_exec(
                Host.command("c", &argv(&["sh", "-c", "exit 4"])),
                t,
                Duration::ZERO,
                &stopped
            ),
            Err("the command exited with code 4".into())
        );
        let slow = run_exec(
            Host.command("c", &argv(&["sleep", "30"])),
            t,
            Duration::ZERO,
            &stopped,
        );
        assert!(slow.is_err_and(|e| e.contains("timed out")));
    }

    #[test]
    fn tcp_and_http_probes_see_a_server_and_its_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(http_get("127.0.0.1", port, "/", &[], t), Ok(()));
        let e = http_get("127.0.0.1", port, "/", &[], t).unwrap_err();
        assert!(e.contains("statuscode: 503"), "{e}");
        server.join().unwrap();
        // A port held by a socket that does not listen refuses connections.
        let held = not_listening();
        assert!(connect("127.0.0.1", held.1, t).is_err());
    }

    /// A TCP socket bound to a loopback port without listening on it, and
    /// its port: no other test can take the port while it is held.
    fn not_listening() -> (rustix::fd::OwnedFd, u16) {
        use rustix::net::{AddressFamily, SocketType};
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
        rustix::net::bind(&fd, &any).unwrap();
        let addr = rustix::net::getsockname(&fd).unwrap();
        (fd, std::net::SocketAddr::try_from(addr).unwrap().port())
    }
}
