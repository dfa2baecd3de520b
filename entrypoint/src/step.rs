//! One step, from waiting to reporting: the decisions, with the waiting,
//! running and reporting behind traits.
//!
//! Order matters to the next step: the report and exit code are written
//! before the marker (`post_file` or `post_file.err`), because the marker is
//! what releases the next step.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::contract::{Reason, Report, ResultKind, exit};
use crate::flags::{Flags, OnError};
use crate::report::{Reporter, write_atomic};
use crate::results::harvest;
use crate::run::Runner;
use crate::wait::{WaitOutcome, Waiter};

/// Formats a time as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The step's name: the metadata directory is `/tekton/run/<i>/status`, and
/// `init` links `/tekton/steps/step-<name>` to it; without a link, the index.
fn step_name(flags: &Flags) -> String {
    let Some(dir) = &flags.step_metadata_dir else {
        return String::new();
    };
    let run = Path::new(dir);
    let index = run
        .parent()
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = run.parent().and_then(Path::parent).and_then(Path::parent);
    if let Some(entries) = root.and_then(|r| std::fs::read_dir(r.join("steps")).ok()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<usize>().is_err()
                && std::fs::read_link(e.path()).is_ok_and(|t| t == run)
            {
                return name;
            }
        }
    }
    index
}

/// Runs the step described by `flags` and returns the process exit code.
pub fn run(
    flags: &Flags,
    waiter: &mut dyn Waiter,
    runner: &mut dyn Runner,
    reporter: &mut dyn Reporter,
) -> i32 {
    let mut report = Report {
        step: step_name(flags),
        exit_code: 0,
        reason: Reason::Completed,
        message: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
        results: Vec::new(),
    };
    let (exit_code, ok) = match waiter.wait(&flags.wait_files, flags.wait_file_content) {
        WaitOutcome::Skip(marker) => {
            report.reason = Reason::Skipped;
            report.message = format!("not run: a previous step failed ({marker})");
            report.exit_code = exit::SKIPPED;
            (exit::SKIPPED, false)
        }
        WaitOutcome::Interrupted => {
            report.reason = Reason::WaitInterrupted;
            report.message = "stopped by a signal while waiting for the previous step".into();
            report.exit_code = exit::WAIT_INTERRUPTED;
            (exit::WAIT_INTERRUPTED, false)
        }
        WaitOutcome::Ready => match when_allows(flags) {
            Ok(true) => execute(flags, runner, &mut report),
            Ok(false) => {
                report.started_at = rfc3339(SystemTime::now());
                report.reason = Reason::Skipped;
                report.message = "skipped: its when expressions were false".into();
                (0, true)
            }
            Err(e) => {
                report.reason = Reason::CannotExec;
                report.message = e;
                report.exit_code = exit::CANNOT_EXEC;
                (exit::CANNOT_EXEC, false)
            }
        },
    };
    if report.finished_at.is_empty() {
        report.finished_at = rfc3339(SystemTime::now());
    }
    if ok && !matches!(report.reason, Reason::Continued | Reason::Skipped) {
        report.message.clear();
    }
    let mut code = exit_code;
    if let Err(e) = reporter.report(&report) {
        eprintln!("entrypoint: {e}");
        code = exit::IO;
    }
    if let Some(post) = &flags.post_file {
        let marker = if ok && code != exit::IO {
            post.clone()
        } else {
            crate::contract::err_path(post)
        };
        if let Err(e) = write_atomic(Path::new(&marker), b"") {
            eprintln!("entrypoint: {e}");
            code = exit::IO;
        }
    }
    if !report.message.is_empty() {
        eprintln!("entrypoint: {}", report.message);
    }
    code
}

/// Whether the step's `when` expressions hold (true without any); earlier
/// steps' results are read under the steps directory beside this step's
/// run directory (`<root>/run/<i>/status` → `<root>/steps`).
fn when_allows(flags: &Flags) -> Result<bool, String> {
    if flags.when.is_empty() {
        return Ok(true);
    }
    let whens = crate::when::parse(&flags.when)?;
    crate::when::allows(&whens, &steps_dir(flags), flags.max_result_size)
}

/// `<root>/steps`, beside this step's run directory
/// (`<root>/run/<i>/status`), else `/tekton/steps`.
fn steps_dir(flags: &Flags) -> std::path::PathBuf {
    flags
        .step_metadata_dir
        .as_deref()
        .map(Path::new)
        .and_then(|d| d.parent()?.parent()?.parent())
        .map_or_else(
            || Path::new(crate::contract::STEPS_DIR).to_path_buf(),
            |root| root.join("steps"),
        )
}

/// Environment variables to set over the inherited ones.
type Env = Vec<(String, String)>;

/// The command and the environment variables with earlier steps' results
/// in place of their references (none to set when nothing refers to one).
fn with_step_results(flags: &Flags) -> Result<(Vec<String>, Env), String> {
    let env: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(_, v)| crate::stepresults::refers(v))
        .collect();
    if env.is_empty() && !flags.command.iter().any(|a| crate::stepresults::refers(a)) {
        return Ok((flags.command.clone(), Vec::new()));
    }
    let dir = steps_dir(flags);
    let src = crate::stepresults::Source {
        steps_dir: &dir,
        limit: flags.max_result_size,
    };
    let command = crate::stepresults::expand_args(&flags.command, src)?;
    let env = env
        .into_iter()
        .map(|(k, v)| Ok((k, crate::stepresults::substitute(&v, src)?)))
        .collect::<Result<Env, String>>()?;
    Ok((command, env))
}

/// Runs the command and harvests results; returns (exit code, success).
fn execute(flags: &Flags, runner: &mut dyn Runner, report: &mut Report) -> (i32, bool) {
    report.started_at = rfc3339(SystemTime::now());
    // Where `$(step.results.<r>.path)` and `$(step.artifacts.path)` point,
    // made before the command runs, as Tekton's entrypoint does.
    if let Some(dir) = &flags.step_metadata_dir {
        for sub in ["results", "artifacts"] {
            if let Err(e) = std::fs::create_dir_all(Path::new(dir).join(sub)) {
                eprintln!("entrypoint: cannot create {dir}/{sub}: {e}");
            }
        }
    }
    let resolved = with_step_results(flags).and_then(|(command, env)| {
        runner.set_env(env);
        runner.run(&command, flags.timeout)
    });
    let outcome = match resolved {
        Ok(o) => o,
        Err(e) => {
            report.reason = Reason::CannotExec;
            report.message = e;
            report.exit_code = exit::CANNOT_EXEC;
            return (exit::CANNOT_EXEC, false);
        }
    };
    report.finished_at = rfc3339(SystemTime::now());
    report.exit_code = outcome.exit_code;
    let step_results_dir = flags
        .step_metadata_dir
        .as_ref()
        .map(|d| format!("{d}/results"))
        .unwrap_or_default();
    let harvested = harvest(
        &flags.results_dir,
        &flags.results,
        ResultKind::Task,
        flags.max_result_size,
    )
    .and_then(|mut r| {
        r.extend(harvest(
            &step_results_dir,
            &flags.step_results,
            ResultKind::Step,
            flags.max_result_size,
        )?);
        Ok(r)
    });
    if outcome.timed_out {
        report.reason = Reason::TimeoutExceeded;
        let limit = flags.timeout.map(|t| format!("{t:?}")).unwrap_or_default();
        report.message = format!("the step ran past its timeout of {limit} and was stopped");
        return (exit::TIMEOUT, false);
    }
    match harvested {
        Err(too_large) => {
            report.reason = Reason::ResultTooLarge;
            report.message = too_large.to_string();
            return (exit::RESULT_TOO_LARGE, false);
        }
        Ok(results) => report.results = results,
    }
    if outcome.exit_code == 0 {
        return (0, true);
    }
    let how = match outcome.signal {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("exited with code {}", outcome.exit_code),
    };
    match flags.on_error {
        OnError::Continue => {
            report.reason = Reason::Continued;
            report.message = format!("the command {how}; onError: continue lets the task go on");
            (0, true)
        }
        OnError::StopAndFail => {
            report.reason = Reason::Error;
            report.message = format!("the command {how}");
            (outcome.exit_code, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Outcome;

    struct FakeWait(WaitOutcome);
    impl Waiter for FakeWait {
        fn wait(&mut self, _: &[String], _: bool) -> WaitOutcome {
            self.0.clone()
        }
    }

    struct FakeRun(Result<Outcome, String>, usize);
    impl Runner for FakeRun {
        fn run(&mut self, _: &[String], _: Option<std::time::Duration>) -> Result<Outcome, String> {
            self.1 += 1;
            self.0.clone()
        }
    }

    #[derive(Default)]
    struct Recorded(Vec<Report>);
    impl Reporter for Recorded {
        fn report(&mut self, r: &Report) -> Result<(), String> {
            self.0.push(r.clone());
            Ok(())
        }
    }

    fn exited(code: i32) -> Result<Outcome, String> {
        Ok(Outcome {
            exit_code: code,
            signal: None,
            timed_out: false,
        })
    }

    fn go(flags: &Flags, wait: WaitOutcome, run: Result<Outcome, String>) -> (i32, Report, usize) {
        let mut r = Recorded::default();
        let mut runner = FakeRun(run, 0);
        let code = super::run(flags, &mut FakeWait(wait), &mut runner, &mut r);
        (code, r.0.remove(0), runner.1)
    }

    fn flags() -> Flags {
        Flags {
            command: vec!["true".into()],
            results_dir: "/nonexistent".into(),
            ..Flags::default()
        }
    }

    #[test]
    fn decisions() {
        let (code, r, runs) = go(&flags(), WaitOutcome::Ready, exited(0));
        assert_eq!(
            (code, r.reason, r.exit_code, runs),
            (0, Reason::Completed, 0, 1)
        );

        let (code, r, _) = go(&flags(), WaitOutcome::Ready, exited(3));
        assert_eq!((code, r.reason, r.exit_code), (3, Reason::Error, 3));
        assert_eq!(r.message, "the command exited with code 3");

        let mut cont = flags();
        cont.on_error = OnError::Continue;
        let (code, r, _) = go(&cont, WaitOutcome::Ready, exited(3));
        assert_eq!((code, r.reason, r.exit_code), (0, Reason::Continued, 3));

        let (code, r, runs) = go(&flags(), WaitOutcome::Skip("x.err".into()), exited(0));
        assert_eq!((code, r.reason, runs), (exit::SKIPPED, Reason::Skipped, 0));

        let (code, r, runs) = go(&flags(), WaitOutcome::Interrupted, exited(0));
        assert_eq!(
            (code, r.reason, runs),
            (exit::WAIT_INTERRUPTED, Reason::WaitInterrupted, 0)
        );

        let (code, r, _) = go(
            &flags(),
            WaitOutcome::Ready,
            Err("cannot run \"nope\"".into()),
        );
        assert_eq!((code, r.reason), (exit::CANNOT_EXEC, Reason::CannotExec));

        let timed = Ok(Outcome {
            exit_code: 143,
            signal: Some(15),
            timed_out: true,
        });
        let (code, r, _) = go(&cont, WaitOutcome::Ready, timed);
        assert_eq!(
            (code, r.reason, r.exit_code),
            (exit::TIMEOUT, Reason::TimeoutExceeded, 143)
        );
    }

    #[test]
    fn times_are_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_795_780_800_123_456);
        assert_eq!(rfc3339(t), "2026-11-27T12:00:00.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
