#!/usr/bin/env python3
"""A synthetic history of the Tektite controller's metrics, as OpenMetrics
files for `promtool tsdb create-blocks-from openmetrics`
(hack/render-dashboards.sh).

    synth.py pipelines NOW OUT_DIR   # 26 hours of runs, scraped every minute
    synth.py dora NOW OUT_DIR        # 37 days of deployments, every 10 minutes

NOW is seconds since the epoch. The series carry the names and labels of
controller/controller/src/metrics.rs (buckets included) plus the job and
instance labels a scrape adds. What happens is simulated run by run with a
fixed seed: a few pipelines in two namespaces with working-hour traffic,
concurrency keys that queue releases, TaskRuns one after another, and a few
incidents so that the panels have something to show (a broken main branch
that fires PipelineRunsFailing, slow pod creation, an S3 outage, an API
server returning 500s). For DORA: three environments from elite to slow,
with a bad week in prod. None of it is measured from a real cluster.

The files are cut into chunks of a few hours: promtool reads its whole
input once per two-hour block, so small files keep the backfill fast.
"""

import bisect
import math
import os
import random
import sys

SCRAPE = {"job": "tektite-controller", "instance": "10.244.1.7:9090"}

# controller/controller/src/metrics.rs
DURATION_BUCKETS = [10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 5400.0, 10800.0, 21600.0, 43200.0, 86400.0]
RECONCILE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
LAG_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
DORA_BUCKETS = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 345600.0, 604800.0]

T = "tekton_pipelines_controller_"
HOUR = 3600
DAY = 86400


class Store:
    """Series sampled at `start + i * step`: counters and histograms as
    increments per scrape (summed when written), gauges as values."""

    def __init__(self, start, end, step):
        self.start, self.step = start, step
        self.n = int((end - start) // step) + 1
        self.counters = {}  # (name, labels) -> [increment per scrape]
        self.gauges = {}  # (name, labels) -> [value or None]
        self.first = {}  # (name, labels) -> first scrape index the series has

    def index(self, t):
        """The first scrape that sees something that happened at `t`."""
        return min(self.n - 1, max(0, math.ceil((t - self.start) / self.step)))

    def _incs(self, name, labels, i):
        key = (name, labels)
        if key not in self.counters:
            self.counters[key] = [0.0] * self.n
            self.first[key] = i
        else:
            self.first[key] = min(self.first[key], i)
        return self.counters[key]

    def inc(self, name, labels, t, v=1.0):
        i = self.index(t)
        self._incs(name, labels, i)[i] += v

    def declare(self, name, labels):
        """A series present from the first scrape (a counter registered at
        start, with no labels)."""
        self._incs(name, labels, 0)

    def observe(self, name, labels, buckets, t, value):
        i = self.index(t)
        for le in buckets:
            b = self._incs(f"{name}_bucket", labels + (("le", fmt_le(le)),), i)
            if value <= le:
                b[i] += 1
        self._incs(f"{name}_bucket", labels + (("le", "+Inf"),), i)[i] += 1
        self._incs(f"{name}_sum", labels, i)[i] += value
        self._incs(f"{name}_count", labels, i)[i] += 1

    def observe_many(self, name, labels, buckets, t, n, median, sigma, rng):
        """`n` observations from a log-normal distribution at once: each
        bucket gets its expected share, rounded at random."""
        if n <= 0:
            self.observe_none(name, labels, buckets, t)
            return
        if n < 30:
            for _ in range(n):
                self.observe(name, labels, buckets, t, rng.lognormvariate(math.log(median), sigma))
            return
        i = self.index(t)
        for le in buckets:
            p = 0.5 * (1 + math.erf((math.log(le) - math.log(median)) / (sigma * math.sqrt(2))))
            x = n * p
            k = int(x) + (1 if rng.random() < x - int(x) else 0)
            self._incs(f"{name}_bucket", labels + (("le", fmt_le(le)),), i)[i] += min(k, n)
        self._incs(f"{name}_bucket", labels + (("le", "+Inf"),), i)[i] += n
        self._incs(f"{name}_sum", labels, i)[i] += n * median * math.exp(sigma * sigma / 2)
        self._incs(f"{name}_count", labels, i)[i] += n

    def observe_none(self, name, labels, buckets, t):
        i = self.index(t)
        for le in buckets:
            self._incs(f"{name}_bucket", labels + (("le", fmt_le(le)),), i)
        self._incs(f"{name}_bucket", labels + (("le", "+Inf"),), i)
        self._incs(f"{name}_sum", labels, i)
        self._incs(f"{name}_count", labels, i)

    def gauge(self, name, labels, i, value):
        key = (name, labels)
        if key not in self.gauges:
            self.gauges[key] = [None] * self.n
        self.gauges[key][i] = value

    def write(self, out_dir, chunk):
        """One file per `chunk` seconds of scrapes."""
        os.makedirs(out_dir, exist_ok=True)
        series = []
        for (name, labels), incs in self.counters.items():
            acc, values = 0.0, []
            for v in incs:
                acc += v
                values.append(acc)
            series.append((name, labels, self.first[(name, labels)], values))
        for (name, labels), values in self.gauges.items():
            series.append((name, labels, 0, values))
        series.sort(key=lambda s: (s[0], s[1]))
        per = max(1, int(chunk // self.step))
        for c, lo in enumerate(range(0, self.n, per)):
            hi = min(self.n, lo + per)
            with open(os.path.join(out_dir, f"{c:04d}.om"), "w") as f:
                for name, labels, first, values in series:
                    head = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels + tuple(SCRAPE.items())) + "} "
                    for i in range(max(lo, first), hi):
                        v = values[i]
                        if v is None:
                            continue
                        f.write(f"{head}{fmt(v)} {self.start + i * self.step}\n")
                f.write("# EOF\n")


def fmt_le(le):
    return repr(float(le))


def fmt(v):
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.1f}"


def working(t, peak, night, weekend=0.2):
    """Arrivals per hour at `t`: `night` outside working hours (UTC), rising
    to `peak` at mid-day on weekdays, a fraction of that on weekends."""
    h = (t % DAY) / HOUR
    bump = math.sin(math.pi * (h - 7) / 12) ** 1.5 if 7 <= h <= 19 else 0.0
    rate = night + (peak - night) * bump
    weekday = (int(t // DAY) + 3) % 7  # 1970-01-01 was a Thursday: 0 is Monday
    return rate * (weekend if weekday >= 5 else 1.0)


def arrivals(rng, t0, t1, rate_at, max_rate):
    """Times of a Poisson process of `rate_at(t)` per hour (thinning)."""
    out, t = [], t0
    while True:
        t += rng.expovariate(max_rate / HOUR)
        if t >= t1:
            return out
        if rng.random() < rate_at(t) / max_rate:
            out.append(t)


# --- Pipelines --------------------------------------------------------------

# (namespace, pipeline, peak per hour, night per hour, stages of tasks run
# in parallel: (name, median seconds, steps, log bytes a second), concurrency
# key, failure probability, the task that fails)
PIPELINES = [
    ("ci", "build-and-test", 15.0, 0.8,
     [[("git-clone", 12, 1, 300)], [("cargo-build", 230, 1, 2500), ("cargo-clippy", 150, 1, 1200)],
      [("cargo-test", 190, 2, 3500)]],
     None, 0.05, "cargo-test"),
    ("ci", "release", 1.0, 0.1,
     [[("git-clone", 12, 1, 300)], [("cargo-build", 420, 1, 2500)], [("buildah-build", 300, 2, 1800)],
      [("cosign-sign", 25, 1, 200)]],
     "release", 0.04, "buildah-build"),
    ("payments", "ci-cd", 6.0, 0.4,
     [[("git-clone", 10, 1, 300)],
      [("cargo-test", 280, 2, 3000), ("checkov-scan", 70, 1, 900), ("trivy-scan", 110, 1, 1200)]],
     None, 0.07, "checkov-scan"),
    ("payments", "deploy", 1.4, 0.05,
     [[("helm-upgrade", 160, 1, 400)], [("kubectl-apply", 45, 1, 150)]],
     "deploy-prod", 0.05, "helm-upgrade"),
]
NIGHTLY = ("ci", "nightly-e2e", [[("git-clone", 12, 1, 300)], [("e2e-test", 4200, 3, 1500)]], 0.1, "e2e-test")


def pipelines(now, out_dir):
    rng = random.Random(23)
    start, step = now - 26 * HOUR, 60
    sim0 = start - 3 * HOUR
    s = Store(start, now, step)

    # Incidents, in the working hours of the day that ends at now (16:00
    # by default).
    slow_pods = (now - 7 * HOUR - 30 * 60, now - 7 * HOUR)
    s3_outage = (now - 5 * HOUR - 35 * 60, now - 5 * HOUR - 17 * 60)
    broken_main = (now - 4 * HOUR - 50 * 60, now - 2 * HOUR - 40 * 60)
    release_train = (now - 3 * HOUR - 20 * 60, now - 3 * HOUR)
    api_500 = (now - 1 * HOUR - 40 * 60, now - 1 * HOUR - 30 * 60)

    def within(t, span):
        return span[0] <= t < span[1]

    runs = []  # (namespace, pipeline, tasks, key, p_fail, fail_task, created)
    for ns, name, peak, night, tasks, key, p_fail, fail_task in PIPELINES:
        for t in arrivals(rng, sim0, now, lambda t: working(t, peak, night), max(peak, night)):
            runs.append((ns, name, tasks, key, p_fail, fail_task, t))
    # A release train: six releases within twenty minutes queue on their key.
    for _ in range(6):
        t = rng.uniform(*release_train)
        runs.append(("ci", "release", PIPELINES[1][4], "release", 0.04, "buildah-build", t))
    day = sim0 - sim0 % DAY
    while day < now:
        t = day + 2 * HOUR + rng.uniform(0, 60)
        if sim0 <= t < now:
            ns, name, tasks, p_fail, fail_task = NIGHTLY
            runs.append((ns, name, tasks, None, p_fail, fail_task, t))
        day += DAY
    runs.sort(key=lambda r: r[-1])

    key_free = {}  # concurrency key -> when its place is free
    pr_spans, tr_spans, queue_spans, key_spans = [], [], [], []
    containers = []  # (start, end, steps, bytes per second)
    reconciles = []  # (time, kind)
    for ns, name, tasks, key, p_fail, fail_task, created in runs:
        if name == "build-and-test" and within(created, broken_main):
            p_fail = 0.5
        admitted = created + rng.uniform(0.2, 1.5)
        if key is not None:
            admitted = max(admitted, key_free.get(key, 0) + rng.uniform(1, 4))
            queue_spans.append((ns, key, created, admitted))
            if admitted >= start:
                s.observe("tektite_pipelinerun_queue_wait_seconds", (), DURATION_BUCKETS, admitted, admitted - created)
        u = rng.random()
        outcome = "failed" if u < p_fail else "cancelled" if u < p_fail + 0.015 else "success"
        every = [task for stage in tasks for task in stage]
        stop_at = fail_task if outcome == "failed" else rng.choice(every)[0] if outcome == "cancelled" else None
        t = admitted + rng.uniform(0.5, 2)
        reconciles += [(created, "PipelineRun"), (admitted, "PipelineRun")]
        for stage in tasks:
            ends, stopped = [], False
            for task, median, steps, bps in stage:
                tr_created = t + rng.uniform(0, 1.5)
                load = 1 + working(tr_created, 1.5, 0)  # the API server is busier by day
                latency = rng.lognormvariate(math.log(0.6 * load), 0.45)
                if within(tr_created, slow_pods):
                    latency = rng.lognormvariate(math.log(38), 0.2)
                if tr_created >= start:
                    s.gauge(f"{T}taskruns_pod_latency_milliseconds", (("namespace", ns), ("task", task)),
                            s.index(tr_created), round(latency * 1000))
                began = tr_created + latency + rng.uniform(1, 4)
                took = rng.lognormvariate(math.log(median), 0.3)
                status = "success"
                if task == stop_at:
                    took *= rng.uniform(0.2, 0.9)
                    status, stopped = outcome, True
                end = began + took
                ends.append(end)
                tr_spans.append((tr_created, end))
                containers.append((began, end, steps, bps))
                reconciles += [(tr_created, "TaskRun"), (tr_created + latency, "TaskRun"), (began, "TaskRun")]
                reconciles += [(began + took * (k + 1) / (steps + 1), "TaskRun") for k in range(steps)]
                reconciles += [(began + took * k / 6, "TaskRun") for k in range(1, 6)]  # pod status updates
                reconciles += [(end, "TaskRun"), (end, "PipelineRun")]
                if sim0 <= end < now:
                    s.inc(f"{T}taskrun_total", (("status", status),), end)
                    s.observe(f"{T}taskrun_duration_seconds", (("namespace", ns), ("task", task), ("status", status)),
                              DURATION_BUCKETS, end, end - tr_created)
            t = max(ends) + rng.uniform(0.5, 2)
            if stopped:
                break
        ended = t
        pr_spans.append((admitted, ended))
        if key is not None:
            key_spans.append((ns, key, admitted, ended))
            key_free[key] = ended
        if ended < now:
            s.inc(f"{T}pipelinerun_total", (("status", outcome),), ended)
            s.observe(f"{T}pipelinerun_duration_seconds", (("namespace", ns), ("pipeline", name), ("status", outcome)),
                      DURATION_BUCKETS, ended, ended - admitted)

    # Gauges, as each scrape sees them.
    for i in range(s.n):
        at = start + i * step
        s.gauge(f"{T}running_pipelineruns", (), i, sum(1 for a, b in pr_spans if a <= at < b))
        s.gauge(f"{T}running_taskruns", (), i, sum(1 for a, b in tr_spans if a <= at < b))
        live = [c for c in containers if c[0] <= at < c[1]]
        s.gauge("tektite_log_archive_containers", (), i, sum(c[2] for c in live))
        for ns, key in sorted({(q[0], q[1]) for q in queue_spans}):
            s.gauge("tektite_concurrency_running", (("namespace", ns), ("key", key)), i,
                    sum(1 for n, k, a, b in key_spans if (n, k) == (ns, key) and a <= at < b))
            s.gauge("tektite_concurrency_queued", (("namespace", ns), ("key", key)), i,
                    sum(1 for n, k, a, b in queue_spans if (n, k) == (ns, key) and a <= at < b))
    # The pod latency gauge keeps its last value between pods.
    for key, values in s.gauges.items():
        if key[0].endswith("pod_latency_milliseconds"):
            last = None
            for i, v in enumerate(values):
                last = v if v is not None else last
                values[i] = last

    # Reconciles: the runs' own, a resync, 409 conflicts; and the API server's bad minutes.
    resync = arrivals(rng, start, now, lambda t: 900.0, 900.0)
    reconciles += [(t, rng.choice(["TaskRun", "PipelineRun"])) for t in resync]
    bad = arrivals(rng, api_500[0], api_500[1], lambda t: 4800.0, 4800.0)
    for kind in ("TaskRun", "PipelineRun"):
        s.declare("tektite_controller_reconcile_total", (("kind", kind), ("result", "ok")))
    buckets_by_bin = {}
    for t, kind in reconciles:
        if not start <= t < now:
            continue
        error = None
        if within(t, api_500) and rng.random() < 0.6:
            error = "api_500" if rng.random() < 0.8 else "transport"
        elif rng.random() < 0.012:
            error = "api_409"
        took = rng.lognormvariate(math.log(0.006 if kind == "TaskRun" else 0.011), 0.7)
        if error in ("api_500", "transport"):
            took = rng.lognormvariate(math.log(1.2), 0.8)
        result_inc(s, t, kind, error)
        buckets_by_bin.setdefault((s.index(t), kind), []).append(took)
    for t in bad:
        kind = "TaskRun" if rng.random() < 0.7 else "PipelineRun"
        error = "api_500" if rng.random() < 0.85 else "transport"
        result_inc(s, t, kind, error)
        buckets_by_bin.setdefault((s.index(t), kind), []).append(rng.lognormvariate(math.log(1.5), 0.7))
    for (i, kind), values in sorted(buckets_by_bin.items()):
        for v in values:
            s.observe("tektite_controller_reconcile_duration_seconds", (("kind", kind),), RECONCILE_BUCKETS,
                      start + i * step, v)

    # The log archive: bytes, parts and their lag, failures in the outage.
    s.declare("tektite_log_archived_bytes_total", ())
    s.declare("tektite_log_archive_failures_total", ())
    for i in range(1, s.n):
        at = start + i * step
        live = [c for c in containers if c[0] <= at < c[1]]
        down = within(at, s3_outage)
        written = sum(c[2] * c[3] for c in live) * step * rng.uniform(0.7, 1.3)
        parts = sum(c[2] for c in live) * int(step / 2.5)
        if down:
            written *= 0.05
            parts //= 10
            s.inc("tektite_log_archive_failures_total", (), at, rng.randint(18, 34))
        elif rng.random() < 0.01:
            s.inc("tektite_log_archive_failures_total", (), at, 1)
        s.inc("tektite_log_archived_bytes_total", (), at, round(written))
        median, sigma = (14.0, 0.7) if down else (0.35, 0.55)
        if at - s3_outage[1] in range(0, 5 * step):
            median, sigma = 4.0, 0.9  # the backlog
        s.observe_many("tektite_log_archive_lag_seconds", (), LAG_BUCKETS, at, parts, median, sigma, rng)
    s.write(out_dir, 6 * HOUR)


def result_inc(s, t, kind, error):
    s.inc("tektite_controller_reconcile_total", (("kind", kind), ("result", "error" if error else "ok")), t)
    if error:
        s.inc("tektite_controller_reconcile_errors_total", (("kind", kind), ("error", error)), t)


# --- DORA -------------------------------------------------------------------

# (environment, peak per hour, night per hour, lead time median seconds and
# its spread, failure probability, restore delay median seconds)
ENVIRONMENTS = [
    ("dev", 9.0, 0.6, 35 * 60, 0.55, 0.05, 25 * 60),
    ("staging", 1.3, 0.1, 3.5 * HOUR, 0.5, 0.09, 50 * 60),
    ("prod", 0.35, 0.0, 26 * HOUR, 0.6, 0.13, 2.5 * HOUR),
]


def dora(now, out_dir):
    rng = random.Random(7)
    start, step = now - 37 * DAY, 600
    s = Store(start, now, step)
    # A bad week in prod: more failures, slower restores; lead times shrink
    # over the five weeks (smaller changes).
    bad_week = (now - 22 * DAY, now - 16 * DAY)
    for env, peak, night, lead, spread, p_fail, restore in ENVIRONMENTS:
        s.declare("tektite_deployments_total", (("environment", env), ("status", "succeeded")))
        s.observe_none("tektite_deployment_lead_time_seconds", (("environment", env),), DORA_BUCKETS, start)
        s.observe_none("tektite_recovery_time_seconds", (("environment", env),), DORA_BUCKETS, start)
        times = arrivals(rng, start, now, lambda t: working(t, peak, night, 0.1), max(peak, night))
        if env == "prod":
            # Two release windows on weekdays, besides the hotfixes above.
            day = start - start % DAY
            while day < now:
                if (int(day // DAY) + 3) % 7 < 5:
                    times += [day + 10 * HOUR + rng.uniform(0, 1800), day + 15 * HOUR + rng.uniform(0, 1800)]
                day += DAY
            times = sorted(t for t in times if start <= t < now)
        failing_since = None
        pending = sorted(times)
        while pending:
            t = pending.pop(0)
            f, r = p_fail, restore
            if env == "prod" and bad_week[0] <= t < bad_week[1]:
                f, r = 0.4, 7 * HOUR
            ok = rng.random() >= (0.1 if failing_since is not None else f)
            labels = (("environment", env),)
            if not ok:
                s.inc("tektite_deployments_total", labels + (("status", "failed"),), t)
                if failing_since is None:
                    failing_since = t
                    # A fix or a rollback follows.
                    bisect.insort(pending, t + rng.lognormvariate(math.log(r), 0.6))
                continue
            s.inc("tektite_deployments_total", labels + (("status", "succeeded"),), t)
            trend = 1.0 - 0.35 * (t - start) / (now - start)
            s.observe("tektite_deployment_lead_time_seconds", labels, DORA_BUCKETS, t,
                      rng.lognormvariate(math.log(lead * trend), spread))
            if failing_since is not None:
                s.observe("tektite_recovery_time_seconds", labels, DORA_BUCKETS, t, t - failing_since)
                failing_since = None
    s.write(out_dir, 2 * DAY)


def main():
    what, now, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    {"pipelines": pipelines, "dora": dora}[what](now, out_dir)


if __name__ == "__main__":
    main()
