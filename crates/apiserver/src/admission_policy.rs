//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding
//! (admissionregistration.k8s.io/v1, k8s.io/apiserver's
//! `admission/plugin/policy/validating`): policies and bindings are
//! followed from the watch cache and compiled once (CEL through
//! `skiff_api::cel`); a write that a binding's policy matches
//! (matchConstraints, then the binding's matchResources, then the
//! policy's matchConditions) has each validation evaluated with `object`,
//! `oldObject`, `request`, `params` (the binding's paramRef, looked up in
//! the cache), `namespaceObject` and `variables` bound. A failed
//! validation is acted on per the binding's validationActions: Deny (the
//! request is refused), Warn (a Warning header), Audit (logged). An
//! expression that cannot be evaluated follows the policy's
//! failurePolicy. Policies run after the object's own validation and
//! before validating webhooks, as in kube-apiserver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::{Value, json};
use skiff_api::cel::Expression;
use skiff_api::selector::LabelSelector;
use skiff_api::value::strings;

use crate::state::ApiServer;
use crate::status::ApiError;
use crate::webhook::{Attributes, Rule, selectors_match};

const POLICIES: &str = "/registry/validatingadmissionpolicies/";
const BINDINGS: &str = "/registry/validatingadmissionpolicybindings/";
/// What policies' expressions may name.
const VARIABLES: [&str; 7] = [
    "object",
    "oldObject",
    "request",
    "params",
    "namespaceObject",
    "variables",
    "authorizer",
];

/// Which objects a policy or binding applies to.
#[derive(Default)]
struct Match {
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    rules: Vec<Rule>,
    exclude: Vec<Rule>,
}

impl Match {
    fn from_value(m: Option<&Value>) -> Result<Match, String> {
        let Some(m) = m else {
            return Ok(Match::default());
        };
        let selector = |key: &str| match m.get(key) {
            Some(sel) if sel.is_object() => {
                LabelSelector::from_object(sel).map_err(|e| e.to_string())
            }
            _ => Ok(LabelSelector::default()),
        };
        let rules = |key: &str| -> Vec<Rule> {
            m.get(key)
                .and_then(Value::as_array)
                .map(|rs| rs.iter().map(Rule::from_value).collect())
                .unwrap_or_default()
        };
        Ok(Match {
            namespace_selector: selector("namespaceSelector")?,
            object_selector: selector("objectSelector")?,
            rules: rules("resourceRules"),
            exclude: rules("excludeResourceRules"),
        })
    }

    /// `all_if_no_rules`: a binding without resourceRules narrows nothing.
    fn matches(&self, server: &ApiServer, a: &Attributes<'_>, all_if_no_rules: bool) -> bool {
        let ruled = if self.rules.is_empty() {
            all_if_no_rules
        } else {
            self.rules.iter().any(|r| r.matches(a))
        };
        ruled
            && !self.exclude.iter().any(|r| r.matches(a))
            && selectors_match(server, &self.namespace_selector, &self.object_selector, a)
    }
}

struct Validation {
    expression: Expression,
    message: String,
    message_expression: Option<Expression>,
    reason: String,
}

struct Policy {
    fail: bool,
    /// (apiVersion, kind) of the params, if the policy takes any.
    param_kind: Option<(String, String)>,
    constraints: Match,
    conditions: Vec<(String, Expression)>,
    variables: Vec<(String, Expression)>,
    validations: Vec<Validation>,
    /// Why the policy could not be compiled (then it fails or is ignored
    /// per its failurePolicy wherever it matches).
    broken: Option<String>,
}

struct Binding {
    name: String,
    policy: String,
    param_ref: Option<Value>,
    resources: Option<Match>,
    deny: bool,
    warn: bool,
    audit: bool,
}

#[derive(Default)]
struct Compiled {
    policies: BTreeMap<String, Arc<Policy>>,
    bindings: Vec<Arc<Binding>>,
}

/// The policies and bindings in force.
#[derive(Default)]
pub struct Policies {
    objects: Mutex<BTreeMap<String, Value>>,
    compiled: RwLock<Arc<Compiled>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policies")
    }
}

fn compile_policy(p: &Value) -> Policy {
    let spec = p.get("spec").cloned().unwrap_or_default();
    let mut broken: Option<String> = None;
    let mut compile = |src: &str| match Expression::compile(src, &VARIABLES) {
        Ok(e) => Some(e),
        Err(e) => {
            broken.get_or_insert(format!("expression '{src}': {e}"));
            None
        }
    };
    let named =
        |list: Option<&Value>, key: &str, compile: &mut dyn FnMut(&str) -> Option<Expression>| {
            list.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    let src = c.get(key).and_then(Value::as_str).unwrap_or_default();
                    compile(src).map(|e| (name.to_string(), e))
                })
                .collect::<Vec<_>>()
        };
    let conditions = named(spec.get("matchConditions"), "expression", &mut compile);
    let variables = named(spec.get("variables"), "expression", &mut compile);
    let validations = spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let expression = compile(
                v.get("expression")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )?;
            let message_expression = match v.get("messageExpression").and_then(Value::as_str) {
                Some(src) => Some(compile(src)?),
                None => None,
            };
            Some(Validation {
                expression,
                message: v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                message_expression,
                reason: v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Invalid")
                    .to_string(),
            })
        })
        .collect();
    let constraints = Match::from_value(spec.get("matchConstraints")).unwrap_or_else(|e| {
        broken.get_or_insert(e);
        Match::default()
    });
    let param_kind = spec.get("paramKind").map(|k| {
        (
            k.get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            k.get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    });
    Policy {
        fail: spec.get("failurePolicy").and_then(Value::as_str) != Some("Ignore"),
        param_kind,
        constraints,
        conditions,
        variables,
        validations,
        broken,
    }
}

fn compile_binding(name: &str, b: &Value) -> Binding {
    let spec = b.get("spec").cloned().unwrap_or_default();
    let actions = strings(spec.get("validationActions"));
    Binding {
        name: name.to_string(),
        policy: spec
            .get("policyName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        param_ref: spec.get("paramRef").cloned(),
        resources: spec
            .get("matchResources")
            .map(|m| Match::from_value(Some(m)).unwrap_or_default()),
        deny: actions.iter().any(|a| a == "Deny"),
        warn: actions.iter().any(|a| a == "Warn"),
        audit: actions.iter().any(|a| a == "Audit"),
    }
}

impl Policies {
    fn apply(&self, key: &str, object: Option<&Value>) {
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        match object {
            Some(o) => objects.insert(key.to_string(), o.clone()),
            None => objects.remove(key),
        };
        let mut compiled = Compiled::default();
        for (k, v) in objects.iter() {
            if let Some(name) = k.strip_prefix(POLICIES) {
                compiled
                    .policies
                    .insert(name.to_string(), Arc::new(compile_policy(v)));
            } else if let Some(name) = k.strip_prefix(BINDINGS) {
                compiled.bindings.push(Arc::new(compile_binding(name, v)));
            }
        }
        *self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(compiled);
    }

    fn current(&self) -> Arc<Compiled> {
        self.compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Follow policies and bindings in the watch cache.
pub fn start(server: &Arc<ApiServer>) {
    for prefix in [POLICIES, BINDINGS] {
        let s = server.clone();
        crate::cache::follow(&server.cache, prefix, move |ev| match ev {
            crate::cache::Followed::Put(o) => s.policies.apply(&o.key, Some(&o.value)),
            crate::cache::Followed::Delete(key) => s.policies.apply(key, None),
        });
    }
}

/// The `request` variable (an AdmissionRequest's fields).
pub(crate) fn request_value(a: &Attributes<'_>) -> Value {
    let mut r = json!({
        "kind": {"group": a.info.group, "version": a.info.version, "kind": a.info.kind},
        "resource": {"group": a.info.group, "version": a.info.version, "resource": a.info.plural},
        "name": a.name,
        "operation": a.operation,
        "userInfo": {"username": a.user.name, "groups": a.user.groups},
        "dryRun": a.dry_run,
    });
    if let Some(ns) = a.namespace.filter(|_| a.info.namespaced) {
        r["namespace"] = json!(ns);
    }
    if let Some(sub) = a.sub {
        r["subResource"] = json!(sub);
    }
    r
}

/// The params a binding names, or why there are none to use. Ok(None):
/// the policy takes no params.
fn params(
    server: &ApiServer,
    policy: &Policy,
    binding: &Binding,
    a: &Attributes<'_>,
) -> Result<Option<Vec<Value>>, String> {
    let Some((api_version, kind)) = &policy.param_kind else {
        return Ok(None);
    };
    let Some(param_ref) = &binding.param_ref else {
        return Err("no paramRef in the binding of a policy with paramKind".into());
    };
    let info = server
        .resources
        .lookup_kind(api_version, kind)
        .ok_or_else(|| format!("paramKind {api_version}, Kind={kind} is not served"))?;
    let namespace = match param_ref.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => Some(ns.to_string()),
        _ if info.namespaced => a.namespace.map(str::to_string),
        _ => None,
    };
    let found: Vec<Value> = match param_ref.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => server
            .cache
            .get(&info.key(namespace.as_deref(), name))
            .map(|o| vec![o.value.clone()])
            .unwrap_or_default(),
        _ => {
            let selector = param_ref
                .get("selector")
                .map(LabelSelector::from_object)
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let prefix = match (&namespace, info.namespaced) {
                (Some(ns), true) => info.namespace_prefix(ns),
                _ => info.key_prefix(),
            };
            let (objs, _, _) = server
                .cache
                .list(&prefix, None, 0, |o| selector.matches_object(&o.value));
            objs.into_iter().map(|o| o.value.clone()).collect()
        }
    };
    if found.is_empty() {
        let allow = param_ref
            .get("parameterNotFoundAction")
            .and_then(Value::as_str)
            == Some("Allow");
        return if allow {
            Ok(Some(Vec::new()))
        } else {
            Err("no params found for policy binding with `Deny` parameterNotFoundAction".into())
        };
    }
    Ok(Some(found))
}

fn code_of(reason: &str) -> (u16, &'static str) {
    match reason {
        "Unauthorized" => (401, "Unauthorized"),
        "Forbidden" => (403, "Forbidden"),
        "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    }
}

/// Evaluate the policies bound for `a`.
pub fn validate(server: &ApiServer, a: &Attributes<'_>) -> Result<(), ApiError> {
    if crate::webhook::exempt(a.info) {
        return Ok(());
    }
    let compiled = server.policies.current();
    if compiled.bindings.is_empty() {
        return Ok(());
    }
    let request = request_value(a);
    let namespace_object = a
        .namespace
        .filter(|_| a.info.namespaced)
        .and_then(|ns| server.cache.get(&format!("/registry/namespaces/{ns}")))
        .map(|o| o.value.clone())
        .unwrap_or(Value::Null);
    let null = Value::Null;
    for binding in &compiled.bindings {
        let Some(policy) = compiled.policies.get(&binding.policy) else {
            continue;
        };
        if !policy.constraints.matches(server, a, false) {
            continue;
        }
        if let Some(m) = &binding.resources
            && !m.matches(server, a, true)
        {
            continue;
        }
        let refuse = |message: String, reason: &str| -> Result<(), ApiError> {
            let text = format!(
                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
                binding.policy, binding.name
            );
            if binding.warn {
                a.warnings.warn(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {message}",
                    binding.policy, binding.name
                ));
            }
            if binding.audit {
                tracing::info!(policy = %binding.policy, binding = %binding.name, %message, "admission policy audit");
            }
            if binding.deny {
                let (code, reason) = code_of(reason);
                return Err(ApiError::new(code, reason, text));
            }
            Ok(())
        };
        let failed = |e: String| -> Result<(), ApiError> {
            if policy.fail {
                refuse(e, "Invalid")
            } else {
                tracing::warn!(policy = %binding.policy, error = %e, "admission policy failed; failurePolicy Ignore");
                Ok(())
            }
        };
        if let Some(e) = &policy.broken {
            failed(e.clone())?;
            continue;
        }
        let params = match params(server, policy, binding, a) {
            Ok(p) => p,
            Err(e) => {
                failed(e)?;
                continue;
            }
        };
        let param_sets: Vec<Value> = match params {
            None => vec![Value::Null],
            Some(ps) => ps,
        };
        for params in &param_sets {
            let object = a.object.unwrap_or(&null);
            let old = a.old.unwrap_or(&null);
            let mut vars: Vec<(&str, &Value)> = vec![
                ("object", object),
                ("oldObject", old),
                ("request", &request),
                ("params", params),
                ("namespaceObject", &namespace_object),
            ];
            // Match conditions: all must hold.
            let mut applies = true;
            for (name, cond) in &policy.conditions {
                match cond.eval_bool(&vars) {
                    Ok(true) => {}
                    Ok(false) => {
                        applies = false;
                        break;
                    }
                    Err(e) => {
                        failed(format!("matchCondition '{name}': {e}"))?;
                        applies = false;
                        break;
                    }
                }
            }
            if !applies {
                continue;
            }
            // Variables, each seeing the ones before it.
            let mut variables = serde_json::Map::new();
            let mut broken = None;
            for (name, expr) in &policy.variables {
                let mut with: Vec<(&str, &Value)> = vars.clone();
                let so_far = Value::Object(variables.clone());
                with.push(("variables", &so_far));
                match expr.eval_json(&with) {
                    Ok(v) => {
                        variables.insert(name.clone(), v);
                    }
                    Err(e) => {
                        broken = Some(format!("variable '{name}': {e}"));
                        break;
                    }
                }
            }
            if let Some(e) = broken {
                failed(e)?;
                continue;
            }
            let variables = Value::Object(variables);
            vars.push(("variables", &variables));
            for v in &policy.validations {
                match v.expression.eval_bool(&vars) {
                    Ok(true) => {}
                    Ok(false) => {
                        let message = v
                            .message_expression
                            .as_ref()
                            .and_then(|m| m.eval_string(&vars).ok())
                            .filter(|m| !m.trim().is_empty())
                            .or_else(|| (!v.message.is_empty()).then(|| v.message.clone()))
                            .unwrap_or_else(|| {
                                format!("failed expression: {}", v.expression.source())
                            });
                        refuse(message, &v.reason)?;
                    }
                    Err(e) => failed(format!(
                        "expression '{}' resulted in error: {e}",
                        v.expression.source()
                    ))?,
                }
            }
        }
    }
    Ok(())
}
