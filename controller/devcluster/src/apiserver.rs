//! A fake Kubernetes API server over HTTP/1.1 on loopback, for the real
//! `tektite-controller` binary and `tkt --cluster`: objects in memory with
//! resource versions, list (label and field selectors), watch (a chunked
//! stream of events from a resource version), get, create (409 when the
//! name exists; `generateName`), replace (409 on a stale resourceVersion),
//! merge patch, strategic merge patch (lists merged by `name`) and
//! server-side apply (as with a single field manager: the object given
//! replaces the one stored, its status aside; a `/status` apply replaces
//! the status; an apply creates a missing object), delete (dependents named
//! by `ownerReferences` go too, as the garbage collector's background
//! deletion), and `pods/log` (with `container` and `follow`) from the log
//! files the kubelet writes. It serves any group and resource (RBAC's
//! Roles, RoleBindings, ClusterRoles and ClusterRoleBindings among them); it
//! does no validation or defaulting, and it neither authenticates nor
//! authorises its own callers (`Authorization` is ignored).
//!
//! It answers reviews, as services that authorise their callers ask them
//! (`crate::auth` decides): `POST
//! /apis/authentication.k8s.io/v1/tokenreviews` says whose a bearer token
//! is, among the tokens it was given (the kubeconfig's admin token, and
//! those of `POST /_dev/tokens`); `POST
//! /apis/authorization.k8s.io/v1/subjectaccessreviews` says whether a user
//! may do something, by RBAC from the RBAC objects it holds. Reviews are
//! answered (201), not stored.
//!
//! `POST /_dev/cut` ends every open watch and log stream (clients see a
//! dropped connection), for testing that clients resume. `POST
//! /_dev/tokens` with `{"token", "username", "groups"}` makes `token` that
//! user's.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::auth::{self, Rbac, ReviewError, Tokens, User};

/// The username of the kubeconfig's token.
pub const ADMIN_USER: &str = "dev-admin";
/// The groups of the kubeconfig's token: an admin's.
pub const ADMIN_GROUPS: [&str; 2] = [auth::MASTERS, "system:authenticated"];
/// The group/version of RBAC's objects.
const RBAC: &str = "rbac.authorization.k8s.io/v1";

/// An object's place: group/version (`v1`, `tekton.dev/v1`), resource
/// (`pods`), namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub gv: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(gv: &str, resource: &str, namespace: &str, name: &str) -> Key {
        Key {
            gv: gv.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// One change, as a watch reports it.
struct Change {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Change>,
    /// Every request but watches' and events', as `METHOD path`.
    requests: Vec<String>,
    names: u64,
    /// The bearer tokens TokenReviews know.
    tokens: Tokens,
}

/// Where the log of a pod's container is: `(namespace, pod, container)`.
pub type LogPath = Box<dyn Fn(&str, &str, &str) -> PathBuf + Send + Sync>;

/// The server's state, shared by the HTTP side and the test (and its
/// kubelet thread).
pub struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped by `POST /_dev/cut`: open watches and log streams end.
    cut: tokio::sync::watch::Sender<u64>,
    logs: Mutex<Option<LogPath>>,
    /// The token of [`ADMIN_USER`], which the kubeconfig carries.
    admin_token: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// A running fake API server; it stops with its tokio runtime.
#[derive(Debug, Clone)]
pub struct ApiServer {
    pub shared: Arc<Shared>,
    pub url: String,
}

/// A response body; a stream's error cuts its connection (as a dropped
/// connection would).
type Body = BoxBody<Bytes, std::io::Error>;
type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// A response of `status` with `body` of `content_type`.
fn response(status: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn respond(status: u16, v: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    let body = Full::new(bytes).map_err(|never| match never {}).boxed();
    response(status, "application/json", body)
}

/// A response streaming what `rx` is sent, until its senders go.
fn streamed(content_type: &'static str, rx: tokio::sync::mpsc::Receiver<Chunk>) -> Response<Body> {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    response(200, content_type, BodyExt::boxed(StreamBody::new(stream)))
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "code": code, "message": message})
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    patch_into(target, patch, false);
}

/// A strategic merge patch as far as pods need it: a merge patch in which
/// lists of objects with a `name` merge item by item on it (containers,
/// volumes, env).
pub fn strategic_patch(target: &mut Value, patch: &Value) {
    patch_into(target, patch, true);
}

fn patch_into(target: &mut Value, patch: &Value, lists_by_name: bool) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        patch_into(t.entry(k.clone()).or_insert(Value::Null), v, lists_by_name);
                    }
                }
            }
        }
        Value::Array(p)
            if lists_by_name
                && target.is_array()
                && p.iter()
                    .all(|i| i.get("name").is_some_and(Value::is_string)) =>
        {
            if let Value::Array(t) = target {
                for item in p {
                    match t.iter_mut().find(|x| x.get("name") == item.get("name")) {
                        Some(x) => patch_into(x, item, lists_by_name),
                        None => t.push(item.clone()),
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether `obj` matches a label selector (`k=v`, `k!=v`, `k`, `!k`,
/// comma-separated) and a field selector (`metadata.name=x`).
fn selected(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let l = &obj["metadata"]["labels"];
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                l[k].as_str() != Some(v)
            } else if let Some((k, v)) = t.split_once('=') {
                l[k.trim_end_matches('=')].as_str() == Some(v.trim_start_matches('='))
            } else if let Some(k) = t.strip_prefix('!') {
                l.get(k).is_none()
            } else {
                l.get(t).is_some()
            }
        })
    });
    let field_ok = fields.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|t| {
            // Any field by its path (`metadata.name`,
            // `involvedObject.name`): a superset of the fields each
            // resource supports.
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            let got = k.split('.').fold(obj, |o, part| &o[part]);
            got.as_str() == Some(v)
        })
    });
    label_ok && field_ok
}

/// Where a request goes: `/api/v1/...` or `/apis/g/v/...` split up.
struct Route {
    gv: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let s = |i: usize| rest.get(i).map(|x| (*x).to_string());
    Some(Route {
        gv,
        resource: s(0)?,
        namespace,
        name: s(1),
        subresource: s(2),
    })
}

fn kind_of(resource: &str) -> String {
    match resource {
        "pods" => "Pod".into(),
        "taskruns" => "TaskRun".into(),
        "pipelineruns" => "PipelineRun".into(),
        "tasks" => "Task".into(),
        "pipelines" => "Pipeline".into(),
        "stepactions" => "StepAction".into(),
        "configmaps" => "ConfigMap".into(),
        "leases" => "Lease".into(),
        "events" => "Event".into(),
        "persistentvolumeclaims" => "PersistentVolumeClaim".into(),
        "serviceaccounts" => "ServiceAccount".into(),
        "namespaces" => "Namespace".into(),
        "roles" => "Role".into(),
        "rolebindings" => "RoleBinding".into(),
        "clusterroles" => "ClusterRole".into(),
        "clusterrolebindings" => "ClusterRoleBinding".into(),
        other => other.trim_end_matches('s').to_string(),
    }
}

impl State {
    /// Deletes the objects whose `ownerReferences` name `uid`, and theirs,
    /// as the garbage collector's background deletion does.
    fn delete_dependents(&mut self, uid: &str) {
        let mut uids = vec![uid.to_string()];
        while let Some(owner) = uids.pop() {
            let dependents: Vec<(Key, Value)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner.as_str()))
                })
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (k, o) in dependents {
                if let Some(u) = o["metadata"]["uid"].as_str() {
                    uids.push(u.to_string());
                }
                self.record(k, "DELETED", o);
            }
        }
    }

    fn record(&mut self, key: Key, kind: &'static str, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        self.log.push(Change {
            rv: self.rv,
            key,
            kind,
            object: object.clone(),
        });
        object
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, rv: u64) {
        self.changed.send_replace(rv);
    }

    /// Creates `obj` in `gv`/`resource` (as a POST would): `(status, body)`.
    pub fn create(
        &self,
        gv: &str,
        resource: &str,
        namespace: &str,
        mut obj: Value,
    ) -> (u16, Value) {
        let mut st = self.lock();
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
                    return (
                        422,
                        status(
                            422,
                            "Invalid",
                            "metadata.name or generateName is required".into(),
                        ),
                    );
                };
                st.names += 1;
                format!("{prefix}{:05x}", 0x1_0000 + st.names)
            }
        };
        let key = Key::new(gv, resource, namespace, &name);
        if st.objects.contains_key(&key) {
            let message = format!("{resource} \"{name}\" already exists");
            return (409, status(409, "AlreadyExists", message));
        }
        let uid = format!("uid-{}-{name}", st.rv + 1);
        let m = &mut obj["metadata"];
        m["name"] = json!(name);
        if !namespace.is_empty() {
            m["namespace"] = json!(namespace);
        }
        m["uid"] = json!(uid);
        // To the second, cut as Kubernetes cuts it (rounded, a run could
        // seem created after what it started).
        let now = k8s_openapi::jiff::Timestamp::now();
        m["creationTimestamp"] = json!(
            k8s_openapi::jiff::Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string()
        );
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(gv);
        }
        if obj.get("kind").is_none() {
            obj["kind"] = json!(kind_of(resource));
        }
        let out = st.record(key, "ADDED", obj);
        let rv = st.rv;
        drop(st);
        self.notify(rv);
        (201, out)
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of `gv`/`resource`.
    pub fn list(&self, gv: &str, resource: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.gv == gv && k.resource == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes the object at `key` with `f` (as a kubelet's status update
    /// would), when it exists and `f` changed it; returns whether it did.
    pub fn update(&self, key: &Key, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.lock();
        let Some(old) = st.objects.get(key).cloned() else {
            return false;
        };
        let mut new = old.clone();
        f(&mut new);
        if new == old {
            return false;
        }
        st.record(key.clone(), "MODIFIED", new);
        let rv = st.rv;
        drop(st);
        self.notify(rv);
        true
    }

    /// Deletes the object at `key` and its dependents (as `kubectl
    /// delete`); whether it was there.
    pub fn delete(&self, key: &Key) -> bool {
        let mut st = self.lock();
        let Some(current) = st.objects.get(key).cloned() else {
            return false;
        };
        let uid = current["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        st.record(key.clone(), "DELETED", current);
        st.delete_dependents(&uid);
        let rv = st.rv;
        drop(st);
        self.notify(rv);
        true
    }

    /// The requests served (watches and events left out), `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Makes `token` the bearer token of `username` in `groups` (as
    /// `POST /_dev/tokens`), for TokenReviews; the user it is now.
    pub fn add_token(&self, token: &str, username: &str, groups: &[impl AsRef<str>]) -> User {
        let user = User::new(username, groups);
        self.lock().tokens.insert(token, user.clone());
        user
    }

    /// The token of [`ADMIN_USER`] (in [`ADMIN_GROUPS`]), which
    /// [`ApiServer::kubeconfig`] writes.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A TokenReview answered from the tokens given (see
    /// [`auth::token_review`]).
    ///
    /// # Errors
    /// The review is not one, or has no token.
    pub fn token_review(&self, review: Value) -> Result<Value, ReviewError> {
        let tokens = self.lock().tokens.clone();
        auth::token_review(&tokens, review)
    }

    /// A SubjectAccessReview answered by RBAC from the RBAC objects held
    /// (see [`auth::access_review`]).
    ///
    /// # Errors
    /// The review is not one, names no user or group, or has no attributes.
    pub fn access_review(&self, review: Value) -> Result<Value, ReviewError> {
        let rbac = Rbac {
            roles: self.list(RBAC, "roles"),
            role_bindings: self.list(RBAC, "rolebindings"),
            cluster_roles: self.list(RBAC, "clusterroles"),
            cluster_role_bindings: self.list(RBAC, "clusterrolebindings"),
        };
        auth::access_review(&rbac, review)
    }

    /// `POST /_dev/tokens`: `{"token", "username", "groups"}` registered.
    fn dev_token(&self, body: &Value) -> (u16, Value) {
        let field = |k: &str| body[k].as_str().filter(|s| !s.is_empty());
        let (Some(token), Some(username)) = (field("token"), field("username")) else {
            let message = "/_dev/tokens: token and username must be non-empty strings".into();
            return (400, status(400, "BadRequest", message));
        };
        let groups = match &body["groups"] {
            Value::Null => Vec::new(),
            Value::Array(gs) if gs.iter().all(Value::is_string) => {
                gs.iter().filter_map(Value::as_str).collect()
            }
            _ => {
                let message = "/_dev/tokens: groups must be a list of strings".into();
                return (400, status(400, "BadRequest", message));
            }
        };
        let user = self.add_token(token, username, &groups);
        (201, json!({"user": user.to_json()}))
    }

    /// A review's answer (201), or its error as a Status.
    fn review(
        &self,
        review: Value,
        answer: impl FnOnce(&Self, Value) -> Result<Value, ReviewError>,
    ) -> (u16, Value) {
        match answer(self, review) {
            Ok(out) => (201, out),
            Err(e) => (e.code(), status(e.code(), e.reason(), e.to_string())),
        }
    }

    /// A list of `gv`/`resource` (in `ns`, else all) matching the
    /// selectors of the query.
    fn list_json(
        &self,
        gv: &str,
        resource: &str,
        ns: Option<&str>,
        q: &BTreeMap<String, String>,
    ) -> Value {
        let st = self.lock();
        let labels = q.get("labelSelector").map(String::as_str);
        let fields = q.get("fieldSelector").map(String::as_str);
        let items: Vec<&Value> = st
            .objects
            .iter()
            .filter(|(k, o)| {
                k.gv == gv
                    && k.resource == resource
                    && ns.is_none_or(|n| n == k.namespace)
                    && selected(o, labels, fields)
            })
            .map(|(_, o)| o)
            .collect();
        json!({"apiVersion": gv, "kind": format!("{}List", kind_of(resource)),
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
    }

    fn handle(
        &self,
        method: &Method,
        path: &str,
        q: &BTreeMap<String, String>,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let Some(Route {
            gv,
            resource,
            namespace: ns,
            name,
            subresource: sub,
        }) = route(path)
        else {
            return (404, status(404, "NotFound", format!("no route {path}")));
        };
        let namespace = ns.clone().unwrap_or_default();
        if resource != "events" {
            self.lock().requests.push(format!("{method} {path}"));
        }
        match (method.as_str(), name) {
            ("POST", None) if gv == "authentication.k8s.io/v1" && resource == "tokenreviews" => {
                self.review(body, Self::token_review)
            }
            ("POST", None)
                if gv == "authorization.k8s.io/v1" && resource == "subjectaccessreviews" =>
            {
                self.review(body, Self::access_review)
            }
            ("GET", None) => (200, self.list_json(&gv, &resource, ns.as_deref(), q)),
            ("POST", None) => self.create(&gv, &resource, &namespace, body),
            (_, None) => (
                405,
                status(405, "MethodNotAllowed", format!("{method} {path}")),
            ),
            (m, Some(name)) => {
                let key = Key::new(&gv, &resource, &namespace, &name);
                let apply = content_type.starts_with("application/apply-patch");
                if m == "PATCH" && apply && sub.is_none() && self.get(&key).is_none() {
                    // Server-side apply creates what is not there.
                    let mut obj = body;
                    obj["metadata"]["name"] = json!(name);
                    return self.create(&gv, &resource, &namespace, obj);
                }
                let mut st = self.lock();
                let Some(current) = st.objects.get(&key).cloned() else {
                    let message = format!("{resource} \"{name}\" not found");
                    return (404, status(404, "NotFound", message));
                };
                let (code, out) = match m {
                    "GET" => return (200, current),
                    "DELETE" => {
                        let uid = current["metadata"]["uid"].as_str().unwrap_or_default();
                        let uid = uid.to_string();
                        let out = st.record(key, "DELETED", current);
                        st.delete_dependents(&uid);
                        (200, out)
                    }
                    "PUT" => {
                        if let Some(conflict) = stale(&body, &current, (&resource, &name)) {
                            return conflict;
                        }
                        let mut new = body;
                        new["metadata"]["uid"] = current["metadata"]["uid"].clone();
                        new["metadata"]["creationTimestamp"] =
                            current["metadata"]["creationTimestamp"].clone();
                        (200, st.record(key, "MODIFIED", new))
                    }
                    "PATCH" => {
                        if let Some(conflict) = stale(&body, &current, (&resource, &name)) {
                            return conflict;
                        }
                        let status_only = sub.as_deref() == Some("status");
                        let new = patched(&current, body, status_only, content_type);
                        if new == current {
                            return (200, current);
                        }
                        (200, st.record(key, "MODIFIED", new))
                    }
                    _ => {
                        return (
                            405,
                            status(405, "MethodNotAllowed", format!("{method} {path}")),
                        );
                    }
                };
                let rv = st.rv;
                drop(st);
                self.notify(rv);
                (code, out)
            }
        }
    }

    /// The events of `gv`/`resource` (in `ns`, else all) after `from`,
    /// matching the selectors, as long as the client reads them.
    fn watch(self: Arc<Self>, path: &str, q: &BTreeMap<String, String>) -> Response<Body> {
        let Some(Route {
            gv,
            resource,
            namespace: ns,
            ..
        }) = route(path)
        else {
            return respond(404, &status(404, "NotFound", path.into()));
        };
        let labels = q.get("labelSelector").cloned();
        let fields = q.get("fieldSelector").cloned();
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(256);
        let mut changed = self.changed.subscribe();
        let mut cut = self.cut.subscribe();
        tokio::spawn(async move {
            let matches = |key: &Key, o: &Value| {
                key.gv == gv
                    && key.resource == resource
                    && ns.as_ref().is_none_or(|n| *n == key.namespace)
                    && selected(o, labels.as_deref(), fields.as_deref())
            };
            let mut next = 0usize;
            let mut sent_rv = from;
            let mut pending: Vec<Vec<u8>> = Vec::new();
            {
                let st = self.lock();
                if from == 0 {
                    // No version: the current objects first, as ADDED.
                    for (k, o) in &st.objects {
                        if matches(k, o) {
                            pending.push(event("ADDED", o));
                        }
                    }
                    sent_rv = st.rv;
                }
            }
            loop {
                {
                    let st = self.lock();
                    while next < st.log.len() {
                        let c = &st.log[next];
                        next += 1;
                        if c.rv > sent_rv && matches(&c.key, &c.object) {
                            pending.push(event(c.kind, &c.object));
                        }
                    }
                    sent_rv = sent_rv.max(st.rv);
                }
                for line in pending.drain(..) {
                    if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = cut.changed() => {
                        let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                }
            }
        });
        streamed("application/json", rx)
    }

    /// Where the kubelet writes the logs of pods' containers.
    pub fn serve_logs_from(&self, path: LogPath) {
        *self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(path);
    }

    /// Ends every open watch and log stream.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// `GET pods/NAME/log`: the container's log as the kubelet wrote it;
    /// with `follow`, streamed until the container has ended and its log
    /// has been still for a moment (the kubelet writes the last lines
    /// after it sees the container end), or the pod is deleted. An ended
    /// container's log is whole without `follow` too.
    fn pod_log(self: Arc<Self>, key: Key, q: &BTreeMap<String, String>) -> Response<Body> {
        let Some(pod) = self.get(&key) else {
            let message = format!("pods \"{}\" not found", key.name);
            return respond(404, &status(404, "NotFound", message));
        };
        let names: Vec<String> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let container = match (q.get("container"), names.as_slice()) {
            (Some(c), _) => c.clone(),
            (None, [only]) => only.clone(),
            (None, _) => {
                let message = format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    key.name,
                    names.join(" ")
                );
                return respond(400, &status(400, "BadRequest", message));
            }
        };
        if !names.contains(&container) {
            let message = format!("container {container} is not valid for pod {}", key.name);
            return respond(400, &status(400, "BadRequest", message));
        }
        let path = {
            let logs = self
                .logs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            logs.as_ref()
                .map(|f| f(&key.namespace, &key.name, &container))
        };
        let Some(path) = path.filter(|p| p.exists()) else {
            let message = format!(
                "container \"{container}\" in pod \"{}\" is waiting to start: ContainerCreating",
                key.name
            );
            return respond(400, &status(400, "BadRequest", message));
        };
        let follow = q.get("follow").is_some_and(|f| f == "true" || f == "1");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(self.stream_log(key, container, path, follow, tx));
        streamed("text/plain", rx)
    }

    async fn stream_log(
        self: Arc<Self>,
        key: Key,
        container: String,
        path: PathBuf,
        follow: bool,
        tx: tokio::sync::mpsc::Sender<Chunk>,
    ) {
        use tokio::io::AsyncReadExt;
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        let mut cut = self.cut.subscribe();
        let mut buf = vec![0u8; 64 * 1024];
        // Polls at EOF since the container ended (or the pod went).
        let mut still = 0u32;
        loop {
            let n = file.read(&mut buf).await.unwrap_or(0);
            if n > 0 {
                still = 0;
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    return;
                }
                continue;
            }
            let ended = self
                .get(&key)
                .is_none_or(|pod| container_ended(&pod, &container));
            // The kubelet may say a container ended before it has written
            // its last lines: an ended container's log (followed or not)
            // is read until it has been still for a moment, as a kubelet's
            // would be whole.
            if !follow && !ended {
                return;
            }
            if ended {
                still += 1;
                if still > 5 {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = cut.changed() => {
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return;
                }
                () = tx.closed() => return,
            }
        }
    }
}

/// Whether the pod's status says `container` has terminated.
fn container_ended(pod: &Value, container: &str) -> bool {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == container && c["state"].get("terminated").is_some())
}

/// `current` after a PATCH of `body` (its `content_type` says which kind),
/// of the object or (`status_only`) of its status subresource. The main
/// resource ignores status (the status subresource owns it).
fn patched(current: &Value, body: Value, status_only: bool, content_type: &str) -> Value {
    let apply = content_type.starts_with("application/apply-patch");
    let mut new = current.clone();
    if status_only {
        let s = body.get("status").cloned().unwrap_or(Value::Null);
        if apply {
            new["status"] = s;
        } else {
            merge_patch(&mut new["status"], &s);
        }
        return new;
    }
    let mut patch = body;
    if let Value::Object(p) = &mut patch {
        p.remove("status");
    }
    if apply {
        // One field manager: what it applies is the object, status and
        // identity aside.
        applied(current, patch)
    } else if content_type.starts_with("application/strategic-merge-patch") {
        strategic_patch(&mut new, &patch);
        new
    } else {
        merge_patch(&mut new, &patch);
        new
    }
}

/// `patch` applied over `current` by its only field manager: the object
/// applied, with the stored identity, status, `apiVersion` and `kind`.
fn applied(current: &Value, mut patch: Value) -> Value {
    let m = &current["metadata"];
    for k in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "namespace",
        "name",
    ] {
        if !m[k].is_null() {
            patch["metadata"][k] = m[k].clone();
        }
    }
    for k in ["apiVersion", "kind", "status"] {
        if !current[k].is_null() && patch.get(k).is_none() {
            patch[k] = current[k].clone();
        }
    }
    patch
}

fn event(kind: &str, o: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": o})).unwrap_or_default();
    line.push(b'\n');
    line
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(req.uri().query().unwrap_or(""));
    if method == Method::GET && q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Ok(shared.watch(&path, &q));
    }
    if method == Method::POST && path == "/_dev/cut" {
        shared.cut();
        return Ok(respond(200, &json!({"cut": true})));
    }
    if method == Method::GET
        && let Some(r) = route(&path)
        && r.resource == "pods"
        && r.subresource.as_deref() == Some("log")
        && let (Some(ns), Some(name)) = (r.namespace, r.name)
    {
        return Ok(shared.pod_log(Key::new(&r.gv, "pods", &ns, &name), &q));
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(respond(400, &status(400, "BadRequest", e.to_string()))),
    };
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return Ok(respond(400, &status(400, "BadRequest", e.to_string()))),
        }
    };
    if method == Method::POST && path == "/_dev/tokens" {
        let (code, out) = shared.dev_token(&body);
        return Ok(respond(code, &out));
    }
    let (code, out) = shared.handle(&method, &path, &q, &content_type, body);
    Ok(respond(code, &out))
}

impl ApiServer {
    /// Listens on a free loopback port (in the current tokio runtime).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start() -> std::io::Result<ApiServer> {
        ApiServer::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` (in the current tokio runtime).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start_on(addr: &str) -> std::io::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: tokio::sync::watch::channel(0).0,
            cut: tokio::sync::watch::channel(0).0,
            logs: Mutex::new(None),
            admin_token: random_token(),
        });
        shared.add_token(&shared.admin_token, ADMIN_USER, &ADMIN_GROUPS);
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(ApiServer { shared, url })
    }

    /// A kubeconfig naming this server, with the token of [`ADMIN_USER`]
    /// (namespace `default`), written as `dir/kubeconfig`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        self.kubeconfig_for(dir, "kubeconfig", self.shared.admin_token())
    }

    /// A kubeconfig naming this server, with bearer `token` (namespace
    /// `default`), written as `dir/file_name`: another user's, once
    /// [`Shared::add_token`] has made it theirs.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn kubeconfig_for(
        &self,
        dir: &Path,
        file_name: &str,
        token: &str,
    ) -> std::io::Result<PathBuf> {
        let file = dir.join(file_name);
        // A JSON string is a YAML scalar, whatever the token holds.
        let token = Value::from(token);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.url
        );
        std::fs::write(&file, text)?;
        Ok(file)
    }
}

/// 32 hex digits no one guesses: std's randomly keyed hasher over the pid
/// and the time.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (0u8..2)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u128(nanos);
            h.write_u8(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// A 409 when `body` names a `resourceVersion` other than `current`'s: a
/// replace or a patch applies only to the version it names, as on
/// Kubernetes.
fn stale(body: &Value, current: &Value, (resource, name): (&str, &str)) -> Option<(u16, Value)> {
    let given = body["metadata"]["resourceVersion"].as_str()?;
    if Some(given) == current["metadata"]["resourceVersion"].as_str() {
        return None;
    }
    let message = format!("the object has been modified; {resource} \"{name}\"");
    Some((409, status(409, "Conflict", message)))
}
