//! Kubernetes resource quantities (`500m`, `1.5`, `256Mi`, `1G`), as far as
//! splitting a TaskRun's requests across its steps needs them.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Binary (`Ki`…`Ei`) and decimal (`n`…`E`) suffixes with their factors.
const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// The value of a quantity in base units (cores, bytes), if it parses.
pub fn value(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, factor) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * factor)
}

/// `q / n`: memory-like resources (`memory`, `ephemeral-storage`, anything
/// not CPU-like) as whole bytes, with the binary suffix kept when it divides
/// evenly; CPU (`cpu` and other milli-valued resources) in millicores.
pub fn divide(resource: &str, q: &Quantity, n: usize) -> Quantity {
    let Some(v) = value(&q.0) else {
        return q.clone();
    };
    let n = n.max(1) as f64;
    if resource == "cpu" {
        let milli = (v * 1000.0 / n).floor() as u64;
        return Quantity(if milli.is_multiple_of(1000) {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        });
    }
    let bytes = (v / n).floor() as u64;
    let binary = SUFFIXES[..6].iter().any(|(s, _)| q.0.ends_with(s));
    if binary && bytes > 0 {
        for (suffix, f) in SUFFIXES[..6].iter().rev() {
            let f = *f as u64;
            if bytes.is_multiple_of(f) {
                return Quantity(format!("{}{suffix}", bytes / f));
            }
        }
    }
    Quantity(bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_divides() {
        assert_eq!(value("500m"), Some(0.5));
        assert_eq!(value("1Gi"), Some(1073741824.0));
        assert_eq!(value("x"), None);
        assert_eq!(divide("cpu", &Quantity("1".into()), 2).0, "500m");
        assert_eq!(divide("cpu", &Quantity("2".into()), 2).0, "1");
        assert_eq!(divide("memory", &Quantity("1Gi".into()), 4).0, "256Mi");
        assert_eq!(divide("memory", &Quantity("1Gi".into()), 3).0, "357913941");
        assert_eq!(divide("memory", &Quantity("300M".into()), 3).0, "100000000");
    }
}
