//! Writes the CRDs generated from the types into a directory (`crds/`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: tektite-crdgen DIR");
        return ExitCode::from(2);
    };
    for (name, text) in tektite_api::crd::files() {
        let path = std::path::Path::new(&dir).join(name);
        let tmp = path.with_extension("yaml.tmp");
        // Write then rename, so an interrupted run leaves no half-written CRD.
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            eprintln!("tektite-crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
