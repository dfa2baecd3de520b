//! Writes the CRDs generated from the types into a directory (`crds/`),
//! and their schemas into its `schemas/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: tektite-crdgen DIR");
        return ExitCode::from(2);
    };
    for (name, text) in tektite_api::crd::files() {
        let path = std::path::Path::new(&dir).join(name);
        let tmp = path.with_extension("tmp");
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("tektite-crdgen: cannot make {}: {e}", parent.display());
            return ExitCode::FAILURE;
        }
        // Write then rename, so an interrupted run leaves no half-written CRD.
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            eprintln!("tektite-crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
