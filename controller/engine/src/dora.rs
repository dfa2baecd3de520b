//! The four DORA indicators, computed from finished PipelineRuns (pure).
//!
//! A PipelineRun is a **deployment** to environment `E` when it has the
//! label `tektite.dev/environment: E` (the `ci-cd` pipeline sets it from
//! its `environment` param). It counts once it has finished: succeeded, or
//! failed; a cancelled one was neither a change delivered nor a change
//! that failed, and is left out. Its time is its completion time.
//!
//! The **change's commit time** is the PipelineRun's result `commit-time`,
//! else a result `committer-date` of one of its TaskRuns (the git-clone
//! and git-checkout tasks' result), each either seconds since the epoch or
//! an RFC 3339 time.
//!
//! Over a window `[since, until]`, per environment:
//! - **deployment frequency**: successful deployments per day;
//! - **lead time for changes**: from the commit to its successful
//!   deployment, median and 90th percentile, over the deployments whose
//!   commit time is known;
//! - **change failure rate**: failed deployments over all deployments;
//! - **time to restore**: for each run of failures (one failed deployment,
//!   or several in a row), from the first failure to the next successful
//!   deployment to the same environment; the mean over the runs of
//!   failures that were restored, and apart the one still failing (since
//!   when).
//!
//! A run of failures belongs to the window where it started; one that
//! started before it and was restored in it counts there too, from the
//! window's start (what the window saw of it).

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tektite_api::param::ParamValue;
use tektite_api::v1::{Condition, PipelineRun, TaskRun};

/// The label that makes a PipelineRun a deployment, and to where.
pub const ENVIRONMENT_LABEL: &str = "tektite.dev/environment";
/// The PipelineRun result with the commit time of the change it deploys.
pub const COMMIT_TIME_RESULT: &str = "commit-time";
/// A TaskRun result with that commit time (git-clone's).
pub const COMMITTER_DATE_RESULT: &str = "committer-date";

/// One finished deployment, as the indicators need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub name: String,
    pub environment: String,
    pub succeeded: bool,
    /// When it finished, in seconds since the epoch.
    pub finished: i64,
    /// When the change it deploys was committed, if known.
    pub committed: Option<i64>,
}

/// The deployment a PipelineRun is, given the TaskRuns it made: `None`
/// for one without the environment label, not finished, or cancelled.
pub fn deployment_of(pr: &PipelineRun, task_runs: &[TaskRun]) -> Option<Deployment> {
    let environment = pr.metadata.labels.as_ref()?.get(ENVIRONMENT_LABEL)?;
    let status = pr.status.as_ref()?;
    let done = Condition::succeeded(&status.conditions)?;
    let succeeded = match done.status.as_str() {
        "True" => true,
        "False" if !is_cancelled(done.reason.as_deref()) => false,
        _ => return None,
    };
    let finished = status
        .completion_time
        .as_ref()
        .or(status.start_time.as_ref())?
        .0
        .as_second();
    let from_pipeline = status
        .results
        .iter()
        .filter(|r| r.name == COMMIT_TIME_RESULT)
        .find_map(|r| seconds(&r.value));
    let from_tasks = || {
        task_runs
            .iter()
            .filter_map(|t| t.status.as_ref())
            .flat_map(|s| &s.results)
            .filter(|r| r.name == COMMITTER_DATE_RESULT)
            .find_map(|r| seconds(&r.value))
    };
    Some(Deployment {
        name: pr.metadata.name.clone().unwrap_or_default(),
        environment: environment.clone(),
        succeeded,
        finished,
        committed: from_pipeline.or_else(from_tasks),
    })
}

/// Whether a `Succeeded=False` reason says the run was cancelled.
fn is_cancelled(reason: Option<&str>) -> bool {
    matches!(
        reason,
        Some("Cancelled" | "PipelineRunCancelled" | "CancelledRunFinally" | "StoppedRunFinally")
    )
}

/// A time result: whole seconds since the epoch, or an RFC 3339 time.
pub fn seconds(v: &ParamValue) -> Option<i64> {
    let ParamValue::String(s) = v else {
        return None;
    };
    let s = s.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<Timestamp>().ok().map(|t| t.as_second()))
}

/// The indicators of one environment over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Indicators {
    pub environment: String,
    pub deployments: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Successful deployments per day.
    pub deployments_per_day: f64,
    pub lead_time: Option<LeadTime>,
    /// Failed over all deployments; none without deployments.
    pub change_failure_rate: Option<f64>,
    pub restore: Restore,
}

/// Lead time for changes, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadTime {
    pub median_seconds: f64,
    pub p90_seconds: f64,
    /// The successful deployments whose commit time is known.
    pub changes: usize,
}

/// Time to restore service after failed deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    /// Mean over the restored runs of failures; none if none was.
    pub mean_seconds: Option<f64>,
    pub restored: usize,
    /// Since when the environment has been failing, if its last
    /// deployment failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
}

/// The indicators of every environment with a deployment in
/// `[since, until]` (seconds since the epoch), by environment; `only`
/// keeps one environment (reported even without deployments).
pub fn indicators(
    deployments: &[Deployment],
    since: i64,
    until: i64,
    only: Option<&str>,
) -> Vec<Indicators> {
    let mut by_env: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
    if let Some(e) = only {
        by_env.insert(e, Vec::new());
    }
    for d in deployments.iter().filter(|d| d.finished <= until) {
        if only.is_none_or(|e| e == d.environment) {
            by_env.entry(&d.environment).or_default().push(d);
        }
    }
    by_env
        .into_iter()
        .filter_map(|(env, mut all)| {
            all.sort_by_key(|d| (d.finished, d.name.clone()));
            let of_env = env_indicators(env, &all, since, until);
            (of_env.deployments > 0 || only.is_some()).then_some(of_env)
        })
        .collect()
}

/// One environment's indicators; `all` its deployments up to `until`, in
/// time order (those before `since` tell where a run of failures began).
fn env_indicators(env: &str, all: &[&Deployment], since: i64, until: i64) -> Indicators {
    let window: Vec<&Deployment> = all
        .iter()
        .copied()
        .filter(|d| d.finished >= since)
        .collect();
    let succeeded = window.iter().filter(|d| d.succeeded).count();
    let failed = window.len() - succeeded;
    let days = (until - since).max(1) as f64 / 86_400.0;
    let mut leads: Vec<f64> = window
        .iter()
        .filter(|d| d.succeeded)
        .filter_map(|d| Some((d.finished - d.committed?).max(0) as f64))
        .collect();
    leads.sort_by(f64::total_cmp);
    let lead_time = (!leads.is_empty()).then(|| LeadTime {
        median_seconds: percentile(&leads, 50),
        p90_seconds: percentile(&leads, 90),
        changes: leads.len(),
    });
    Indicators {
        environment: env.to_string(),
        deployments: window.len(),
        succeeded,
        failed,
        deployments_per_day: succeeded as f64 / days,
        lead_time,
        change_failure_rate: (!window.is_empty()).then(|| failed as f64 / window.len() as f64),
        restore: restore(all, since),
    }
}

/// The nearest-rank percentile `p` of sorted, non-empty `v`; the median of
/// an even count is the mean of the middle two.
fn percentile(v: &[f64], p: usize) -> f64 {
    if p == 50 && v.len().is_multiple_of(2) {
        return (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// How long `this` successful deployment restored its environment after:
/// from the first of the failures right before it in `history` (the
/// environment's other deployments, any order) to it; `None` if it failed
/// or the deployment before it succeeded.
pub fn restored_after(history: &[Deployment], this: &Deployment) -> Option<i64> {
    if !this.succeeded {
        return None;
    }
    let mut before: Vec<&Deployment> = history
        .iter()
        .filter(|d| d.environment == this.environment && d.name != this.name)
        .filter(|d| d.finished <= this.finished)
        .collect();
    before.sort_by_key(|d| (d.finished, d.name.clone()));
    let first_failure = before.iter().rev().take_while(|d| !d.succeeded).last()?;
    Some(this.finished - first_failure.finished)
}

/// Runs of failures and their restores, for those restored in the window
/// or still failing.
fn restore(all: &[&Deployment], since: i64) -> Restore {
    let mut out = Restore::default();
    let mut total = 0.0;
    let mut failing: Option<i64> = None;
    for d in all {
        match (d.succeeded, failing) {
            (false, None) => failing = Some(d.finished),
            (true, Some(first)) => {
                if d.finished >= since {
                    total += (d.finished - first.max(since)) as f64;
                    out.restored += 1;
                }
                failing = None;
            }
            _ => {}
        }
    }
    out.failing_since = failing;
    out.mean_seconds = (out.restored > 0).then(|| total / out.restored as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const DAY: i64 = 86_400;

    fn dep(env: &str, ok: bool, finished: i64, committed: Option<i64>) -> Deployment {
        Deployment {
            name: format!("{env}-{finished}"),
            environment: env.into(),
            succeeded: ok,
            finished,
            committed,
        }
    }

    #[test]
    fn known_answers_for_each_indicator() {
        // 10 days; prod: 6 successes, 2 failures (one run of two, restored
        // 3 h after the first), lead times 1..6 h.
        let t0 = 1_000 * DAY;
        let mut d: Vec<Deployment> = (1..=4)
            .map(|i| dep("prod", true, t0 + i * DAY, Some(t0 + i * DAY - i * H)))
            .collect();
        d.push(dep("prod", false, t0 + 5 * DAY, Some(t0)));
        d.push(dep("prod", false, t0 + 5 * DAY + H, None));
        d.push(dep(
            "prod",
            true,
            t0 + 5 * DAY + 3 * H,
            Some(t0 + 5 * DAY - 2 * H),
        ));
        d.push(dep("prod", true, t0 + 6 * DAY, Some(t0 + 6 * DAY - 6 * H)));
        let r = indicators(&d, t0, t0 + 10 * DAY, None);
        assert_eq!(r.len(), 1);
        let p = &r[0];
        assert_eq!((p.deployments, p.succeeded, p.failed), (8, 6, 2));
        assert!((p.deployments_per_day - 0.6).abs() < 1e-9);
        // Leads: 1, 2, 3, 4, 5, 6 h → median 3.5 h, p90 6 h.
        let lead = p.lead_time.as_ref().unwrap();
        assert_eq!(lead.changes, 6);
        assert!((lead.median_seconds - 3.5 * H as f64).abs() < 1e-9);
        assert!((lead.p90_seconds - 6.0 * H as f64).abs() < 1e-9);
        assert_eq!(p.change_failure_rate, Some(0.25));
        assert_eq!(p.restore.restored, 1);
        assert_eq!(p.restore.mean_seconds, Some(3.0 * H as f64));
        assert_eq!(p.restore.failing_since, None);
    }

    #[test]
    fn no_deployments_gives_nothing_to_divide() {
        assert!(indicators(&[], 0, DAY, None).is_empty());
        let r = indicators(&[], 0, DAY, Some("prod"));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].deployments, 0);
        assert_eq!(r[0].deployments_per_day, 0.0);
        assert_eq!(r[0].lead_time, None);
        assert_eq!(r[0].change_failure_rate, None);
        assert_eq!(r[0].restore, Restore::default());
    }

    #[test]
    fn only_failures_are_a_failure_rate_of_one_still_failing() {
        let d = vec![dep("e", false, 10, None), dep("e", false, 20, Some(5))];
        let r = &indicators(&d, 0, DAY, None)[0];
        assert_eq!(r.change_failure_rate, Some(1.0));
        assert_eq!(r.deployments_per_day, 0.0);
        assert_eq!(r.lead_time, None, "a failure delivers no change");
        assert_eq!(r.restore.restored, 0);
        assert_eq!(r.restore.mean_seconds, None);
        assert_eq!(r.restore.failing_since, Some(10));
    }

    #[test]
    fn a_failure_never_restored_stays_failing_after_earlier_restores() {
        let d = vec![
            dep("e", false, 100, None),
            dep("e", true, 400, None),
            dep("e", false, 1000, None),
        ];
        let r = &indicators(&d, 0, DAY, None)[0];
        assert_eq!(r.restore.restored, 1);
        assert_eq!(r.restore.mean_seconds, Some(300.0));
        assert_eq!(r.restore.failing_since, Some(1000));
    }

    #[test]
    fn the_window_and_the_environment_choose_what_counts() {
        let d = vec![
            dep("prod", false, 50, None), // before the window: the failure began there
            dep("prod", true, 150, None), // restored in it: counted from its start
            dep("prod", true, 300, None), // after `until`: not counted
            dep("staging", true, 120, Some(100)),
        ];
        let r = indicators(&d, 100, 200, None);
        assert_eq!(r.len(), 2);
        let prod = &r[0];
        assert_eq!((prod.environment.as_str(), prod.deployments), ("prod", 1));
        assert_eq!(prod.change_failure_rate, Some(0.0));
        assert_eq!(prod.restore.mean_seconds, Some(50.0));
        let staging = indicators(&d, 100, 200, Some("staging"));
        assert_eq!(staging.len(), 1);
        assert_eq!(staging[0].lead_time.as_ref().unwrap().median_seconds, 20.0);
    }

    #[test]
    fn a_success_restores_from_the_first_failure_right_before_it() {
        let history = vec![
            dep("e", true, 10, None),
            dep("e", false, 20, None),
            dep("e", false, 30, None),
            dep("other", true, 35, None),
        ];
        let now = dep("e", true, 50, None);
        assert_eq!(restored_after(&history, &now), Some(30));
        // Shuffled history, the same answer.
        let mut shuffled = history.clone();
        shuffled.reverse();
        assert_eq!(restored_after(&shuffled, &now), Some(30));
        // After a success, or as a failure: nothing restored.
        assert_eq!(restored_after(&history[..1], &now), None);
        assert_eq!(restored_after(&history, &dep("e", false, 50, None)), None);
        // No history (a first deployment): nothing restored.
        assert_eq!(restored_after(&[], &now), None);
        // `this` itself in the history is not its own predecessor.
        let mut with_self = history.clone();
        with_self.push(now.clone());
        assert_eq!(restored_after(&with_self, &now), Some(30));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[7.0], 50), 7.0);
        assert_eq!(percentile(&[7.0], 90), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50), 2.0);
        assert_eq!(percentile(&[1.0, 3.0], 50), 2.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 90), 9.0);
    }

    /// A PipelineRun with these labels, outcome and results.
    fn pr(
        env: Option<&str>,
        status: &str,
        reason: &str,
        results: serde_json::Value,
    ) -> PipelineRun {
        let labels = env.map(|e| serde_json::json!({ENVIRONMENT_LABEL: e}));
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": "d1", "labels": labels},
            "spec": {"pipelineRef": {"name": "p"}},
            "status": {
                "startTime": "2026-12-01T10:00:00Z",
                "completionTime": "2026-12-01T10:30:00Z",
                "conditions": [{"type": "Succeeded", "status": status, "reason": reason}],
                "results": results,
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pipelinerun_is_a_deployment_by_its_label_and_outcome() {
        let none = serde_json::json!([]);
        let prod = Some("prod");
        let done = 1_796_121_000; // 2026-12-01T10:30:00Z
        let d = deployment_of(&pr(prod, "True", "Succeeded", none.clone()), &[]).unwrap();
        assert_eq!(
            (d.environment.as_str(), d.succeeded, d.finished),
            ("prod", true, done)
        );
        assert_eq!(d.committed, None);
        let failed = deployment_of(&pr(prod, "False", "Failed", none.clone()), &[]).unwrap();
        assert!(!failed.succeeded);
        let unlabelled = pr(None, "True", "Succeeded", none.clone());
        assert_eq!(deployment_of(&unlabelled, &[]), None);
        let running = pr(prod, "Unknown", "Running", none.clone());
        assert_eq!(deployment_of(&running, &[]), None);
        for cancelled in ["Cancelled", "PipelineRunCancelled", "StoppedRunFinally"] {
            let r = pr(prod, "False", cancelled, none.clone());
            assert_eq!(deployment_of(&r, &[]), None, "{cancelled}");
        }
        // The pipeline's result first, then a TaskRun's committer-date.
        let result = serde_json::json!([{"name": "commit-time", "value": "2026-12-01T09:30:00Z"}]);
        let with_result = pr(prod, "True", "Succeeded", result);
        assert_eq!(
            deployment_of(&with_result, &[]).unwrap().committed,
            Some(done - 3600)
        );
        let tr: TaskRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": "d1-clone"},
            "spec": {"taskRef": {"name": "git-clone"}},
            "status": {"results": [{"name": "committer-date", "value": "1796110200"}]}
        }))
        .unwrap();
        let plain = pr(prod, "True", "Succeeded", none);
        let d = deployment_of(&plain, std::slice::from_ref(&tr)).unwrap();
        assert_eq!(d.committed, Some(1_796_110_200));
        let d = deployment_of(&with_result, &[tr]).unwrap();
        assert_eq!(d.committed, Some(done - 3600), "the pipeline's result wins");
    }

    #[test]
    fn time_results_in_seconds_or_rfc3339_and_nothing_else() {
        let s = |v: &str| seconds(&ParamValue::String(v.into()));
        assert_eq!(s("1796110200"), Some(1_796_110_200));
        assert_eq!(s(" 1796110200\n"), Some(1_796_110_200));
        assert_eq!(s("2026-12-01T09:30:00Z"), Some(1_796_117_400));
        assert_eq!(s("2026-12-01T10:30:00+01:00"), Some(1_796_117_400));
        assert_eq!(s("yesterday"), None);
        assert_eq!(seconds(&ParamValue::Array(vec!["1".into()])), None);
    }
}
