//! Who a bearer token is and what RBAC lets a user do: the answers to the
//! fake API server's TokenReviews and SubjectAccessReviews, for services
//! that authorise their callers as Kubernetes services do (TokenReview,
//! then SubjectAccessReview).
//!
//! Pure: the tokens and the RBAC objects (Roles, RoleBindings,
//! ClusterRoles, ClusterRoleBindings, as the server stores them: JSON) come
//! in as data, a review comes in and goes out as JSON; no I/O, no locks,
//! nothing from `apiserver`. The server passes what it holds. It does not
//! use any of this on its own requests: it authenticates no caller.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The group whose members may do anything (Kubernetes' privileged group).
pub const MASTERS: &str = "system:masters";

/// A user as a token authenticates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    /// A user named `username` in `groups`; its uid is made of its name
    /// (the same name is the same user).
    pub fn new(username: &str, groups: &[impl AsRef<str>]) -> User {
        User {
            username: username.into(),
            uid: format!("dev-uid-{username}"),
            groups: groups.iter().map(|g| g.as_ref().to_string()).collect(),
        }
    }

    /// As a TokenReview's `status.user` says it.
    pub fn to_json(&self) -> Value {
        json!({"username": self.username, "uid": self.uid, "groups": self.groups})
    }
}

/// The bearer tokens the server knows, and whose they are.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    users: BTreeMap<String, User>,
}

impl Tokens {
    /// `token` is `user`'s from now on (it was anyone's before).
    pub fn insert(&mut self, token: &str, user: User) {
        self.users.insert(token.into(), user);
    }

    /// Whose `token` is.
    pub fn user(&self, token: &str) -> Option<&User> {
        self.users.get(token)
    }
}

/// What a SubjectAccessReview asks about (its `spec.resourceAttributes`);
/// an empty `namespace` is a cluster-scoped request, an empty `name` one
/// about every name (list, watch, create).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub namespace: String,
    pub verb: String,
    /// The API group; empty for the core group.
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// The RBAC objects (`rbac.authorization.k8s.io/v1`) a decision reads, as
/// stored.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    pub roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
    pub cluster_roles: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
}

/// Whether a request is allowed, and which binding says so (or why not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// A review the server cannot answer: the API server's 400 or 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewError {
    /// The body is no object of the review's kind (`expected`); `got`
    /// says what it is.
    WrongKind { expected: &'static str, got: String },
    /// A TokenReview without `spec.token`.
    NoToken,
    /// A SubjectAccessReview with neither `spec.user` nor `spec.groups`.
    NoSubject,
    /// A SubjectAccessReview with both or neither of
    /// `spec.resourceAttributes` and `spec.nonResourceAttributes`.
    Attributes,
}

impl ReviewError {
    /// The HTTP status the API server answers with.
    pub fn code(&self) -> u16 {
        match self {
            ReviewError::WrongKind { .. } | ReviewError::NoToken => 400,
            ReviewError::NoSubject | ReviewError::Attributes => 422,
        }
    }

    /// The `reason` of the API server's Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ReviewError::WrongKind { .. } | ReviewError::NoToken => "BadRequest",
            ReviewError::NoSubject | ReviewError::Attributes => "Invalid",
        }
    }
}

impl std::fmt::Display for ReviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReviewError::WrongKind { expected, got } => {
                write!(f, "body: expected a {expected} object, got {got}")
            }
            ReviewError::NoToken => {
                f.write_str("spec.token: token is required for TokenReview in authentication")
            }
            ReviewError::NoSubject => f.write_str(
                "SubjectAccessReview spec.user: at least one of user or group must be specified",
            ),
            ReviewError::Attributes => f.write_str(
                "SubjectAccessReview spec.resourceAttributes: exactly one of \
                 nonResourceAttributes or resourceAttributes must be specified",
            ),
        }
    }
}

impl std::error::Error for ReviewError {}

/// `review` (a TokenReview) answered from `tokens`: the object with its
/// `status` (`authenticated`, and `user` or `error`).
///
/// # Errors
/// The body is of another kind, or has no `spec.token`.
pub fn token_review(tokens: &Tokens, review: Value) -> Result<Value, ReviewError> {
    let mut review = typed(review, "authentication.k8s.io/v1", "TokenReview")?;
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(ReviewError::NoToken);
    }
    review["status"] = match tokens.user(token) {
        Some(user) => json!({"authenticated": true, "user": user.to_json()}),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    Ok(review)
}

/// `review` (a SubjectAccessReview) answered from `rbac` by [`authorize`]:
/// the object with its `status` (`allowed`, `denied: false`, `reason`).
/// `nonResourceAttributes` are not evaluated: denied unless the user is in
/// [`MASTERS`].
///
/// # Errors
/// The body is of another kind, names no user or group, or has not exactly
/// one of `resourceAttributes` and `nonResourceAttributes`.
pub fn access_review(rbac: &Rbac, review: Value) -> Result<Value, ReviewError> {
    let mut review = typed(review, "authorization.k8s.io/v1", "SubjectAccessReview")?;
    let spec = &review["spec"];
    let user = User {
        username: str_at(spec, "user"),
        uid: str_at(spec, "uid"),
        groups: strings(&spec["groups"]).map(str::to_string).collect(),
    };
    if user.username.is_empty() && user.groups.is_empty() {
        return Err(ReviewError::NoSubject);
    }
    let resource = spec.get("resourceAttributes").filter(|a| !a.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|a| !a.is_null());
    let decision = match (resource, non_resource) {
        (Some(a), None) => authorize(rbac, &user, &attributes(a)),
        (None, Some(_)) if user.groups.iter().any(|g| g == MASTERS) => masters(),
        (None, Some(_)) => Decision {
            allowed: false,
            reason: "the dev cluster evaluates resourceAttributes only".into(),
        },
        _ => return Err(ReviewError::Attributes),
    };
    review["status"] = json!({"allowed": decision.allowed, "denied": false,
                              "reason": decision.reason});
    Ok(review)
}

/// Whether RBAC lets `user` do what `attrs` say, as Kubernetes' RBAC
/// authoriser decides: [`MASTERS`] may do anything; a ClusterRoleBinding
/// grants its ClusterRole's rules everywhere; a RoleBinding grants its Role's
/// (of its namespace) or ClusterRole's rules in its namespace. A binding
/// names its subjects as `User` (the username), `Group` (one of the user's
/// groups) or `ServiceAccount` (the user
/// `system:serviceaccount:NAMESPACE:NAME`, the binding's namespace when the
/// subject names none). A rule matches when its `apiGroups` (`""` is the
/// core group), `resources` (`RESOURCE/SUBRESOURCE` for a subresource,
/// `*/SUBRESOURCE` for any resource's), `verbs` (`*` for all) and
/// `resourceNames` (none for all) all do.
pub fn authorize(rbac: &Rbac, user: &User, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return masters();
    }
    for binding in &rbac.cluster_role_bindings {
        let role = match role_ref(binding) {
            ("ClusterRole", name) => named(&rbac.cluster_roles, "", name),
            _ => None,
        };
        if let Some(grant) = grant(binding, role, user, attrs) {
            return grant;
        }
    }
    if !attrs.namespace.is_empty() {
        let in_namespace = rbac
            .role_bindings
            .iter()
            .filter(|b| b["metadata"]["namespace"] == attrs.namespace.as_str());
        for binding in in_namespace {
            let role = match role_ref(binding) {
                ("Role", name) => named(&rbac.roles, &attrs.namespace, name),
                ("ClusterRole", name) => named(&rbac.cluster_roles, "", name),
                _ => None,
            };
            if let Some(grant) = grant(binding, role, user, attrs) {
                return grant;
            }
        }
    }
    Decision {
        allowed: false,
        reason: format!(
            "RBAC: no binding lets user \"{}\" {}",
            user.username,
            describe(attrs)
        ),
    }
}

fn masters() -> Decision {
    Decision {
        allowed: true,
        reason: format!("allowed: a member of group \"{MASTERS}\""),
    }
}

/// The body as a review of `kind`, with `apiVersion` and `kind` set when it
/// had none.
fn typed(mut review: Value, api_version: &str, kind: &'static str) -> Result<Value, ReviewError> {
    if !review.is_object() {
        let got = if review.is_null() {
            "no body".into()
        } else {
            format!("a JSON {}", json_type(&review))
        };
        return Err(ReviewError::WrongKind {
            expected: kind,
            got,
        });
    }
    match review["kind"].as_str() {
        None | Some("") => review["kind"] = json!(kind),
        Some(k) if k == kind => {}
        Some(other) => {
            return Err(ReviewError::WrongKind {
                expected: kind,
                got: format!("kind {other:?}"),
            });
        }
    }
    if review["apiVersion"].as_str().is_none_or(str::is_empty) {
        review["apiVersion"] = json!(api_version);
    }
    Ok(review)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn str_at(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// The strings of a JSON list (nothing when it is none).
fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn attributes(a: &Value) -> Attributes {
    Attributes {
        namespace: str_at(a, "namespace"),
        verb: str_at(a, "verb"),
        group: str_at(a, "group"),
        resource: str_at(a, "resource"),
        subresource: str_at(a, "subresource"),
        name: str_at(a, "name"),
    }
}

/// `get taskruns.tekton.dev/log "x" in namespace "ns"`, for a reason.
fn describe(a: &Attributes) -> String {
    let mut s = format!("{} {}", a.verb, a.resource);
    if !a.group.is_empty() {
        s = format!("{s}.{}", a.group);
    }
    if !a.subresource.is_empty() {
        s = format!("{s}/{}", a.subresource);
    }
    if !a.name.is_empty() {
        s = format!("{s} \"{}\"", a.name);
    }
    if a.namespace.is_empty() {
        format!("{s} (cluster-scoped)")
    } else {
        format!("{s} in namespace \"{}\"", a.namespace)
    }
}

/// A binding's `roleRef`: `(kind, name)`.
fn role_ref(binding: &Value) -> (&str, &str) {
    let r = &binding["roleRef"];
    (
        r["kind"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default(),
    )
}

/// The object of `objects` named `name` in `namespace` (`""`: none).
fn named<'a>(objects: &'a [Value], namespace: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| {
        let m = &o["metadata"];
        m["name"] == name && m["namespace"].as_str().unwrap_or_default() == namespace
    })
}

/// The decision to allow, when `binding` names `user` and its `role` has a
/// rule matching `attrs`.
fn grant(
    binding: &Value,
    role: Option<&Value>,
    user: &User,
    attrs: &Attributes,
) -> Option<Decision> {
    let role = role?;
    let binding_ns = binding["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let subject = binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|s| subject_names(s, binding_ns, user))?;
    if !role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| rule_matches(rule, attrs))
    {
        return None;
    }
    let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
    let binding_desc = if binding_ns.is_empty() {
        format!("ClusterRoleBinding \"{binding_name}\"")
    } else {
        format!("RoleBinding \"{binding_name}/{binding_ns}\"")
    };
    let (kind, role_name) = role_ref(binding);
    Some(Decision {
        allowed: true,
        reason: format!("RBAC: allowed by {binding_desc} of {kind} \"{role_name}\" to {subject}"),
    })
}

/// When `subject` (of a binding in `binding_ns`) is `user`: how to say it.
fn subject_names(subject: &Value, binding_ns: &str, user: &User) -> Option<String> {
    let name = subject["name"].as_str()?;
    match subject["kind"].as_str()? {
        "User" if name == user.username => Some(format!("User \"{name}\"")),
        "Group" if user.groups.iter().any(|g| g == name) => Some(format!("Group \"{name}\"")),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            (user.username == format!("system:serviceaccount:{ns}:{name}"))
                .then(|| format!("ServiceAccount \"{ns}/{name}\""))
        }
        _ => None,
    }
}

/// Whether a PolicyRule covers `attrs`.
fn rule_matches(rule: &Value, attrs: &Attributes) -> bool {
    let verb_ok = strings(&rule["verbs"]).any(|v| v == "*" || v == attrs.verb);
    let group_ok = strings(&rule["apiGroups"]).any(|g| g == "*" || g == attrs.group);
    let asked = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == asked
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    });
    let mut names = strings(&rule["resourceNames"]).peekable();
    let name_ok = names.peek().is_none() || names.any(|n| n == attrs.name);
    verb_ok && group_ok && resource_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "ci";

    fn mk_rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Value {
        json!({"apiGroups": groups, "resources": resources, "verbs": verbs,
               "resourceNames": names})
    }

    /// May get, list and watch TaskRuns and read their logs.
    fn taskrun_reader() -> Vec<Value> {
        vec![
            mk_rule(
                &["tekton.dev"],
                &["taskruns"],
                &["get", "list", "watch"],
                &[],
            ),
            mk_rule(&["tekton.dev"], &["taskruns/log"], &["get"], &[]),
        ]
    }

    fn mk_role(ns: &str, name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn mk_cluster_role(name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    }

    fn mk_binding(ns: &str, name: &str, role: (&str, &str), subjects: Vec<Value>) -> Value {
        let kind = if ns.is_empty() {
            "ClusterRoleBinding"
        } else {
            "RoleBinding"
        };
        let mut metadata = json!({"name": name});
        if !ns.is_empty() {
            metadata["namespace"] = json!(ns);
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
               "metadata": metadata,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0,
                           "name": role.1},
               "subjects": subjects})
    }

    fn user_subject(name: &str) -> Value {
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
    }

    fn mk_user(name: &str) -> User {
        User::new(name, &["system:authenticated"])
    }

    fn get_taskrun(ns: &str, name: &str) -> Attributes {
        Attributes {
            namespace: ns.into(),
            verb: "get".into(),
            group: "tekton.dev".into(),
            resource: "taskruns".into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    /// Alice reads TaskRuns in `ci` through a RoleBinding to a Role.
    fn role_rbac() -> Rbac {
        Rbac {
            roles: vec![mk_role(NS, "reader", taskrun_reader())],
            role_bindings: vec![mk_binding(
                NS,
                "alice-reads",
                ("Role", "reader"),
                vec![user_subject("alice")],
            )],
            ..Rbac::default()
        }
    }

    #[test]
    fn role_binding_to_a_role_allows_its_rules() {
        let d = authorize(&role_rbac(), &mk_user("alice"), &get_taskrun(NS, "build-1"));
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.reason,
            "RBAC: allowed by RoleBinding \"alice-reads/ci\" of Role \"reader\" to User \"alice\""
        );
        let log = Attributes {
            subresource: "log".into(),
            ..get_taskrun(NS, "build-1")
        };
        assert!(authorize(&role_rbac(), &mk_user("alice"), &log).allowed);
    }

    #[test]
    fn another_user_is_denied() {
        let d = authorize(&role_rbac(), &mk_user("bob"), &get_taskrun(NS, "build-1"));
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "RBAC: no binding lets user \"bob\" get taskruns.tekton.dev \"build-1\" in namespace \"ci\""
        );
    }

    #[test]
    fn another_namespace_is_denied() {
        let d = authorize(
            &role_rbac(),
            &mk_user("alice"),
            &get_taskrun("prod", "build-1"),
        );
        assert!(!d.allowed, "{d:?}");
    }

    #[test]
    fn another_verb_is_denied() {
        let delete = Attributes {
            verb: "delete".into(),
            ..get_taskrun(NS, "build-1")
        };
        assert!(!authorize(&role_rbac(), &mk_user("alice"), &delete).allowed);
    }

    #[test]
    fn another_subresource_or_group_is_denied() {
        let status = Attributes {
            subresource: "status".into(),
            ..get_taskrun(NS, "build-1")
        };
        assert!(!authorize(&role_rbac(), &mk_user("alice"), &status).allowed);
        let core = Attributes {
            group: String::new(),
            ..get_taskrun(NS, "build-1")
        };
        assert!(!authorize(&role_rbac(), &mk_user("alice"), &core).allowed);
    }

    #[test]
    fn a_resource_name_not_listed_is_denied() {
        let rules = vec![mk_rule(
            &["tekton.dev"],
            &["taskruns"],
            &["get"],
            &["build-1"],
        )];
        let mut rbac = role_rbac();
        rbac.roles = vec![mk_role(NS, "reader", rules)];
        assert!(authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "build-1")).allowed);
        assert!(!authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "build-2")).allowed);
        // A list names no object: the rule does not cover it.
        assert!(!authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "")).allowed);
    }

    #[test]
    fn a_role_of_another_namespace_is_not_bound() {
        let mut rbac = role_rbac();
        rbac.roles = vec![mk_role("prod", "reader", taskrun_reader())];
        assert!(!authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "build-1")).allowed);
    }

    #[test]
    fn role_binding_to_a_cluster_role_allows_in_its_namespace_only() {
        let rbac = Rbac {
            cluster_roles: vec![mk_cluster_role("tekton-reader", taskrun_reader())],
            role_bindings: vec![mk_binding(
                NS,
                "alice-reads",
                ("ClusterRole", "tekton-reader"),
                vec![user_subject("alice")],
            )],
            ..Rbac::default()
        };
        let d = authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "build-1"));
        assert!(d.allowed, "{d:?}");
        assert!(
            d.reason.contains("of ClusterRole \"tekton-reader\""),
            "{}",
            d.reason
        );
        assert!(!authorize(&rbac, &mk_user("alice"), &get_taskrun("prod", "build-1")).allowed);
    }

    #[test]
    fn cluster_role_binding_allows_everywhere() {
        let rbac = Rbac {
            cluster_roles: vec![mk_cluster_role("tekton-reader", taskrun_reader())],
            cluster_role_bindings: vec![mk_binding(
                "",
                "alice-reads-all",
                ("ClusterRole", "tekton-reader"),
                vec![user_subject("alice")],
            )],
            ..Rbac::default()
        };
        for ns in [NS, "prod", ""] {
            let d = authorize(&rbac, &mk_user("alice"), &get_taskrun(ns, "build-1"));
            assert!(d.allowed, "{ns}: {d:?}");
            assert_eq!(
                d.reason,
                "RBAC: allowed by ClusterRoleBinding \"alice-reads-all\" of ClusterRole \
                 \"tekton-reader\" to User \"alice\""
            );
        }
        assert!(!authorize(&rbac, &mk_user("bob"), &get_taskrun(NS, "build-1")).allowed);
    }

    #[test]
    fn cluster_role_binding_to_a_role_grants_nothing() {
        let rbac = Rbac {
            roles: vec![mk_role("", "reader", taskrun_reader())],
            cluster_role_bindings: vec![mk_binding(
                "",
                "alice-reads-all",
                ("Role", "reader"),
                vec![user_subject("alice")],
            )],
            ..Rbac::default()
        };
        assert!(!authorize(&rbac, &mk_user("alice"), &get_taskrun(NS, "build-1")).allowed);
    }

    #[test]
    fn group_subject_is_matched_by_the_users_groups() {
        let mut rbac = role_rbac();
        rbac.role_bindings = vec![mk_binding(
            NS,
            "devs-read",
            ("Role", "reader"),
            vec![json!({"kind": "Group", "name": "devs"})],
        )];
        let dev = User::new("carol", &["system:authenticated", "devs"]);
        let d = authorize(&rbac, &dev, &get_taskrun(NS, "build-1"));
        assert!(d.allowed, "{d:?}");
        assert!(d.reason.ends_with("to Group \"devs\""), "{}", d.reason);
        // A user named as the group is not in it.
        assert!(!authorize(&rbac, &mk_user("devs"), &get_taskrun(NS, "build-1")).allowed);
    }

    #[test]
    fn service_account_subject_is_matched_by_its_username() {
        let mut rbac = role_rbac();
        rbac.role_bindings = vec![mk_binding(
            NS,
            "bot-reads",
            ("Role", "reader"),
            vec![
                json!({"kind": "ServiceAccount", "name": "bot", "namespace": "tools"}),
                // No namespace: the binding's.
                json!({"kind": "ServiceAccount", "name": "local-bot"}),
            ],
        )];
        let attrs = get_taskrun(NS, "build-1");
        for username in [
            "system:serviceaccount:tools:bot",
            "system:serviceaccount:ci:local-bot",
        ] {
            let d = authorize(&rbac, &mk_user(username), &attrs);
            assert!(d.allowed, "{username}: {d:?}");
        }
        for username in [
            "bot",
            "system:serviceaccount:ci:bot",
            "system:serviceaccount:tools:local-bot",
        ] {
            assert!(
                !authorize(&rbac, &mk_user(username), &attrs).allowed,
                "{username}"
            );
        }
    }

    #[test]
    fn wildcards_match_every_group_resource_and_verb() {
        let rbac = Rbac {
            cluster_roles: vec![
                mk_cluster_role("admin", vec![mk_rule(&["*"], &["*"], &["*"], &[])]),
                mk_cluster_role(
                    "status-reader",
                    vec![mk_rule(&["*"], &["*/status"], &["get"], &[])],
                ),
            ],
            role_bindings: vec![
                mk_binding(
                    NS,
                    "a",
                    ("ClusterRole", "admin"),
                    vec![user_subject("alice")],
                ),
                mk_binding(
                    NS,
                    "s",
                    ("ClusterRole", "status-reader"),
                    vec![user_subject("bob")],
                ),
            ],
            ..Rbac::default()
        };
        let pod_log = Attributes {
            namespace: NS.into(),
            verb: "get".into(),
            resource: "pods".into(),
            subresource: "log".into(),
            name: "p".into(),
            ..Attributes::default()
        };
        assert!(authorize(&rbac, &mk_user("alice"), &pod_log).allowed);
        assert!(!authorize(&rbac, &mk_user("bob"), &pod_log).allowed);
        let pod_status = Attributes {
            subresource: "status".into(),
            ..pod_log
        };
        assert!(authorize(&rbac, &mk_user("bob"), &pod_status).allowed);
    }

    #[test]
    fn system_masters_is_allowed() {
        let admin = User::new("dev-admin", &[MASTERS, "system:authenticated"]);
        let d = authorize(&Rbac::default(), &admin, &get_taskrun("prod", "x"));
        assert!(d.allowed, "{d:?}");
        assert!(
            !authorize(
                &Rbac::default(),
                &mk_user("dev-admin"),
                &get_taskrun("prod", "x")
            )
            .allowed
        );
    }

    #[test]
    fn access_review_echoes_the_review_with_its_status() {
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "alice", "groups": ["system:authenticated"], "uid": "u1",
                     "resourceAttributes": {"namespace": NS, "verb": "get",
                        "group": "tekton.dev", "resource": "taskruns", "name": "build-1"}}});
        let out = access_review(&role_rbac(), review.clone()).unwrap();
        assert_eq!(out["spec"], review["spec"]);
        assert_eq!(out["kind"], "SubjectAccessReview");
        assert_eq!(out["status"]["allowed"], true);
        assert_eq!(out["status"]["denied"], false);
        let mut bob = review;
        bob["spec"]["user"] = json!("bob");
        let out = access_review(&role_rbac(), bob).unwrap();
        assert_eq!(out["status"]["allowed"], false);
        assert!(
            out["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("\"bob\"")
        );
    }

    #[test]
    fn access_review_without_a_subject_or_attributes_is_invalid() {
        let no_subject = json!({"spec": {"resourceAttributes": {"verb": "get"}}});
        let err = access_review(&role_rbac(), no_subject).unwrap_err();
        assert_eq!(err, ReviewError::NoSubject);
        assert_eq!(err.code(), 422);
        let no_attrs = json!({"spec": {"user": "alice"}});
        assert_eq!(
            access_review(&role_rbac(), no_attrs).unwrap_err(),
            ReviewError::Attributes
        );
        let token_review = json!({"kind": "TokenReview", "spec": {"user": "alice"}});
        let err = access_review(&role_rbac(), token_review).unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.to_string(),
            "body: expected a SubjectAccessReview object, got kind \"TokenReview\""
        );
    }

    #[test]
    fn non_resource_attributes_are_allowed_to_masters_only() {
        let review = |groups: &[&str]| {
            json!({"spec": {"user": "u", "groups": groups,
                            "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}})
        };
        let out = access_review(&Rbac::default(), review(&[MASTERS])).unwrap();
        assert_eq!(out["status"]["allowed"], true);
        let out = access_review(&Rbac::default(), review(&["devs"])).unwrap();
        assert_eq!(out["status"]["allowed"], false);
    }

    #[test]
    fn token_review_says_whose_a_token_is() {
        let mut tokens = Tokens::default();
        tokens.insert("t1", User::new("alice", &["devs"]));
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "spec": {"token": "t1"}});
        let out = token_review(&tokens, review).unwrap();
        assert_eq!(
            out["status"],
            json!({"authenticated": true,
                   "user": {"username": "alice", "uid": "dev-uid-alice", "groups": ["devs"]}})
        );
        let out = token_review(&tokens, json!({"spec": {"token": "t2"}})).unwrap();
        assert_eq!(out["status"]["authenticated"], false);
        assert_eq!(out["kind"], "TokenReview");
        assert_eq!(out["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(
            token_review(&tokens, json!({"spec": {}})).unwrap_err(),
            ReviewError::NoToken
        );
        let err = token_review(&tokens, Value::Null).unwrap_err();
        assert_eq!(
            err.to_string(),
            "body: expected a TokenReview object, got no body"
        );
        let err = token_review(&tokens, json!(["t1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "body: expected a TokenReview object, got a JSON list"
        );
    }
}
