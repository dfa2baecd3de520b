//! `tkt dora`: the four DORA indicators of the deployments in the local
//! run store or on a cluster (`--cluster`), computed by the engine
//! (`tektite_engine::dora`) from the finished PipelineRuns labelled
//! `tektite.dev/environment`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_engine::dora::{self, Indicators};

use crate::inspect::{Local, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How far back to look: days, hours or minutes, or a sum of them (30d, 12h, 1d12h)
    #[arg(long, default_value = "30d", value_name = "AGE", value_parser = parse_age)]
    pub since: i64,
    /// Only this environment (shown even without deployments)
    #[arg(short, long, value_name = "NAME")]
    pub environment: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// The run store [default: $XDG_STATE_HOME/tektite, else ~/.local/state/tektite]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: crate::cluster::TargetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `30d`, `12h`, `90m`, `1d12h` (and `s`, `w`): seconds.
fn parse_age(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("{s:?} is not an age: expected days, hours or minutes such as 30d, 12h or 1d12h")
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// Runs `tkt dora`.
///
/// # Errors
/// The store or cluster cannot be read.
pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    if args.target.is_cluster() {
        let c = crate::cluster::Cluster::connect(&args.target)?;
        return report(&c, args, out).map_err(|e| c.explain(e));
    }
    report(&Local::open(args.state_dir.as_deref())?, args, out)
}

/// The deployments of `t`, and their indicators over the window.
fn report(t: &dyn Target, args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    let until = Timestamp::now().as_second();
    let since = until - args.since;
    let runs = t.pipeline_runs(Some(dora::ENVIRONMENT_LABEL))?;
    let children = children(t, &runs)?;
    let deployments: Vec<dora::Deployment> = runs
        .iter()
        .filter_map(|pr| {
            let name = pr.metadata.name.as_deref().unwrap_or_default();
            dora::deployment_of(pr, children.get(name).map_or(&[], Vec::as_slice))
        })
        .collect();
    let found = dora::indicators(&deployments, since, until, args.environment.as_deref());
    match args.output {
        Format::Json => {
            let doc = serde_json::json!({
                "since": time(since),
                "until": time(until),
                "environments": found,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => write!(out, "{}", text(&found, since, until, &t.place()))?,
    }
    Ok(0)
}

/// The TaskRuns of the deployments that do not carry their commit time
/// themselves, by PipelineRun (one listing, not one per run).
fn children(
    t: &dyn Target,
    runs: &[PipelineRun],
) -> anyhow::Result<BTreeMap<String, Vec<TaskRun>>> {
    let needed = runs.iter().any(|pr| {
        pr.status
            .as_ref()
            .is_none_or(|s| !s.results.iter().any(|r| r.name == dora::COMMIT_TIME_RESULT))
    });
    let mut by_run: BTreeMap<String, Vec<TaskRun>> = BTreeMap::new();
    if !needed {
        return Ok(by_run);
    }
    for tr in t.task_runs(Some("tekton.dev/pipelineRun"))? {
        let parent = tr
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tekton.dev/pipelineRun"))
            .cloned();
        if let Some(p) = parent {
            by_run.entry(p).or_default().push(tr);
        }
    }
    Ok(by_run)
}

fn time(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// A number of seconds as hours and minutes (`3h30m`, `45m`, `20s`).
fn span(secs: f64) -> String {
    let s = secs.round() as i64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// The text report: one line per environment.
fn text(found: &[Indicators], since: i64, until: i64, place: &str) -> String {
    let days = (until - since) as f64 / 86_400.0;
    let mut s = format!(
        "Deployments in {place} from {} to {} ({} days)\n",
        time(since),
        time(until),
        (days * 10.0).round() / 10.0
    );
    if found.is_empty() {
        s.push_str(
            "No deployments found (a deployment is a finished PipelineRun labelled \
             tektite.dev/environment)\n",
        );
        return s;
    }
    let header = [
        "ENVIRONMENT",
        "DEPLOYMENTS",
        "FAILED",
        "PER DAY",
        "LEAD TIME (MEDIAN/P90)",
        "CHANGE FAILURE RATE",
        "TIME TO RESTORE",
    ];
    let mut rows = vec![header.map(str::to_string).to_vec()];
    for i in found {
        let lead = i.lead_time.as_ref().map_or("---".to_string(), |l| {
            format!("{} / {}", span(l.median_seconds), span(l.p90_seconds))
        });
        let cfr = i
            .change_failure_rate
            .map_or("---".to_string(), |r| format!("{:.1} %", r * 100.0));
        let restore = match i.restore.mean_seconds {
            Some(m) => format!("{} ({} restored)", span(m), i.restore.restored),
            None => "---".to_string(),
        };
        rows.push(vec![
            i.environment.clone(),
            i.deployments.to_string(),
            i.failed.to_string(),
            format!("{:.2}", i.deployments_per_day),
            lead,
            cfr,
            restore,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str(cells.join("   ").trim_end());
        s.push('\n');
    }
    for i in found {
        if let Some(t) = i.restore.failing_since {
            s.push_str(&format!(
                "{}: failing since {} (its last deployment failed)\n",
                i.environment,
                time(t)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_days_hours_and_minutes() {
        assert_eq!(parse_age("30d"), Ok(30 * 86_400));
        assert_eq!(parse_age("1d12h"), Ok(36 * 3_600));
        assert_eq!(parse_age("90m"), Ok(5_400));
        assert_eq!(parse_age("2w"), Ok(14 * 86_400));
        for bad in ["", "30", "d", "-1d", "1x", "0d", "99999999999999999999d"] {
            let e = parse_age(bad).unwrap_err();
            assert!(e.contains("is not an age"), "{bad}: {e}");
        }
    }

    #[test]
    fn spans_print_their_largest_units() {
        assert_eq!(span(20.0), "20s");
        assert_eq!(span(2_700.0), "45m");
        assert_eq!(span(12_600.0), "3h30m");
        assert_eq!(span(7_200.0), "2h");
        assert_eq!(span(90_000.0), "1d1h");
        assert_eq!(span(86_400.0), "1d");
    }
}
