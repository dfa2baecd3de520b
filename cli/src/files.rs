//! The files a `-f` names: a file as itself, `-` standard input, a
//! directory searched (through symbolic links, each directory once, so a
//! link loop ends) for `*.yaml`, `*.yml` and `*.json`, in name order.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Whether a file name is one the commands read.
fn is_manifest(p: &Path) -> bool {
    p.extension()
        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
}

/// The manifests under `dir`, sorted; each directory (by device and inode)
/// visited once.
fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !seen.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, seen, out)?;
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands the paths given: `-` and files as they are (a missing one is
/// reported by whoever reads it), directories into their manifests. A
/// directory with none is an error naming it: nothing would be checked or
/// run, which is never what was meant.
///
/// # Errors
/// A directory that cannot be read, or that holds no manifest.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let before = out.len();
        walk(p, &mut HashSet::new(), &mut out)?;
        if out.len() == before {
            bail!(
                "{}: no *.yaml, *.yml or *.json file in this directory",
                p.display()
            );
        }
    }
    Ok(out)
}

/// The manifests of a library folder (`--task-dir`, the catalog): like
/// [`expand`], but an empty folder is just empty.
///
/// # Errors
/// A directory that cannot be read.
pub fn library(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, &mut HashSet::new(), &mut out)?;
    } else if dir.exists() {
        out.push(dir.to_path_buf());
    } else {
        bail!("{}: no such file or directory", dir.display());
    }
    Ok(out)
}

/// The name and text of one input: `-` is standard input (`<stdin>`).
///
/// # Errors
/// It cannot be read.
pub fn read(path: &Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// One input loaded: a file (one that cannot be read is a diagnostic
/// naming it), or standard input for `-`.
///
/// # Errors
/// Standard input cannot be read.
pub fn load(path: &Path) -> anyhow::Result<tektite_api::LoadOutput> {
    if path.as_os_str() == "-" {
        let (name, text) = read(path)?;
        return Ok(tektite_api::load::load_str(&name, &text));
    }
    Ok(tektite_api::load_file(path))
}
