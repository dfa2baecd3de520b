//! The controller's configuration from a ConfigMap like Tekton's
//! `config-defaults`: the keys Tekton uses, plus Tektite's images and result
//! size limit. The same keys are flags of the binary (`--entrypoint-image`,
//! ...): the flags give the base, a key the ConfigMap sets wins over its
//! flag, and a key it drops (or the ConfigMap's deletion) falls back to the
//! flag. Keys not set keep their defaults; an invalid value is an error
//! naming the key (or flag) and what was expected, and the previous
//! configuration stays in force.

use std::collections::BTreeMap;
use std::time::Duration;

use tektite_engine::pod::Config;

/// The ConfigMap's name (in the controller's namespace).
pub const CONFIG_MAP: &str = "config-defaults";

/// Every key read, with what it sets.
pub const KEYS: &[(&str, &str)] = &[
    (
        "default-timeout-minutes",
        "timeout of runs that set none, in minutes (Tekton's key)",
    ),
    (
        "default-service-account",
        "service account of TaskRuns that name none (Tekton's key)",
    ),
    (
        "default-managed-by-label-value",
        "value of the app.kubernetes.io/managed-by label (Tekton's key)",
    ),
    (
        "entrypoint-image",
        "image holding the step wrapper at /ko-app/entrypoint",
    ),
    (
        "shell-image",
        "image with a POSIX shell, for placing scripts",
    ),
    (
        "max-result-size",
        "largest result a step may write, in bytes",
    ),
    (
        "logs-retention-days",
        "days archived logs are kept after their last line (absent: until their run is deleted)",
    ),
    (
        "logs-max-bytes",
        "bytes of a container's log archived; the rest is counted and the log says so",
    ),
    (
        "max-running-pipelineruns-per-namespace",
        "PipelineRuns that may run at once in one namespace; the others queue (absent: no cap)",
    ),
    (
        "queue-timeout-from",
        "when a queued PipelineRun's timeouts start: creation (the default) or start",
    ),
    (
        "tracing-enabled",
        "true or false: send runs' traces over OTLP (default: when an endpoint is set here or in OTEL_*)",
    ),
    (
        "tracing-endpoint",
        "the OTLP collector's base URL, over OTEL_EXPORTER_OTLP_ENDPOINT (turns traces on)",
    ),
    (
        "tracing-protocol",
        "grpc, http/protobuf or http/json, over OTEL_EXPORTER_OTLP_PROTOCOL",
    ),
];

/// The trace settings: the environment's (`env`, from the `OTEL_*`
/// variables) with the `tracing-*` keys of `data` over them; `None`:
/// traces off.
///
/// # Errors
/// A value is not what its key expects (`config-defaults: key: expected
/// …, got "…"`).
pub fn trace_settings(
    data: &BTreeMap<String, String>,
    env: Option<&tektite_telemetry::Settings>,
) -> Result<Option<tektite_telemetry::Settings>, String> {
    let name = namer(false);
    let get = |k: &str| data.get(k).map(|v| v.trim());
    let enabled = match get("tracing-enabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(format!(
                "{}: expected true or false, got {v:?}",
                name("tracing-enabled")
            ));
        }
    };
    let endpoint = match get("tracing-endpoint") {
        None => None,
        Some(v)
            if v.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            }) =>
        {
            Some(v.to_string())
        }
        Some(v) => {
            return Err(format!(
                "{}: expected an http:// or https:// URL, got {v:?}",
                name("tracing-endpoint")
            ));
        }
    };
    let protocol = get("tracing-protocol")
        .map(|v| {
            tektite_telemetry::Protocol::parse(v)
                .map_err(|e| format!("{}: {e}", name("tracing-protocol")))
        })
        .transpose()?;
    let wanted = enabled.unwrap_or(env.is_some() || endpoint.is_some());
    if !wanted {
        return Ok(None);
    }
    let mut s = env.cloned().unwrap_or_else(|| tektite_telemetry::Settings {
        endpoint: None,
        protocol: tektite_telemetry::Protocol::HttpProtobuf,
        service_name: SERVICE_NAME.into(),
        timeout: Duration::from_secs(10),
    });
    if endpoint.is_some() {
        s.endpoint = endpoint;
    }
    if let Some(p) = protocol {
        s.protocol = p;
    }
    Ok(Some(s))
}

/// The traces' service name when `OTEL_SERVICE_NAME` gives none.
pub const SERVICE_NAME: &str = "tektite-controller";

/// The log archive's limits (`logs-retention-days`, `logs-max-bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLimits {
    /// How long logs are kept after their last line; `None`: until their
    /// run is deleted.
    pub keep: Option<Duration>,
    /// Bytes of a container's log kept.
    pub max_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            keep: None,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `base` with the log archive keys `data` sets (the other keys are
/// [`from_data`]'s); `flags` says to name errors as flags.
///
/// # Errors
/// A value is not a whole number above 0 (`key: expected …, got "…"`).
pub fn log_limits(
    data: &BTreeMap<String, String>,
    base: &LogLimits,
    flags: bool,
) -> Result<LogLimits, String> {
    let mut l = base.clone();
    let name = namer(flags);
    for (key, value) in data {
        let number = |what: &str| positive(&name(key), value, what);
        match key.as_str() {
            "logs-retention-days" => {
                let days = number("a whole number of days above 0")?;
                l.keep = Some(Duration::from_secs(days.saturating_mul(86_400)));
            }
            "logs-max-bytes" => l.max_bytes = number("a size in bytes above 0")?,
            _ => {}
        }
    }
    Ok(l)
}

/// How a key is named in errors: as the ConfigMap's key
/// (`config-defaults: max-result-size`) or as its flag (`--max-result-size`).
fn namer(flags: bool) -> impl Fn(&str) -> String {
    move |key| {
        if flags {
            format!("--{key}")
        } else {
            format!("{CONFIG_MAP}: {key}")
        }
    }
}

/// `value` as a whole number above 0, else an error naming the key
/// (`name`) and saying what was expected.
fn positive(name: &str, value: &str, what: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{name}: expected {what}, got {value:?}"))
}

/// `base` with the values `data` sets.
///
/// # Errors
/// A value is not what its key expects (`key: expected …, got "…"`), or a
/// key is not one of [`KEYS`] (a typo would otherwise be ignored).
pub fn from_data(data: &BTreeMap<String, String>, base: &Config) -> Result<Config, String> {
    apply(data, base, namer(false))
}

/// `base` with the values given as flags: `data` is keyed like the
/// ConfigMap (`entrypoint-image`), and errors name the flag
/// (`--entrypoint-image: expected …`).
///
/// # Errors
/// As [`from_data`].
pub fn from_flags(data: &BTreeMap<String, String>, base: &Config) -> Result<Config, String> {
    apply(data, base, namer(true))
}

/// `base` with `data`'s values; `name` says where a key was set.
fn apply(
    data: &BTreeMap<String, String>,
    base: &Config,
    name: impl Fn(&str) -> String,
) -> Result<Config, String> {
    let mut c = base.clone();
    for (key, value) in data {
        // Tekton's example ConfigMap documents itself under `_example`.
        if key == "_example" {
            continue;
        }
        let v = value.trim();
        let number = |what: &str| positive(&name(key), value, what);
        let text = || -> Result<String, String> {
            if v.is_empty() {
                Err(format!(
                    "{}: expected a value, got an empty string",
                    name(key)
                ))
            } else {
                Ok(v.to_string())
            }
        };
        match key.as_str() {
            "default-timeout-minutes" => {
                c.default_timeout =
                    Duration::from_secs(60 * number("a whole number of minutes above 0")?);
            }
            "default-service-account" => c.default_service_account = text()?,
            "default-managed-by-label-value" => c.managed_by = text()?,
            "entrypoint-image" => c.entrypoint_image = text()?,
            "shell-image" => c.shell_image = text()?,
            "max-result-size" => {
                c.max_result_size = usize::try_from(number("a size in bytes above 0")?)
                    .map_err(|_| format!("{}: {value:?} is too large", name(key)))?;
            }
            "max-running-pipelineruns-per-namespace" => {
                let n = number("a whole number of PipelineRuns above 0")?;
                c.max_running_pipeline_runs = Some(
                    u32::try_from(n)
                        .map_err(|_| format!("{}: {value:?} is too large", name(key)))?,
                );
            }
            "queue-timeout-from" => {
                c.queue_timeout_from_creation = match v {
                    "creation" => true,
                    "start" => false,
                    _ => {
                        return Err(format!(
                            "{}: expected \"creation\" or \"start\", got {value:?}",
                            name(key)
                        ));
                    }
                };
            }
            // The log archive's keys: read by `log_limits`.
            "logs-retention-days" | "logs-max-bytes" => {}
            // The trace keys: read by `trace_settings`.
            "tracing-enabled" | "tracing-endpoint" | "tracing-protocol" => {}
            other => {
                let known: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
                return Err(format!(
                    "{CONFIG_MAP}: unknown key {other:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_key_sets_its_field_and_others_keep_defaults() {
        let base = Config::default();
        let c = from_data(
            &data(&[
                ("default-timeout-minutes", "90"),
                ("default-service-account", "builder"),
                ("default-managed-by-label-value", "tektite-prod"),
                (
                    "entrypoint-image",
                    "registry.local/tektite/entrypoint@sha256:ab",
                ),
                ("shell-image", "registry.local/busybox:1"),
                ("max-result-size", "8192"),
                ("max-running-pipelineruns-per-namespace", "4"),
                ("queue-timeout-from", "start"),
                ("_example", "ignored"),
            ]),
            &base,
        )
        .unwrap();
        assert_eq!(c.default_timeout, Duration::from_secs(90 * 60));
        assert_eq!(c.default_service_account, "builder");
        assert_eq!(c.managed_by, "tektite-prod");
        assert_eq!(
            c.entrypoint_image,
            "registry.local/tektite/entrypoint@sha256:ab"
        );
        assert_eq!(c.shell_image, "registry.local/busybox:1");
        assert_eq!(c.max_result_size, 8192);
        assert_eq!(c.max_running_pipeline_runs, Some(4));
        assert!(!c.queue_timeout_from_creation);
        let only = from_data(&data(&[("default-service-account", "x")]), &base).unwrap();
        assert_eq!(only.default_timeout, base.default_timeout);
        assert_eq!(only.entrypoint_image, base.entrypoint_image);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors_that_name_the_key() {
        let base = Config::default();
        for (pairs, want) in [
            (
                vec![("default-timeout-minutes", "1h")],
                r#"config-defaults: default-timeout-minutes: expected a whole number of minutes above 0, got "1h""#,
            ),
            (
                vec![("max-result-size", "0")],
                r#"config-defaults: max-result-size: expected a size in bytes above 0, got "0""#,
            ),
            (
                vec![("max-running-pipelineruns-per-namespace", "0")],
                r#"config-defaults: max-running-pipelineruns-per-namespace: expected a whole number of PipelineRuns above 0, got "0""#,
            ),
            (
                vec![("queue-timeout-from", "admission")],
                r#"config-defaults: queue-timeout-from: expected "creation" or "start", got "admission""#,
            ),
            (
                vec![("shell-image", " ")],
                "config-defaults: shell-image: expected a value, got an empty string",
            ),
        ] {
            assert_eq!(from_data(&data(&pairs), &base).unwrap_err(), want);
        }
        assert_eq!(
            from_flags(&data(&[("max-result-size", "4k")]), &base).unwrap_err(),
            r#"--max-result-size: expected a size in bytes above 0, got "4k""#
        );
        let e = from_data(&data(&[("default-timeout", "5")]), &base).unwrap_err();
        assert!(
            e.starts_with(
                r#"config-defaults: unknown key "default-timeout" (known: default-timeout-minutes,"#
            ),
            "{e}"
        );
    }

    #[test]
    fn log_archive_keys_set_the_limits_and_are_not_unknown_to_the_rest() {
        let d = data(&[("logs-retention-days", "30"), ("logs-max-bytes", "1048576")]);
        assert!(from_data(&d, &Config::default()).is_ok());
        let l = log_limits(&d, &LogLimits::default(), false).unwrap();
        assert_eq!(l.keep, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(l.max_bytes, 1_048_576);
        let kept = log_limits(&data(&[("shell-image", "x")]), &l, false).unwrap();
        assert_eq!(kept, l);
        assert_eq!(
            log_limits(&data(&[("logs-retention-days", "0")]), &l, false).unwrap_err(),
            r#"config-defaults: logs-retention-days: expected a whole number of days above 0, got "0""#
        );
        assert_eq!(
            log_limits(&data(&[("logs-max-bytes", "1M")]), &l, true).unwrap_err(),
            r#"--logs-max-bytes: expected a size in bytes above 0, got "1M""#
        );
    }

    #[test]
    fn trace_keys_turn_traces_on_or_off_over_the_environment() {
        let env = tektite_telemetry::Settings {
            endpoint: None,
            protocol: tektite_telemetry::Protocol::Grpc,
            service_name: "from-env".into(),
            timeout: Duration::from_secs(3),
        };
        let keys = data(&[
            ("tracing-endpoint", "http://collector.monitoring:4318"),
            ("tracing-protocol", "http/protobuf"),
        ]);
        assert!(from_data(&keys, &Config::default()).is_ok(), "known keys");
        // Nothing asked: off; the environment alone: its settings.
        assert_eq!(trace_settings(&data(&[]), None).unwrap(), None);
        assert_eq!(
            trace_settings(&data(&[]), Some(&env)).unwrap(),
            Some(env.clone())
        );
        // An endpoint turns traces on, over the environment's.
        let on = trace_settings(&keys, None).unwrap().unwrap();
        assert_eq!(
            on.endpoint.as_deref(),
            Some("http://collector.monitoring:4318")
        );
        assert_eq!(on.protocol, tektite_telemetry::Protocol::HttpProtobuf);
        assert_eq!(on.service_name, SERVICE_NAME);
        let over = trace_settings(&keys, Some(&env)).unwrap().unwrap();
        assert_eq!(
            (over.service_name.as_str(), over.timeout),
            ("from-env", env.timeout)
        );
        // tracing-enabled: false wins over both; true needs no endpoint.
        let off = data(&[
            ("tracing-enabled", "false"),
            ("tracing-endpoint", "http://c:4318"),
        ]);
        assert_eq!(trace_settings(&off, Some(&env)).unwrap(), None);
        let default = trace_settings(&data(&[("tracing-enabled", "true")]), None).unwrap();
        assert_eq!(default.unwrap().endpoint, None);
        // A protocol alone does not turn traces on.
        assert_eq!(
            trace_settings(&data(&[("tracing-protocol", "grpc")]), None).unwrap(),
            None
        );
        for (pairs, want) in [
            (
                vec![("tracing-enabled", "yes")],
                r#"config-defaults: tracing-enabled: expected true or false, got "yes""#,
            ),
            (
                vec![("tracing-endpoint", "collector:4317")],
                r#"config-defaults: tracing-endpoint: expected an http:// or https:// URL, got "collector:4317""#,
            ),
            (
                vec![("tracing-endpoint", "http://collector :4317")],
                r#"config-defaults: tracing-endpoint: expected an http:// or https:// URL, got "http://collector :4317""#,
            ),
            (
                vec![("tracing-protocol", "thrift")],
                r#"config-defaults: tracing-protocol: expected grpc, http/protobuf or http/json, got "thrift""#,
            ),
        ] {
            assert_eq!(trace_settings(&data(&pairs), None).unwrap_err(), want);
        }
    }
}
