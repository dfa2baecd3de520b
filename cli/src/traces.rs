//! `tkt run`'s traces: when the environment asks for them (the standard
//! `OTEL_*` variables, `tektite_telemetry::Settings::from_env`), each run's
//! spans go to the OTLP collector once it has ended and been recorded.
//! A collector that is down or slow costs a warning and at most the
//! export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default), never
//! the run or its exit code.

use tektite_engine::trace::Span;
use tektite_local::mask::Masker;
use tektite_telemetry::Settings;

/// The environment's trace settings; a bad one is a warning, and no
/// traces (the run goes on).
pub fn settings() -> Option<Settings> {
    match Settings::from_env("tkt") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tkt: traces off: {e}");
            None
        }
    }
}

/// Sends a run's spans, its secrets masked in every text.
pub fn export(settings: &Settings, mut spans: Vec<Span>, mask: &Masker) {
    for span in &mut spans {
        span.map_texts(|t| mask.mask_str(t).into_owned());
    }
    if let Err(e) = tektite_telemetry::export_blocking(settings, &spans) {
        eprintln!("tkt: traces not exported: {e}");
    }
}
