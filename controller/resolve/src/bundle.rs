//! Tekton bundles: Tasks, Pipelines and StepActions packed as an OCI image,
//! one layer per object, and the bundles resolver that reads them.
//!
//! The format is Tekton's (what `tkn bundle push` writes and Tekton's
//! bundles resolver reads): a Docker v2 manifest of at most 20 layers; each
//! layer a gzip-compressed tar of one file holding the object as JSON, with
//! the annotations `dev.tekton.image.apiVersion` (the version: `v1`),
//! `dev.tekton.image.kind` (lowercase and singular: `task`) and
//! `dev.tekton.image.name`. The resolver takes the first layer whose kind
//! and name match, reads it by digest (checked against it), and uses the
//! first file of its tar (or the layer itself when it is not a tar).

use std::collections::BTreeMap;
use std::io::Read as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{MAX_DOCUMENT, RefSource, Request, Resolved, Resolvers, Secrets, sha256_hex};

pub const API_VERSION_ANNOTATION: &str = "dev.tekton.image.apiVersion";
pub const KIND_ANNOTATION: &str = "dev.tekton.image.kind";
pub const NAME_ANNOTATION: &str = "dev.tekton.image.name";
/// The most objects a bundle may hold.
pub const MAX_OBJECTS: usize = 20;

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The most a compressed layer may weigh.
const MAX_LAYER: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// An object of a bundle, as its layer's annotations name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lowercase and singular: `task`, `pipeline`, `stepaction`.
    pub kind: String,
    pub name: String,
    /// The version only (`v1`, `v1beta1`), as `tkn` writes it.
    pub api_version: String,
}

/// An object to pack: its entry and its JSON.
#[derive(Debug, Clone)]
pub struct Object {
    pub entry: Entry,
    pub json: Vec<u8>,
}

pub(crate) async fn resolve(
    rs: &Resolvers,
    req: &Request,
    secrets: &dyn Secrets,
) -> Result<Resolved, String> {
    req.required(&["bundle", "name"])?;
    let bundle = req.param("bundle").unwrap_or_default();
    let name = req.param("name").unwrap_or_default();
    let kind = req
        .param("kind")
        .filter(|k| !k.is_empty())
        .unwrap_or(req.kind.lower())
        .to_ascii_lowercase();
    let last = crate::key(&["bundle", bundle, &kind, name]);
    if rs.options.offline {
        return rs.cache.get("last", &last).ok_or_else(|| {
            format!("offline, and {kind} {name:?} of {bundle} is not in the cache")
        });
    }
    let creds = credentials(rs, bundle, req.param("secret"), secrets)?;
    let (r, digest, bytes) = rs
        .oci
        .manifest_of(bundle, creds.as_ref())
        .await
        .map_err(|e| format!("cannot retrieve the oci image: {e}"))?;
    let pinned = crate::key(&["bundle", &format!("{}@{digest}", r.name()), &kind, name]);
    if let Some(hit) = rs.cache.get("immutable", &pinned) {
        rs.cache.put("last", &last, &hit);
        return Ok(hit);
    }
    let manifest = read_manifest(bundle, &bytes)?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| {
            l.annotations
                .get(KIND_ANNOTATION)
                .map(|k| k.to_ascii_lowercase())
                .as_deref()
                == Some(kind.as_str())
                && l.annotations.get(NAME_ANNOTATION).map(String::as_str) == Some(name)
        })
        .ok_or_else(|| {
            format!("could not find object in image with kind: {kind} and name: {name}")
        })?;
    let blob = rs
        .oci
        .blob(&r, &layer.digest, MAX_LAYER, creds.as_ref())
        .await
        .map_err(|e| format!("cannot retrieve the oci image: {e}"))?;
    let data = layer_content(&blob).map_err(|e| {
        format!(
            "invalid tekton bundle {bundle}, error: layer {}: {e}",
            layer.digest
        )
    })?;
    let resolved = Resolved {
        data,
        source: RefSource {
            uri: Some(r.name()),
            digest: [(
                "sha256".to_string(),
                digest.trim_start_matches("sha256:").to_string(),
            )]
            .into(),
            entry_point: Some(name.to_string()),
        },
    };
    rs.cache.put("immutable", &pinned, &resolved);
    rs.cache.put("last", &last, &resolved);
    Ok(resolved)
}

/// The manifest, checked as Tekton checks a bundle's: at most 20 layers,
/// each with its three annotations, kinds lowercase and singular.
fn read_manifest(bundle: &str, bytes: &[u8]) -> Result<Manifest, String> {
    let bad = |e: String| format!("invalid tekton bundle {bundle}, error: {e}");
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "not an image manifest (an index or a broken one): {e}"
        ))
    })?;
    if m.layers.len() > MAX_OBJECTS {
        return Err(bad(format!(
            "contained more than the maximum {MAX_OBJECTS} allow objects"
        )));
    }
    for (i, l) in m.layers.iter().enumerate() {
        for key in [API_VERSION_ANNOTATION, NAME_ANNOTATION, KIND_ANNOTATION] {
            if !l.annotations.contains_key(key) {
                return Err(bad(format!(
                    "the layer {i} does not contain a {key} annotation"
                )));
            }
        }
        let k = &l.annotations[KIND_ANNOTATION];
        if k.to_ascii_lowercase() != *k || k.ends_with('s') {
            return Err(bad(format!(
                "the layer {i} the annotation {KIND_ANNOTATION} must be lowercased and singular, found {k}"
            )));
        }
    }
    Ok(m)
}

/// A layer's object: the first file of its tar (gunzipped first when it is
/// gzip), or the layer itself when it is no tar; at most 1 MiB.
fn layer_content(blob: &[u8]) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .take(4 * MAX_DOCUMENT as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not gzip: {e}"))?;
    } else {
        raw = blob.to_vec();
    }
    let mut archive = tar::Archive::new(&raw[..]);
    let first = archive
        .entries()
        .ok()
        .and_then(|mut e| e.next())
        .and_then(Result::ok);
    let data = match first {
        Some(mut entry) if entry.header().entry_type().is_file() => {
            let mut data = Vec::new();
            entry
                .by_ref()
                .take(MAX_DOCUMENT as u64 + 1)
                .read_to_end(&mut data)
                .map_err(|e| format!("reading its tar: {e}"))?;
            data
        }
        _ => raw,
    };
    if data.len() > MAX_DOCUMENT {
        return Err(format!("its object is larger than {MAX_DOCUMENT} bytes"));
    }
    Ok(data)
}

/// Registry credentials for `bundle`: from the Secret the `secret` param
/// names (a `.dockerconfigjson`), else the docker config of this machine
/// ([`crate::Options::docker_config`], `$DOCKER_CONFIG/config.json`,
/// `~/.docker/config.json`, podman's `auth.json`).
fn credentials(
    rs: &Resolvers,
    bundle: &str,
    secret: Option<&str>,
    secrets: &dyn Secrets,
) -> Result<Option<tektite_oci::Credentials>, String> {
    let registry = tektite_oci::Reference::parse(bundle)
        .map_err(|e| format!("invalid bundle reference: {e}"))?
        .registry;
    if let Some(name) = secret.filter(|s| !s.is_empty()) {
        let json = secrets
            .get(name, ".dockerconfigjson")
            .map_err(|e| format!("cannot get the registry credentials: {e}"))?;
        return Ok(from_docker_config(&json, &registry));
    }
    if !rs.options.machine {
        // The controller's own credentials are not a run's to use.
        return Ok(None);
    }
    let mut files = Vec::new();
    files.extend(rs.options.docker_config.clone());
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        files.push(std::path::PathBuf::from(d).join("config.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        files.push(std::path::PathBuf::from(h).join(".docker/config.json"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(std::path::PathBuf::from(x).join("containers/auth.json"));
    }
    Ok(files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .find_map(|json| from_docker_config(&json, &registry)))
}

/// The credentials for `registry` in a docker config (`auths`, by host or
/// by URL; `auth` as base64 `user:password`, or `username`/`password`).
pub fn from_docker_config(json: &[u8], registry: &str) -> Option<tektite_oci::Credentials> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Auth>,
    }
    #[derive(Deserialize)]
    struct Auth {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let c: Config = serde_json::from_slice(json).ok()?;
    let hub = registry == tektite_oci::DOCKER_HUB;
    let a = c.auths.iter().find_map(|(k, v)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (host == registry || (hub && (host == "index.docker.io" || host == "docker.io")))
            .then_some(v)
    })?;
    let (username, password) = match (&a.auth, &a.username, &a.password) {
        (Some(b64), _, _) => {
            let pair = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            let pair = String::from_utf8(pair).ok()?;
            let (u, p) = pair.split_once(':')?;
            (u.to_string(), p.to_string())
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return None,
    };
    Some(tektite_oci::Credentials { username, password })
}

/// The objects of `bundle`, as its layers' annotations name them.
///
/// # Errors
/// The bundle cannot be read, or is not a Tekton bundle.
pub async fn list(rs: &Resolvers, bundle: &str) -> Result<Vec<Entry>, String> {
    let creds = credentials(rs, bundle, None, &crate::NoSecrets)?;
    let (_, _, bytes) = rs
        .oci
        .manifest_of(bundle, creds.as_ref())
        .await
        .map_err(|e| format!("cannot retrieve the oci image: {e}"))?;
    let m = read_manifest(bundle, &bytes)?;
    Ok(m.layers.iter().map(|l| entry_of(&l.annotations)).collect())
}

fn entry_of(a: &BTreeMap<String, String>) -> Entry {
    Entry {
        kind: a[KIND_ANNOTATION].clone(),
        name: a[NAME_ANNOTATION].clone(),
        api_version: a[API_VERSION_ANNOTATION].clone(),
    }
}

/// Packs `objects` as a bundle and pushes it to `reference` (a tag):
/// layers, config, then the manifest.
///
/// # Errors
/// No object or more than [`MAX_OBJECTS`], two of the same kind and name,
/// or the registry refused.
pub async fn push(
    rs: &Resolvers,
    reference: &str,
    objects: &[Object],
) -> Result<tektite_oci::Pushed, String> {
    if objects.is_empty() || objects.len() > MAX_OBJECTS {
        return Err(format!(
            "a bundle holds 1 to {MAX_OBJECTS} objects, not {}",
            objects.len()
        ));
    }
    for (i, o) in objects.iter().enumerate() {
        if objects[..i]
            .iter()
            .any(|p| p.entry.kind == o.entry.kind && p.entry.name == o.entry.name)
        {
            return Err(format!(
                "two objects are {} {:?}",
                o.entry.kind, o.entry.name
            ));
        }
    }
    let r = tektite_oci::Reference::parse(reference)
        .map_err(|e| format!("invalid bundle reference: {e}"))?;
    let creds = credentials(rs, reference, None, &crate::NoSecrets)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for o in objects {
        let tar =
            tar_of(&o.entry.name, &o.json).map_err(|e| format!("packing {}: {e}", o.entry.name))?;
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let gz = gzip(&tar).map_err(|e| format!("packing {}: {e}", o.entry.name))?;
        let digest = rs
            .oci
            .push_blob(&r, &gz, creds.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        layers.push(Descriptor {
            media_type: LAYER_TYPE.into(),
            size: gz.len() as u64,
            digest,
            annotations: [
                (
                    API_VERSION_ANNOTATION.to_string(),
                    o.entry.api_version.clone(),
                ),
                (KIND_ANNOTATION.to_string(), o.entry.kind.clone()),
                (NAME_ANNOTATION.to_string(), o.entry.name.clone()),
            ]
            .into(),
        });
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "created": "1970-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = rs
        .oci
        .push_blob(&r, &config, creds.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_TYPE.into()),
        config: Descriptor {
            media_type: CONFIG_TYPE.into(),
            size: config.len() as u64,
            digest: config_digest,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    rs.oci
        .push_manifest(&r, &bytes, MANIFEST_TYPE, creds.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// A tar of one regular file `name` (mode 0600, time 0) holding `data`.
fn tar_of(name: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)?;
    b.into_inner()
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_gives_its_first_file_or_itself() {
        let tar = tar_of("hello", b"kind: Task\n").unwrap();
        assert_eq!(
            layer_content(&gzip(&tar).unwrap()).unwrap(),
            b"kind: Task\n"
        );
        assert_eq!(layer_content(&tar).unwrap(), b"kind: Task\n");
        assert_eq!(
            layer_content(b"{\"kind\": \"Task\"}").unwrap(),
            b"{\"kind\": \"Task\"}"
        );
        // A gzip bomb stops at the limit.
        let big = gzip(&vec![b'a'; 8 * MAX_DOCUMENT]).unwrap();
        assert!(layer_content(&big).unwrap_err().contains("larger than"));
    }

    #[test]
    fn manifests_are_checked_as_tekton_checks_bundles() {
        let layer = |kind: &str, with_name: bool| {
            let mut a = BTreeMap::from([
                (API_VERSION_ANNOTATION.to_string(), "v1".to_string()),
                (KIND_ANNOTATION.to_string(), kind.to_string()),
            ]);
            if with_name {
                a.insert(NAME_ANNOTATION.into(), "t".into());
            }
            Descriptor {
                media_type: LAYER_TYPE.into(),
                size: 1,
                digest: "sha256:00".into(),
                annotations: a,
            }
        };
        let manifest = |layers: Vec<Descriptor>| {
            serde_json::to_vec(&Manifest {
                schema_version: 2,
                media_type: None,
                config: layer("task", true),
                layers,
                annotations: BTreeMap::new(),
            })
            .unwrap()
        };
        assert!(read_manifest("b", &manifest(vec![layer("task", true)])).is_ok());
        let e = read_manifest("b", &manifest(vec![layer("Tasks", true)])).unwrap_err();
        assert!(
            e.contains("must be lowercased and singular, found Tasks"),
            "{e}"
        );
        let e = read_manifest("b", &manifest(vec![layer("task", false)])).unwrap_err();
        assert!(
            e.contains("the layer 0 does not contain a dev.tekton.image.name annotation"),
            "{e}"
        );
        let e = read_manifest("b", &manifest(vec![layer("task", true); 21])).unwrap_err();
        assert!(e.contains("more than the maximum 20"), "{e}");
    }

    #[test]
    fn docker_config_credentials_by_host_url_or_fields() {
        let cfg = br#"{"auths": {"https://127.0.0.1:5000/v1/": {"auth": "dTpw"},
                                 "reg.example": {"username": "a", "password": "b"}}}"#;
        let c = from_docker_config(cfg, "127.0.0.1:5000").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let c = from_docker_config(cfg, "reg.example").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        assert!(from_docker_config(cfg, "other.example").is_none());
    }
}
