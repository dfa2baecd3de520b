//! Helpers shared by the entrypoint's test binaries.

/// Signals 1 to 31 blocked and ignored, from the `SigBlk:` and `SigIgn:`
/// lines of `/proc/<pid>/status` (glibc children show its internal
/// real-time signals 32 and 33 as ignored: not counted).
pub fn sig_masks(status: &str) -> (u64, u64) {
    let mask = |key: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {status:?}"));
        u64::from_str_radix(line[key.len()..].trim(), 16).expect("a hex mask") & 0x7fff_ffff
    };
    (mask("SigBlk:"), mask("SigIgn:"))
}
