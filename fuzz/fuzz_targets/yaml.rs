//! The YAML reader and validation on any text: no panic, and the work they
//! count stays within a multiple of the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tektite_api::diag::cost;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let before = cost::units();
    let loaded = tektite_api::load_str("fuzz.yaml", text);
    let _ = tektite_api::validate::validate_all(&loaded.objects);
    let work = cost::units() - before;
    // Each document has its own budget of suggestion cells (once loading,
    // once validating): the constant part. `---` counts an upper bound of
    // the documents.
    let documents = text.matches("---").count() as u64 + 1;
    assert!(
        work <= 64 * data.len() as u64 + 2 * documents * cost::SUGGESTION_BUDGET,
        "{work} units of work for {} bytes",
        data.len()
    );
});
