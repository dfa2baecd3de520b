//! The pod's `prepare` init container, done by `tkt` on the host before
//! the pod starts: locally a container (a process chain, or a podman
//! container made, started, waited for and removed) to copy a binary and
//! make a few links costs more than the steps it prepares.
//!
//! In the pod, `prepare` copies the entrypoint to `/tekton/bin/entrypoint`
//! and links `/tekton/steps/<name>` and `/tekton/steps/<i>` to
//! `/tekton/run/<i>/status` (as Tekton's `entrypoint init`). Here the
//! links are made in the host directory of the steps volume, and the
//! entrypoint binary of this machine is mounted read-only at
//! `/tekton/bin/entrypoint` in every container that mounts `/tekton/bin`.
//! The binary must run in any image: podman gets it only when it is
//! statically linked; otherwise the init container stays.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};
use tektite_engine::pod::RUN_VOLUME_PREFIX;
use tektite_engine::podman;
use tektite_entrypoint::contract::{BIN_DIR, ENTRYPOINT, RUN_DIR};

use crate::runtime::{RuntimeError, host_path_volume};

/// The name of the volume that carries the host's entrypoint binary.
const VOLUME: &str = "tektite-entrypoint";

/// Does `prepare`'s work for `spec` (an adapted pod, its volumes made under
/// the directories `ours`) and removes it; returns whether there was one.
///
/// # Errors
/// A link cannot be made.
pub fn on_host(
    spec: &mut PodSpec,
    ours: &[&Path],
    entrypoint: &Path,
) -> Result<bool, RuntimeError> {
    let Some(steps) = prepare_steps(spec) else {
        return Ok(false);
    };
    let is_ours = |d: &PathBuf| ours.iter().any(|r| d.starts_with(r));
    let Some(dir) = host_dir(spec, "tekton-internal-steps").filter(is_ours) else {
        return Ok(false);
    };
    tektite_entrypoint::subcommands::step_links(&dir, Path::new(RUN_DIR), &steps).map_err(err)?;
    // The mount point, made here: steps mount `/tekton/bin` read-only.
    if let Some(bin) = host_dir(spec, "tekton-internal-bin").filter(is_ours) {
        use std::os::unix::fs::OpenOptionsExt as _;
        let point = bin.join("entrypoint");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&point)
            .map_err(|e| err(format!("cannot make {}: {e}", point.display())))?;
    }
    if let Some(init) = spec.init_containers.as_mut() {
        init.retain(|c| c.name != "prepare");
    }
    spec.volumes
        .get_or_insert_default()
        .push(host_path_volume(VOLUME, entrypoint, "File"));
    for c in podman::containers_mut(spec) {
        let mounts = c.volume_mounts.get_or_insert_default();
        if mounts
            .iter()
            .any(|m| m.mount_path.trim_end_matches('/') == BIN_DIR)
        {
            mounts.push(VolumeMount {
                name: VOLUME.into(),
                mount_path: ENTRYPOINT.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    Ok(true)
}

/// Does `place-scripts`' work for `spec` (an adapted pod, its volumes made
/// under `run_dir`) and removes it: each script the engine encoded in its
/// text is written, executable, into the host directory of the scripts
/// volume. Returns whether it did; a text that is not exactly the
/// engine's leaves the init container in place.
///
/// # Errors
/// A script cannot be written.
pub fn scripts_on_host(spec: &mut PodSpec, run_dir: &Path) -> Result<bool, RuntimeError> {
    let text = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == PLACE_SCRIPTS)
        .and_then(|c| match (c.command.as_deref(), c.args.as_deref()) {
            (Some([sh]), Some(args)) if sh == "sh" => tektite_engine::pod::shell_text(args),
            _ => None,
        });
    let Some(scripts) = text
        .as_deref()
        .and_then(tektite_engine::pod::placed_scripts)
    else {
        return Ok(false);
    };
    let Some(dir) = host_dir(spec, "tekton-internal-scripts")
        .and_then(|d| Some(d.strip_prefix(run_dir).ok()?.to_path_buf()))
    else {
        return Ok(false);
    };
    for (file, bytes) in scripts {
        let name = Path::new(&file).file_name().unwrap_or_default();
        crate::beneath::create(run_dir, &dir.join(name), &bytes, 0o755)
            .map_err(|e| err(format!("cannot place script {file}: {e}")))?;
    }
    if let Some(init) = spec.init_containers.as_mut() {
        init.retain(|c| c.name != PLACE_SCRIPTS);
    }
    Ok(true)
}

/// The init container that writes the steps' scripts.
const PLACE_SCRIPTS: &str = "place-scripts";

/// The steps `prepare` links, when it is the engine's: `/ko-app/entrypoint
/// init SRC /tekton/bin/entrypoint STEP…`.
fn prepare_steps(spec: &PodSpec) -> Option<Vec<String>> {
    let c = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "prepare")?;
    match c.command.as_deref()? {
        [_, init, _, dst, steps @ ..] if init == "init" && dst == ENTRYPOINT => {
            Some(steps.to_vec())
        }
        _ => None,
    }
}

/// The host directory of hostPath volume `name`.
fn host_dir(spec: &PodSpec, name: &str) -> Option<PathBuf> {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .and_then(|v| Some(PathBuf::from(&v.host_path.as_ref()?.path)))
}

fn err(message: String) -> RuntimeError {
    RuntimeError {
        what: "prepare".into(),
        message,
    }
}

/// Whether `path` is an ELF executable with no program interpreter (a
/// static binary, which runs in any image of this architecture).
pub fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    static_elf(&bytes)
}

fn static_elf(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    // 64-bit little-endian ELF only (this machine's).
    if b.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(count)).all(|i| {
        let at = phoff + i * usize::from(size);
        b.get(at..at + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .is_some_and(|t| u32::from_le_bytes(t) != PT_INTERP)
    })
}

/// The volume that holds every step's run directory, mounted read-only at
/// `/tekton/run` in each step that reads the others'.
pub(crate) const RUNS: &str = "tekton-internal-runs";

/// Where step `i`'s report is, under the run directory of a pod laid out
/// by [`merge_run_volumes`].
pub fn step_report(i: usize) -> String {
    format!("{RUNS}/{i}/status/report.json")
}

/// One mount for the other steps' run directories instead of one each.
///
/// In Tekton's pod every step mounts every step's `/tekton/run/<i>` volume,
/// read-only but its own: n steps make n² mounts, which podman and the
/// namespaces pay for at every container. Here the directories are
/// `<run>/tekton-internal-runs/<i>`, and a step that mounted others' gets
/// `/tekton/run` (the parent, read-only) and its own on top (read-write):
/// the same paths, the same rights.
pub fn merge_run_volumes(adapted: &mut podman::Adapted, run_dir: &Path) {
    let Some(spec) = adapted.pod.spec.as_mut() else {
        return;
    };
    let parent = run_dir.join(RUNS);
    let mut moved = false;
    for v in spec.volumes.iter_mut().flatten() {
        let Some(i) = v
            .name
            .strip_prefix(RUN_VOLUME_PREFIX)
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(h) = v.host_path.as_mut() else {
            continue;
        };
        let old = run_dir.join(&v.name);
        if Path::new(&h.path) != old {
            continue;
        }
        let new = parent.join(i.to_string());
        h.path = new.to_string_lossy().into_owned();
        for d in adapted.dirs.iter_mut().filter(|d| **d == old) {
            d.clone_from(&new);
        }
        moved = true;
    }
    if !moved {
        return;
    }
    // The parent before its children.
    let at = adapted
        .dirs
        .iter()
        .position(|d| d.starts_with(&parent))
        .unwrap_or(adapted.dirs.len());
    adapted.dirs.insert(at, parent.clone());
    spec.volumes
        .get_or_insert_default()
        .push(host_path_volume(RUNS, &parent, "Directory"));
    for c in podman::containers_mut(spec) {
        let Some(mounts) = c.volume_mounts.as_mut() else {
            continue;
        };
        let before = mounts.len();
        mounts.retain(|m| !(m.name.starts_with(RUN_VOLUME_PREFIX) && m.read_only == Some(true)));
        if mounts.len() != before {
            mounts.push(VolumeMount {
                name: RUNS.into(),
                mount_path: RUN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_not_static_and_junk_is_neither() {
        // This test binary is linked dynamically (it has an interpreter).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me));
        assert!(!static_elf(b"\x7fELF\x02\x01short"));
        assert!(!static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn each_step_mounts_the_run_directories_once_and_its_own_writable() {
        use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Pod, Volume};
        let run = Path::new("/r");
        let volume = |i: usize| Volume {
            name: format!("{RUN_VOLUME_PREFIX}{i}"),
            host_path: Some(HostPathVolumeSource {
                path: format!("/r/{RUN_VOLUME_PREFIX}{i}"),
                type_: None,
            }),
            ..Default::default()
        };
        let step = |own: usize| Container {
            name: format!("step-{own}"),
            volume_mounts: Some(
                (0..3)
                    .map(|i| VolumeMount {
                        name: format!("{RUN_VOLUME_PREFIX}{i}"),
                        mount_path: format!("/tekton/run/{i}"),
                        read_only: Some(i != own),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let mut adapted = podman::Adapted {
            pod: Pod {
                spec: Some(PodSpec {
                    volumes: Some((0..3).map(volume).collect()),
                    containers: (0..3).map(step).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            dirs: (0..3)
                .map(|i| run.join(format!("{RUN_VOLUME_PREFIX}{i}")))
                .collect(),
            ready_file: None,
            to_fill: Vec::new(),
        };
        merge_run_volumes(&mut adapted, run);
        assert_eq!(
            adapted.dirs,
            [
                "/r/tekton-internal-runs",
                "/r/tekton-internal-runs/0",
                "/r/tekton-internal-runs/1",
                "/r/tekton-internal-runs/2"
            ]
            .map(PathBuf::from)
        );
        let spec = adapted.pod.spec.unwrap();
        for (own, c) in spec.containers.iter().enumerate() {
            let mounts: Vec<(&str, bool)> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
                .collect();
            let own_path = format!("/tekton/run/{own}");
            assert_eq!(mounts, [(own_path.as_str(), false), ("/tekton/run", true)]);
        }
        let host = |name: &str| host_dir(&spec, name).unwrap();
        assert_eq!(
            host("tekton-internal-run-1"),
            Path::new("/r/tekton-internal-runs/1")
        );
        assert_eq!(host(RUNS), Path::new("/r/tekton-internal-runs"));
    }
}
