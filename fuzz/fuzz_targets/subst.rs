//! Variable substitution on any text: `$(params.…)`, array and object
//! params, `[*]`, indexes and unknown references never panic, and a
//! value is never substituted again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tektite_api::param::ParamValue;
use tektite_engine::subst::Vars;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut vars = Vars::new(&["params."]);
    // A value that looks like a reference: substitution is one pass, so it
    // must come out as written.
    vars.set_str("params.s", "$(params.s)");
    vars.set(
        "params.a",
        ParamValue::Array(vec!["x".into(), "$(params.s)".into()]),
    );
    vars.set(
        "params.o",
        ParamValue::Object([("k".to_string(), "v".to_string())].into_iter().collect()),
    );
    let _ = vars.str(text, "fuzz");
    let _ = vars.array(&[text.to_string()], "fuzz");
    let mut json = serde_json::json!({"a": [text], "b": {"c": text}});
    let _ = vars.json(&mut json, "fuzz", &[]);
    if let Ok(out) = vars.str("$(params.s)", "fuzz") {
        assert_eq!(out, "$(params.s)");
    }
});
