//! Authorization (↔ k8s.io/apiserver/pkg/endpoints/filters/authorization.go
//! and impersonation.go, kube-apiserver's `--authorization-mode=Node,RBAC`),
//! and the review APIs that ask it questions.
//!
//! Every request but the health checks is authorized after authentication
//! and before anything else: its attributes are read from the path and
//! method as k8s.io/apiserver's RequestInfoFactory reads them (so an
//! unknown resource is refused before it is found missing), then members of
//! `system:masters` are allowed, then the Node authorizer (`nodeauthz.rs`)
//! and RBAC (`rbac.rs`) decide. A denial is 403 with kube-apiserver's
//! message. The review resources (authorization.k8s.io SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectAccessReview,
//! SelfSubjectRulesReview; authentication.k8s.io TokenReview,
//! SelfSubjectReview) are create-only and never stored, as in
//! kube-apiserver (pkg/registry/authorization, pkg/registry/authentication).

use std::collections::BTreeMap;

use hyper::HeaderMap;
use serde_json::{Value, json};

use crate::request::Query;
use crate::state::ApiServer;
use crate::status::{ApiError, Cause};

/// An authenticated user (k8s.io/apiserver's user.Info).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";

impl UserInfo {
    /// A user with `groups` and `system:authenticated`, as every
    /// authenticator reports an authenticated user.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            groups,
            ..Default::default()
        }
    }

    /// A service account's user: `system:serviceaccount:NS:NAME` in
    /// `system:serviceaccounts` and `system:serviceaccounts:NS`.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> UserInfo {
        let mut u = UserInfo::new(
            format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        );
        u.uid = uid.to_string();
        u
    }

    /// The API server's own loopback identity (its bootstrap writes).
    pub fn apiserver() -> UserInfo {
        UserInfo::new("system:apiserver", &[MASTERS])
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    fn to_value(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// What a request asks to do (authorizer.Attributes).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    pub resource_request: bool,
    /// Resource requests.
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Non-resource requests.
    pub path: String,
}

impl Attributes {
    /// The attributes of a request, as RequestInfoFactory.NewRequestInfo reads them.
    pub fn of_request(user: UserInfo, method: &str, path: &str, query: &Query) -> Attributes {
        let mut a = Attributes {
            user,
            path: path.to_string(),
            verb: method.to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (("", *version), rest),
            ["apis", group, version, rest @ ..] => ((*group, *version), rest),
            _ => return a,
        };
        if rest.is_empty() {
            // Discovery of a group version is a non-resource request.
            return a;
        }
        a.resource_request = true;
        a.api_group = group.0.to_string();
        a.api_version = group.1.to_string();
        let mut rest = rest;
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        };
        if let ["watch", tail @ ..] = rest {
            verb = "watch";
            rest = tail;
        }
        if let ["namespaces", ns, tail @ ..] = rest {
            a.namespace = ns.to_string();
            if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") {
                rest = tail;
            }
        }
        a.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        if a.name.is_empty() && verb == "get" {
            verb = if query.flag("watch") { "watch" } else { "list" };
            // A list of one name (fieldSelector=metadata.name=x) is
            // authorized as that name.
            if let Some(name) = query
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="))
                .filter(|n| !n.is_empty() && !n.contains([',', '/', '!']))
            {
                a.name = name.to_string();
            }
        }
        if a.name.is_empty() && verb == "delete" {
            verb = "deletecollection";
        }
        // Streaming exec, attach and port-forward over a WebSocket is a GET
        // that creates a session: authorized as create, as kube-apiserver
        // 1.30+ does (AuthorizePodWebsocketUpgradeCreatePermission).
        if a.resource == "pods"
            && matches!(a.subresource.as_str(), "exec" | "attach" | "portforward")
        {
            verb = "create";
        }
        a.verb = verb.to_string();
        a
    }

    /// "pods" or "deployments.apps".
    fn qualified_resource(&self) -> String {
        crate::status::qualified(&self.api_group, &self.resource)
    }

    /// The reason kube-apiserver gives for a denial (forbiddenMessage).
    pub fn forbidden_reason(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let mut resource = self.resource.clone();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                self.verb, self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                self.verb, self.api_group, self.namespace
            )
        }
    }

    /// The 403 of a denied request (apierrors.NewForbidden).
    pub fn forbidden(&self, why: &str) -> ApiError {
        let mut reason = self.forbidden_reason();
        if !why.is_empty() {
            reason = format!("{reason}: {why}");
        }
        let message = if !self.resource_request || self.resource.is_empty() {
            format!("forbidden: {reason}")
        } else if self.name.is_empty() {
            format!("{} is forbidden: {reason}", self.qualified_resource())
        } else {
            format!(
                "{} {:?} is forbidden: {reason}",
                self.qualified_resource(),
                self.name
            )
        };
        let mut e = ApiError::forbidden(message);
        if self.resource_request {
            e.details = Some((
                self.api_group.clone(),
                self.resource.clone(),
                self.name.clone(),
            ));
        }
        e
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    /// No authorizer allowed it; the reason, if one said why.
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// kube-apiserver's authorizer chain: privileged groups, Node, RBAC.
pub fn authorize(server: &ApiServer, a: &Attributes) -> Decision {
    if a.user.in_group(MASTERS) {
        return Decision::Allow(String::new());
    }
    let why = match server.node_authz.authorize(a) {
        crate::nodeauthz::Verdict::Allow => return Decision::Allow(String::new()),
        crate::nodeauthz::Verdict::NoOpinion(why) => why,
    };
    match server.rbac.authorize(a) {
        Some(allowed) => Decision::Allow(allowed),
        None => Decision::Deny(why),
    }
}

/// Authorize a request, or the 403 that refuses it.
pub fn check(server: &ApiServer, a: &Attributes) -> Result<(), ApiError> {
    match authorize(server, a) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(why) => {
            tracing::info!(user = %a.user.name, verb = %a.verb, resource = %a.resource, subresource = %a.subresource, namespace = %a.namespace, path = %a.path, "forbidden");
            Err(a.forbidden(&why))
        }
    }
}

/// Apply `Impersonate-*` headers (filters/impersonation.go): each asked
/// identity is authorized with the `impersonate` verb on users, groups,
/// uids, userextras/KEY or serviceaccounts, and the request then runs as
/// that user.
pub fn impersonate(
    server: &ApiServer,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uids = values("impersonate-uid");
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((
                crate::request::percent_decode(key).to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    if users.is_empty() {
        if !groups.is_empty() || !uids.is_empty() || !extras.is_empty() {
            return Err(ApiError::internal(
                "requested impersonation of groups, extra or uid without a user",
            ));
        }
        return Ok(user);
    }
    let ask = |group: &str, resource: &str, sub: &str, ns: &str, name: &str| Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        namespace: ns.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut checks = Vec::new();
    let name = users[users.len() - 1].clone();
    let mut target = match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            checks.push(ask("", "serviceaccounts", "", ns, sa));
            let mut u = UserInfo::service_account(ns, sa, "");
            // Groups asked for replace the service account's own.
            if !groups.is_empty() {
                u.groups.clear();
            }
            u
        }
        None => {
            checks.push(ask("", "users", "", "", &name));
            UserInfo {
                name: name.clone(),
                ..Default::default()
            }
        }
    };
    for g in &groups {
        checks.push(ask("", "groups", "", "", g));
        if !target.in_group(g) {
            target.groups.push(g.clone());
        }
    }
    if let Some(uid) = uids.last() {
        checks.push(ask("authentication.k8s.io", "uids", "", "", uid));
        target.uid = uid.clone();
    }
    for (k, v) in extras {
        checks.push(ask("authentication.k8s.io", "userextras", &k, "", &v));
        target.extra.entry(k).or_default().push(v);
    }
    for c in &checks {
        if !authorize(server, c).allowed() {
            return Err(c.forbidden(""));
        }
    }
    if target.name != "system:anonymous" && !target.in_group(AUTHENTICATED) {
        target.groups.push(AUTHENTICATED.into());
    }
    Ok(target)
}

/// Admission checks of a write that depend on who makes it: NodeRestriction,
/// and RBAC's escalation prevention on roles and bindings (a user may only
/// grant what they hold, unless allowed to `escalate` a role or `bind` it).
/// `verb` is create, update or delete; `old` the stored object.
pub fn admit_write(
    req: &crate::handlers::Req<'_>,
    verb: &str,
    sub: Option<&str>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let info = req.info;
    let name = obj
        .or(old)
        .map(crate::handlers::name_of)
        .unwrap_or_default();
    crate::nodeauthz::admit(
        &req.user,
        verb,
        info.plural,
        sub.unwrap_or_default(),
        name,
        obj,
        old,
    )?;
    if info.group != "rbac.authorization.k8s.io"
        || verb == "delete"
        || sub.is_some()
        || req.user.in_group(MASTERS)
    {
        return Ok(());
    }
    let Some(obj) = obj else { return Ok(()) };
    let namespace = req.namespace.clone().unwrap_or_default();
    let ask = |verb: &str, resource: &str, name: &str| Attributes {
        user: req.user.clone(),
        verb: verb.into(),
        resource_request: true,
        namespace: namespace.clone(),
        api_group: info.group.into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    };
    let forbid = |why: String| {
        let mut e = ApiError::forbidden(format!(
            "{} {name:?} is forbidden: {why}",
            crate::status::qualified(info.group, info.plural)
        ));
        e.details = Some((info.group.into(), info.plural.into(), name.into()));
        e
    };
    let escalation = |rules: &[crate::rbac::Rule]| -> Result<(), ApiError> {
        let held = req.server.rbac.rules_for(&req.user, &namespace);
        let missing = crate::rbac::uncovered(&held, rules);
        if missing.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = missing.iter().map(crate::rbac::compact).collect();
        Err(forbid(format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            req.user.name,
            req.user.groups,
            list.join("\n")
        )))
    };
    match info.kind {
        "Role" | "ClusterRole" => {
            if authorize(req.server, &ask("escalate", info.plural, name)).allowed() {
                return Ok(());
            }
            let mut rules: Vec<crate::rbac::Rule> = obj
                .get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(crate::rbac::Rule::from_value).collect())
                .unwrap_or_default();
            // Setting an aggregation rule needs every permission.
            if obj.get("aggregationRule").is_some_and(|v| !v.is_null()) {
                rules = vec![crate::rbac::Rule {
                    verbs: vec!["*".into()],
                    api_groups: vec!["*".into()],
                    resources: vec!["*".into()],
                    ..Default::default()
                }];
            }
            escalation(&rules)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let kind = obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role = obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if authorize(req.server, &ask("bind", plural, role)).allowed() {
                return Ok(());
            }
            let Some(rules) = req.server.rbac.role(kind, &namespace, role) else {
                return Err(ApiError::not_found(
                    "rbac.authorization.k8s.io",
                    plural,
                    role,
                ));
            };
            escalation(&rules)
        }
        _ => Ok(()),
    }
}

/// One create-only review resource.
#[derive(Debug)]
pub struct Review {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn review(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Review {
    Review {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
    }
}

/// Every review resource, as discovery lists them.
pub const REVIEWS: &[Review] = &[
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    review(
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
];

/// The review resource a path names, with its namespace
/// (`/apis/authorization.k8s.io/v1/namespaces/ns/localsubjectaccessreviews`).
pub fn find(path: &str) -> Option<(&'static Review, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, namespace, plural) = match segs.as_slice() {
        ["apis", g, v, p] => (*g, *v, None, *p),
        ["apis", g, v, "namespaces", ns, p] => (*g, *v, Some(ns.to_string()), *p),
        _ => return None,
    };
    let r = REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    (r.namespaced == namespace.is_some()).then_some((r, namespace))
}

fn invalid(r: &Review, field: &str, reason: &str, message: &str) -> ApiError {
    ApiError::invalid(
        r.group,
        r.kind,
        "",
        vec![Cause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

/// Checks a SubjectAccessReviewSpec as kube-apiserver's
/// ValidateSubjectAccessReviewSpec (and the self variant, which has no user).
fn validate_access_spec(r: &Review, spec: &Value, needs_subject: bool) -> Result<(), ApiError> {
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    match (has("resourceAttributes"), has("nonResourceAttributes")) {
        (true, true) => {
            return Err(invalid(
                r,
                "spec.nonResourceAttributes",
                "FieldValueInvalid",
                "Invalid value: \"null\": cannot be specified in combination with resourceAttributes",
            ));
        }
        (false, false) => {
            return Err(invalid(
                r,
                "spec.resourceAttributes",
                "FieldValueInvalid",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        _ => {}
    }
    if needs_subject {
        let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups = spec
            .get("groups")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        if user.is_empty() && !groups {
            return Err(invalid(
                r,
                "spec.user",
                "FieldValueInvalid",
                "Invalid value: \"\": at least one of user or group must be specified",
            ));
        }
    }
    Ok(())
}

/// The user a SubjectAccessReviewSpec names.
fn spec_user(spec: &Value) -> UserInfo {
    let extra = spec
        .get("extra")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), skiff_api::value::strings(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    UserInfo {
        name: str_at(spec, "/user").to_string(),
        uid: str_at(spec, "/uid").to_string(),
        groups: skiff_api::value::strings(spec.get("groups")),
        extra,
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The attributes a SubjectAccessReviewSpec asks about.
fn spec_attributes(user: UserInfo, spec: &Value) -> Attributes {
    match spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Some(r) => Attributes {
            user,
            verb: str_at(r, "/verb").into(),
            resource_request: true,
            namespace: str_at(r, "/namespace").into(),
            api_group: str_at(r, "/group").into(),
            api_version: str_at(r, "/version").into(),
            resource: str_at(r, "/resource").into(),
            subresource: str_at(r, "/subresource").into(),
            name: str_at(r, "/name").into(),
            path: String::new(),
        },
        None => Attributes {
            user,
            verb: str_at(spec, "/nonResourceAttributes/verb").into(),
            path: str_at(spec, "/nonResourceAttributes/path").into(),
            ..Default::default()
        },
    }
}

/// A SubjectAccessReviewStatus.
fn access_status(server: &ApiServer, a: &Attributes) -> Value {
    match authorize(server, a) {
        Decision::Allow(why) if why.is_empty() => json!({"allowed": true}),
        Decision::Allow(why) => json!({"allowed": true, "reason": why}),
        Decision::Deny(why) if why.is_empty() => json!({"allowed": false}),
        Decision::Deny(why) => json!({"allowed": false, "reason": why}),
    }
}

/// A SubjectRulesReviewStatus: what RBAC grants `user` in `namespace`.
fn rules_status(server: &ApiServer, user: &UserInfo, namespace: &str) -> Value {
    let rules = server.rbac.rules_for(user, namespace);
    let (resource, non_resource): (Vec<_>, Vec<_>) =
        rules.iter().partition(|r| r.non_resource_urls.is_empty());
    let mut status = json!({
        "resourceRules": resource.iter().map(|r| {
            let mut v = r.to_value();
            v.as_object_mut().map(|m| m.remove("nonResourceURLs"));
            v
        }).collect::<Vec<_>>(),
        "nonResourceRules": non_resource.iter().map(|r| json!({
            "verbs": r.verbs, "nonResourceURLs": r.non_resource_urls
        })).collect::<Vec<_>>(),
        "incomplete": false,
    });
    if crate::nodeauthz::node_name(user).is_some() {
        // The Node authorizer's permissions are not enumerable.
        status["incomplete"] = json!(true);
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    status
}

/// Answers a review: the request object with its status filled in.
pub fn answer(
    server: &ApiServer,
    r: &Review,
    namespace: Option<&str>,
    mut body: Value,
    user: &UserInfo,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding {}: the body is not an object",
            r.kind
        )));
    }
    body["apiVersion"] = json!(format!("{}/{}", r.group, r.version));
    body["kind"] = json!(r.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = json!(crate::handlers::now_rfc3339());
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    body["status"] = match r.kind {
        "SubjectAccessReview" => {
            validate_access_spec(r, &spec, true)?;
            access_status(server, &spec_attributes(spec_user(&spec), &spec))
        }
        "LocalSubjectAccessReview" => {
            validate_access_spec(r, &spec, true)?;
            let ns = namespace.unwrap_or_default();
            if spec
                .get("nonResourceAttributes")
                .is_some_and(|v| !v.is_null())
            {
                return Err(invalid(
                    r,
                    "spec.nonResourceAttributes",
                    "FieldValueInvalid",
                    "Invalid value: \"null\": disallowed on this kind of request",
                ));
            }
            if str_at(&spec, "/resourceAttributes/namespace") != ns {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), json!(ns));
            }
            access_status(server, &spec_attributes(spec_user(&spec), &spec))
        }
        "SelfSubjectAccessReview" => {
            validate_access_spec(r, &spec, false)?;
            access_status(server, &spec_attributes(user.clone(), &spec))
        }
        "SelfSubjectRulesReview" => {
            let ns = str_at(&spec, "/namespace");
            if ns.is_empty() {
                return Err(invalid(
                    r,
                    "spec.namespace",
                    "FieldValueRequired",
                    "Required value",
                ));
            }
            rules_status(server, user, ns)
        }
        "TokenReview" => {
            let token = str_at(&spec, "/token");
            if token.is_empty() {
                return Err(invalid(
                    r,
                    "spec.token",
                    "FieldValueRequired",
                    "Required value",
                ));
            }
            let audiences = skiff_api::value::strings(spec.get("audiences"));
            match server.authenticate_token(token, &audiences) {
                Some((who, audiences)) => json!({
                    "authenticated": true,
                    "user": who.to_value(),
                    "audiences": audiences
                }),
                None => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
            }
        }
        _ => json!({"userInfo": user.to_value()}),
    };
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_reviews() {
        let (r, ns) =
            find("/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews")
                .unwrap();
        assert_eq!(
            (r.kind, ns.as_deref()),
            ("LocalSubjectAccessReview", Some("team"))
        );
        let (r, ns) = find("/apis/authorization.k8s.io/v1/subjectaccessreviews").unwrap();
        assert_eq!((r.kind, ns), ("SubjectAccessReview", None));
        // Cluster-scoped reviews have no namespaced path, and vice versa.
        assert!(find("/apis/authorization.k8s.io/v1/namespaces/a/subjectaccessreviews").is_none());
        assert!(find("/apis/authorization.k8s.io/v1/localsubjectaccessreviews").is_none());
        assert!(find("/apis/authorization.k8s.io/v2/subjectaccessreviews").is_none());
    }

    fn attrs(method: &str, path: &str, query: &str) -> Attributes {
        Attributes::of_request(
            UserInfo::new("u", &[]),
            method,
            path,
            &Query::parse(Some(query)),
        )
    }

    #[test]
    fn request_attributes_as_kube_apiserver_reads_them() {
        let a = attrs("GET", "/api/v1/namespaces/ns/pods", "");
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "ns", "pods")
        );
        let a = attrs("GET", "/api/v1/namespaces/ns/pods", "watch=true");
        assert_eq!(a.verb, "watch");
        let a = attrs("GET", "/api/v1/watch/namespaces/ns/pods/p", "");
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = attrs(
            "GET",
            "/api/v1/namespaces/ns/pods",
            "fieldSelector=metadata.name%3Dp",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "p"));
        let a = attrs("DELETE", "/apis/apps/v1/namespaces/ns/deployments", "");
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = attrs("PUT", "/api/v1/namespaces/ns/status", "");
        assert_eq!(
            (
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str(),
                a.namespace.as_str()
            ),
            ("namespaces", "ns", "status", "ns")
        );
        let a = attrs("GET", "/api/v1/namespaces/ns", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("get", "namespaces", "ns")
        );
        let a = attrs("GET", "/api/v1/namespaces/ns/pods/p/exec", "command=ls");
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "exec")
        );
        let a = attrs("GET", "/apis/apps/v1", "");
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
        let a = attrs("POST", "/api/v1/nodes", "");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("create", ""));
    }

    #[test]
    fn forbidden_messages_as_kube_apiserver_words_them() {
        let mut a = attrs("GET", "/api/v1/namespaces/y/secrets", "");
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "secrets is forbidden: User \"x\" cannot list resource \"secrets\" in API group \"\" in the namespace \"y\""
        );
        let mut a = attrs("GET", "/apis/apps/v1/namespaces/y/deployments/d/scale", "");
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "deployments.apps \"d\" is forbidden: User \"x\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"y\""
        );
        let mut a = attrs("GET", "/metrics", "");
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "forbidden: User \"x\" cannot get path \"/metrics\""
        );
        let mut a = attrs("GET", "/api/v1/nodes", "");
        a.user.name = "x".into();
        assert!(a.forbidden("").message.ends_with("at the cluster scope"));
    }

    #[test]
    fn users_carry_their_groups() {
        let sa = UserInfo::service_account("team", "builder", "u1");
        assert_eq!(sa.name, "system:serviceaccount:team:builder");
        assert!(sa.in_group("system:serviceaccounts:team"));
        assert!(sa.in_group(AUTHENTICATED));
    }
}
