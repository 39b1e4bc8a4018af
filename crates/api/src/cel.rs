//! CEL validation rules of custom resources (`x-kubernetes-validations`),
//! as k8s.io/apiextensions-apiserver's `pkg/apiserver/schema/cel` and the
//! rule checks of `pkg/apis/apiextensions/validation`.
//!
//! A rule is compiled once, when a definition's version is served
//! ([`Rules::compile`], kept beside the schema), and evaluated on every
//! create and update with `self` bound to the value at the rule's schema
//! node and, for transition rules (those naming `oldSelf`), `oldSelf` bound
//! to the old object's value at the same place. Old values are found as
//! kube-apiserver correlates them: by property name in objects (unless
//! `x-kubernetes-map-type: atomic`) and by key in `x-kubernetes-list-type:
//! map` lists; nothing else correlates.
//!
//! The interpreter is the `cel` crate (cel-rust). It has no type checker,
//! so what cel-go finds at compile time from the schema's types (no such
//! field, no matching overload, a non-bool result) is found here when the
//! rule runs, and reported as evaluation errors are. Compile time catches
//! syntax errors and undeclared identifiers.
//!
//! Functions: the CEL standard library (`size`, `has`, `all`, `exists`,
//! `exists_one`, `map`, `filter`, `in`, `matches`, `startsWith`,
//! `endsWith`, `contains`, conversions), cel-go's strings extension
//! (`lowerAscii`, `upperAscii`, `trim`, `replace`, `split`, `substring`,
//! `indexOf`, `lastIndexOf`, `join`, `charAt`, `format`, `reverse`),
//! optionals (`oldSelf.hasValue()`, `.value()`, `.orValue()` for
//! `optionalOldSelf`), and Kubernetes' list functions `isSorted`, `sum`,
//! `min` and `max`. Missing: Kubernetes' `url`, `ip`, `cidr`, `quantity`,
//! `semver`, `format` libraries, `authz`, the `sets` extension, lists'
//! `indexOf`/`lastIndexOf`, the regex library's `find`/`findAll`,
//! timestamps and durations (cel-rust needs chrono for those), two-variable
//! comprehensions, `x-kubernetes-list-type` set/map equality (lists compare
//! in order), and rules inside `allOf`/`anyOf`/`oneOf`/`not`.
//!
//! Cost. cel-go counts evaluation steps; cel-rust cannot, so both bounds
//! come from one static estimate ([`estimate`]): every node costs 1, a
//! comprehension costs its range size times its body, `in` and list
//! equality cost the list's size, `matches` 100 (it compiles its pattern).
//! Sizes come from `maxItems`/`maxProperties`; without them, from how many
//! of the smallest elements fit in a 3 MiB request, as upstream estimates.
//! At definition time a rule whose estimate times the number of times it
//! can run (its enclosing lists' and maps' sizes) exceeds 10M is refused,
//! as is a schema whose rules sum to more than 100M (upstream's
//! StaticEstimatedCostLimit and StaticEstimatedCRDCostLimit): one
//! unbounded iteration is affordable, an unbounded one nested in another is
//! not. At run time the same estimate, with every size capped by the
//! number of JSON values in `self` (and `oldSelf`), is charged before a
//! rule runs: over 1M for one rule, or over 10M for one object, and no
//! further rules are run (upstream's PerCallLimit, RuntimeCELCostBudget).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use ::cel::common::ast::{EntryExpr, Expr, IdedExpr};
use ::cel::common::types::CelOptional;
use ::cel::common::value::Val;
use ::cel::extractors::This;
use ::cel::{Context, Env, ExecutionError, Program, Value as Cel};
use serde_json::{Map, Value};

use crate::validation::{FieldError, go_quote};

const VALIDATIONS: &str = "x-kubernetes-validations";

/// The most one rule may cost, estimated at definition time, times the
/// number of times it may run (`StaticEstimatedCostLimit`).
pub const RULE_COST_LIMIT: u64 = 10_000_000;
/// The most all the rules of a schema may cost (`StaticEstimatedCRDCostLimit`).
pub const SCHEMA_COST_LIMIT: u64 = 100_000_000;
/// The most one evaluation may cost at run time (`PerCallLimit`).
pub const CALL_COST_LIMIT: u64 = 1_000_000;
/// The most the rules of one object may cost at run time (`RuntimeCELCostBudget`).
pub const OBJECT_COST_BUDGET: u64 = 10_000_000;
/// The request size sizes are estimated from when a schema has no bound.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;
/// What `matches` costs: it compiles its pattern every time.
const REGEX_COST: u64 = 100;

const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// The environment every rule compiles and runs in: the standard library
/// and the strings extension.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(::cel::extensions::strings)
            .expect("the strings extension declares no duplicates");
        Arc::new(env)
    })
}

// ---------------------------------------------------------------------------
// Compiled rules
// ---------------------------------------------------------------------------

/// One compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    rule: String,
    message: String,
    message_expression: Option<Program>,
    reason: Option<String>,
    /// The normalized `fieldPath` ("spec.foo", "map[key]"), if any.
    field_path: Option<String>,
    optional_old_self: bool,
    /// The program, or why it did not compile.
    program: Result<Program, String>,
    uses_old_self: bool,
}

impl Rule {
    /// Upstream's `ruleErrorString`: the message, else the rule.
    fn error_string(&self) -> &str {
        if self.message.is_empty() {
            self.rule.trim()
        } else {
            self.message.trim()
        }
    }
}

/// The compiled rules of a schema, as a tree that follows the schema's
/// properties, items and additionalProperties where rules are found below.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    properties: BTreeMap<String, Rules>,
    items: Option<Box<Rules>>,
    additional: Option<Box<Rules>>,
}

impl Rules {
    /// Compiles every rule of `schema`; `None` when it has none.
    pub fn compile(schema: &Value) -> Option<Rules> {
        let mut node = Rules::default();
        if let Some(entries) = schema.get(VALIDATIONS).and_then(Value::as_array) {
            for entry in entries {
                if let Some(rule) = compile_entry(entry, schema, "", &mut Vec::new()) {
                    node.rules.push(rule);
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                if let Some(sub) = Rules::compile(child) {
                    node.properties.insert(k.clone(), sub);
                }
            }
        }
        node.items = schema.get("items").and_then(Rules::compile).map(Box::new);
        node.additional = schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .and_then(Rules::compile)
            .map(Box::new);
        let empty = node.rules.is_empty()
            && node.properties.is_empty()
            && node.items.is_none()
            && node.additional.is_none();
        (!empty).then_some(node)
    }

    /// Evaluates the rules on `obj` (a custom resource validated by
    /// `schema`, the schema these rules were compiled from), with `old`,
    /// the stored object on an update, for transition rules.
    pub fn validate(&self, schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut run = Run {
            ctx: root_context(),
            remaining: OBJECT_COST_BUDGET,
            stopped: false,
            errs: Vec::new(),
        };
        run.node(self, schema, obj, old, "", true);
        run.errs
    }
}

/// The root scope of one object's evaluations: the environment, and
/// Kubernetes' list functions.
fn root_context() -> Context<'static, 'static> {
    let mut ctx = Context::with_env(env().clone());
    // None of these names is an overload of the environment, so none fails.
    let _ = ctx.add_function("isSorted", is_sorted);
    let _ = ctx.add_function("sum", sum);
    let _ = ctx.add_function("min", |This(list): This<Arc<Vec<Cel>>>| {
        extreme(&list, "min", Ordering::Less)
    });
    let _ = ctx.add_function("max", |This(list): This<Arc<Vec<Cel>>>| {
        extreme(&list, "max", Ordering::Greater)
    });
    ctx
}

fn compare(a: &Cel, b: &Cel) -> Option<Ordering> {
    match (a, b) {
        (Cel::Int(x), Cel::Int(y)) => Some(x.cmp(y)),
        (Cel::UInt(x), Cel::UInt(y)) => Some(x.cmp(y)),
        (Cel::Float(x), Cel::Float(y)) => x.partial_cmp(y),
        (Cel::String(x), Cel::String(y)) => Some(x.cmp(y)),
        (Cel::Bool(x), Cel::Bool(y)) => Some(x.cmp(y)),
        (Cel::Bytes(x), Cel::Bytes(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn not_comparable(function: &str) -> ExecutionError {
    ExecutionError::function_error(function, "no such overload")
}

fn is_sorted(This(list): This<Arc<Vec<Cel>>>) -> Result<bool, ExecutionError> {
    for pair in list.windows(2) {
        match compare(&pair[0], &pair[1]) {
            Some(Ordering::Greater) => return Ok(false),
            Some(_) => {}
            None => return Err(not_comparable("isSorted")),
        }
    }
    Ok(true)
}

fn sum(This(list): This<Arc<Vec<Cel>>>) -> Result<Cel, ExecutionError> {
    let overflow = || ExecutionError::function_error("sum", "integer overflow");
    let mut total = match list.first() {
        None | Some(Cel::Int(_)) => Cel::Int(0),
        Some(Cel::UInt(_)) => Cel::UInt(0),
        Some(Cel::Float(_)) => Cel::Float(0.0),
        Some(_) => return Err(not_comparable("sum")),
    };
    for item in list.iter() {
        total = match (total, item) {
            (Cel::Int(a), Cel::Int(b)) => Cel::Int(a.checked_add(*b).ok_or_else(overflow)?),
            (Cel::UInt(a), Cel::UInt(b)) => Cel::UInt(a.checked_add(*b).ok_or_else(overflow)?),
            (Cel::Float(a), Cel::Float(b)) => Cel::Float(a + b),
            _ => return Err(not_comparable("sum")),
        };
    }
    Ok(total)
}

fn extreme(list: &[Cel], function: &str, wanted: Ordering) -> Result<Cel, ExecutionError> {
    let mut best = list.first().ok_or_else(|| {
        ExecutionError::function_error(function, format!("{function} called on empty list"))
    })?;
    for item in &list[1..] {
        match compare(item, best) {
            Some(o) if o == wanted => best = item,
            Some(_) => {}
            None => return Err(not_comparable(function)),
        }
    }
    Ok(best.clone())
}

// ---------------------------------------------------------------------------
// Compiling, and checking a definition's rules
// ---------------------------------------------------------------------------

fn str_of<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// How Go prints an `apiextensions.ValidationRule` as a bad value (`%#v`).
fn go_rule(entry: &Value) -> String {
    let ptr = |key: &str, ty: &str| {
        if entry.get(key).is_some_and(|v| !v.is_null()) {
            format!("(*{ty})(0xc000000000)")
        } else {
            format!("(*{ty})(nil)")
        }
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{}, FieldPath:{}, OptionalOldSelf:{}}}",
        go_quote(str_of(entry, "rule")),
        go_quote(str_of(entry, "message")),
        go_quote(str_of(entry, "messageExpression")),
        ptr("reason", "apiextensions.FieldValueErrorReason"),
        go_quote(str_of(entry, "fieldPath")),
        ptr("optionalOldSelf", "bool"),
    )
}

/// Identifiers a rule may name besides `self`, `oldSelf` and the variables
/// of its comprehensions: type names and function namespaces.
const BUILTIN_IDENTS: [&str; 14] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "optional",
    "strings",
    "google",
];

/// Compiles CEL `src`: the program and whether it names `oldSelf`, or
/// cel-go's "compilation failed: ERROR: <input>:line:col: ..." detail.
fn compile(src: &str) -> Result<(Program, bool), String> {
    compile_with(src, &["self", "oldSelf"])
}

/// Compiles CEL `src` with `variables` declared.
fn compile_with(src: &str, variables: &[&str]) -> Result<(Program, bool), String> {
    let program = env()
        .compile(src)
        .map_err(|e| format!("compilation failed: {e}"))?;
    let mut bound: Vec<&str> = variables.to_vec();
    bound.extend(BUILTIN_IDENTS);
    let mut undeclared = None;
    let mut uses_old_self = false;
    visit_idents(
        program.expression(),
        &mut bound,
        &mut |name, id, declared| {
            uses_old_self |= name == "oldSelf";
            if !declared {
                undeclared.get_or_insert((name.to_string(), id));
            }
        },
    );
    if let Some((name, id)) = undeclared {
        let (line, col) = position(src, program.source_info().offset_for(id).map(|o| o.0));
        return Err(format!(
            "compilation failed: ERROR: <input>:{line}:{col}: undeclared reference to '{name}' (in container '')"
        ));
    }
    Ok((program, uses_old_self))
}

/// A CEL expression of an admission policy (ValidatingAdmissionPolicy's
/// validations, match conditions and variables): compiled once with its
/// variables declared, evaluated with JSON values bound to them.
pub struct Expression {
    source: String,
    program: Program,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expression {
    /// Compile `source` with `variables` declared (others are refused as
    /// cel-go's "undeclared reference").
    pub fn compile(source: &str, variables: &[&str]) -> Result<Expression, String> {
        let (program, _) = compile_with(source, variables)?;
        Ok(Expression {
            source: source.to_string(),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate with `vars` bound (JSON values, every field visible). The
    /// expression's estimated cost, with sizes capped by the values bound,
    /// is charged first: over [`CALL_COST_LIMIT`] it is not run.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<Cel, String> {
        let actual: u64 = vars.iter().map(|(_, v)| value_count(v)).sum();
        let cost = estimate_bounded(self.program.expression(), &Value::Null, &|_| actual, actual);
        if cost > CALL_COST_LIMIT {
            return Err("operation cancelled: actual cost limit exceeded".into());
        }
        let ctx = root_context();
        let mut scope = ctx.new_inner_scope();
        for (name, v) in vars {
            scope.add_variable_from_value(*name, to_cel(v, None, false));
        }
        self.program.execute(&scope).map_err(|e| go_error(&e))
    }

    /// Evaluate to a bool (anything else is an error, as cel-go's type check).
    pub fn eval_bool(&self, vars: &[(&str, &Value)]) -> Result<bool, String> {
        match self.eval(vars)? {
            Cel::Bool(b) => Ok(b),
            _ => Err("cel expression must evaluate to a bool".into()),
        }
    }

    /// Evaluate to a string (messageExpression).
    pub fn eval_string(&self, vars: &[(&str, &Value)]) -> Result<String, String> {
        match self.eval(vars)? {
            Cel::String(s) => Ok(s.to_string()),
            _ => Err("messageExpression must evaluate to a string".into()),
        }
    }

    /// Evaluate to JSON (a policy's variables, bound for later expressions).
    pub fn eval_json(&self, vars: &[(&str, &Value)]) -> Result<Value, String> {
        from_cel(&self.eval(vars)?).ok_or_else(|| "variable cannot be represented as JSON".into())
    }
}

/// A CEL value as JSON (None for what JSON cannot hold: types, functions).
fn from_cel(c: &Cel) -> Option<Value> {
    Some(match c {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number)?,
        Cel::String(s) => Value::String(s.to_string()),
        Cel::List(items) => Value::Array(items.iter().map(from_cel).collect::<Option<_>>()?),
        Cel::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m.map.iter() {
                let key = match k {
                    ::cel::objects::Key::String(s) => s.to_string(),
                    ::cel::objects::Key::Int(i) => i.to_string(),
                    ::cel::objects::Key::Uint(u) => u.to_string(),
                    ::cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, from_cel(v)?);
            }
            Value::Object(out)
        }
        _ => return None,
    })
}

/// 1-based line and column of a character offset in `src`.
fn position(src: &str, offset: Option<u32>) -> (usize, usize) {
    let offset = offset.unwrap_or(0) as usize;
    let mut line = 1;
    let mut col = 1;
    for c in src.chars().take(offset) {
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

/// Calls `f` for every identifier, with whether `bound` (or a
/// comprehension around it) declares it.
fn visit_idents<'a>(e: &'a IdedExpr, bound: &mut Vec<&'a str>, f: &mut dyn FnMut(&str, u64, bool)) {
    match &e.expr {
        Expr::Ident(name) => f(name, e.id, bound.contains(&name.as_str())),
        Expr::Select(s) => visit_idents(&s.operand, bound, f),
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                visit_idents(t, bound, f);
            }
            for a in &c.args {
                visit_idents(a, bound, f);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| visit_idents(x, bound, f)),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    visit_idents(&me.key, bound, f);
                    visit_idents(&me.value, bound, f);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(sf) = &entry.expr {
                    visit_idents(&sf.value, bound, f);
                }
            }
        }
        Expr::Comprehension(c) => {
            visit_idents(&c.iter_range, bound, f);
            visit_idents(&c.accu_init, bound, f);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2);
            }
            bound.push(&c.accu_var);
            visit_idents(&c.loop_cond, bound, f);
            visit_idents(&c.loop_step, bound, f);
            visit_idents(&c.result, bound, f);
            bound.truncate(depth);
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Compiles one `x-kubernetes-validations` entry of `schema`; what is wrong
/// with it goes to `errs` with `path` (".../x-kubernetes-validations[i]").
/// `None` for an empty rule, which upstream skips.
fn compile_entry(
    entry: &Value,
    schema: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Rule> {
    let src = str_of(entry, "rule");
    let message = str_of(entry, "message");
    if src.trim().is_empty() {
        errs.push(FieldError::required(
            format!("{path}.rule"),
            "rule is not specified",
        ));
        return None;
    }
    let has_newline = |s: &str| s.contains(['\n', '\r']);
    if has_newline(message) {
        errs.push(FieldError::invalid(
            format!("{path}.message"),
            &Value::String(message.into()),
            "message must not contain line breaks",
        ));
    } else if message.is_empty() && has_newline(src) && entry.get("messageExpression").is_none() {
        errs.push(FieldError::required(
            format!("{path}.message"),
            "message must be specified if rule contains line breaks",
        ));
    }
    let program = compile(src);
    if let Err(detail) = &program {
        errs.push(FieldError::invalid_repr(
            format!("{path}.rule"),
            &go_rule(entry),
            detail,
        ));
    }
    let message_expression = match entry.get("messageExpression").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => match compile(m) {
            Ok((p, _)) => Some(p),
            Err(detail) => {
                let detail = detail.replacen(
                    "compilation failed",
                    "messageExpression compilation failed",
                    1,
                );
                errs.push(FieldError::invalid_repr(
                    format!("{path}.messageExpression"),
                    &go_rule(entry),
                    &detail,
                ));
                None
            }
        },
        _ => None,
    };
    let reason = entry
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(r) = &reason
        && !REASONS.contains(&r.as_str())
    {
        errs.push(FieldError::not_supported(
            format!("{path}.reason"),
            &Value::String(r.clone()),
            &REASONS,
        ));
    }
    let field_path = match str_of(entry, "fieldPath") {
        "" => None,
        fp => match normalize_field_path(fp, schema) {
            Some(p) => Some(p),
            None => {
                errs.push(FieldError::invalid(
                    format!("{path}.fieldPath"),
                    &Value::String(fp.into()),
                    "fieldPath must be a valid path",
                ));
                None
            }
        },
    };
    let (program, uses_old_self) = match program {
        Ok((p, old)) => (Ok(p), old),
        Err(e) => (Err(e), false),
    };
    Some(Rule {
        rule: src.to_string(),
        message: message.to_string(),
        message_expression,
        reason,
        field_path,
        optional_old_self: entry.get("optionalOldSelf").and_then(Value::as_bool) == Some(true),
        program,
        uses_old_self,
    })
}

/// A rule's `fieldPath` (".spec.foo", ".map['a.b']") as a field path
/// relative to its node ("spec.foo", "map[a.b]"), if it names a field of
/// the schema.
fn normalize_field_path(fp: &str, schema: &Value) -> Option<String> {
    let mut out = String::new();
    let mut node = schema;
    let mut rest = fp;
    while !rest.is_empty() {
        let name: String;
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            name = r[..end].replace("\\'", "'");
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            name = r[..end].to_string();
            rest = &r[end..];
        } else {
            return None;
        }
        if name.is_empty() {
            return None;
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            node = props.get(&name)?;
            out = join(&out, &name);
        } else if let Some(a) = node.get("additionalProperties").filter(|a| a.is_object()) {
            node = a;
            out.push_str(&format!("[{name}]"));
        } else {
            return None;
        }
    }
    Some(out)
}

fn join(path: &str, child: &str) -> String {
    if path.is_empty() || child.starts_with('[') {
        format!("{path}{child}")
    } else {
        format!("{path}.{child}")
    }
}

/// The rules of every version of a CustomResourceDefinition, checked as
/// kube-apiserver checks them on create and update: each compiles, its
/// message, messageExpression, reason and fieldPath are valid, `oldSelf`
/// is only used where an old value can be found, and the estimated cost
/// is within budget.
pub fn check_definition(def: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let versions = def.pointer("/spec/versions").and_then(Value::as_array);
    for (i, v) in versions.into_iter().flatten().enumerate() {
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
            errs.extend(check_schema(schema, &path));
        }
    }
    errs
}

/// [`check_definition`] for one `openAPIV3Schema` at `path`.
pub fn check_schema(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut check = Check {
        errs: Vec::new(),
        costs: Vec::new(),
    };
    check.node(schema, path, 1, None);
    let total = check
        .costs
        .iter()
        .fold(0u64, |t, (c, _)| t.saturating_add(*c));
    if total > SCHEMA_COST_LIMIT {
        let mut costs = std::mem::take(&mut check.costs);
        costs.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (_, p) in costs
            .into_iter()
            .filter(|(c, _)| *c >= SCHEMA_COST_LIMIT / 100)
            .take(4)
        {
            check.errs.push(FieldError::forbidden(
                p,
                "contributed to estimated rule & messageExpression cost total exceeding cost limit for entire OpenAPIv3 schema",
            ));
        }
        check.errs.push(FieldError::forbidden(
            path,
            &cost_message(
                "x-kubernetes-validations estimated rule & messageExpression cost total for entire OpenAPIv3 schema",
                total,
                SCHEMA_COST_LIMIT,
            ),
        ));
    }
    check.errs
}

/// Upstream's `getCostErrorMessage`.
fn cost_message(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

struct Check {
    errs: Vec<FieldError>,
    /// Each expression's estimated cost times its cardinality, and its path.
    costs: Vec<(u64, String)>,
}

impl Check {
    /// `cardinality`: how many times a rule here may run per object;
    /// `uncorrelatable`: the list or atomic map above, if any, below which
    /// no old value is found.
    fn node(&mut self, schema: &Value, path: &str, cardinality: u64, uncorrelatable: Option<&str>) {
        let entries = schema.get(VALIDATIONS).and_then(Value::as_array);
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let epath = format!("{path}.{VALIDATIONS}[{i}]");
            let Some(rule) = compile_entry(entry, schema, &epath, &mut self.errs) else {
                continue;
            };
            if rule.uses_old_self
                && let Some(list) = uncorrelatable
            {
                self.errs.push(FieldError::invalid(
                    format!("{epath}.rule"),
                    &Value::String(rule.rule.clone()),
                    &format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {list}"),
                ));
            }
            let sizes = static_size;
            for (program, field, what) in [
                (rule.program.as_ref().ok(), "rule", "estimated rule cost"),
                (
                    rule.message_expression.as_ref(),
                    "messageExpression",
                    "estimated messageExpression cost",
                ),
            ] {
                let Some(program) = program else { continue };
                let cost =
                    estimate(program.expression(), schema, &sizes).saturating_mul(cardinality);
                let fpath = format!("{epath}.{field}");
                if cost > RULE_COST_LIMIT {
                    self.errs.push(FieldError::forbidden(
                        fpath.clone(),
                        &cost_message(what, cost, RULE_COST_LIMIT),
                    ));
                }
                self.costs.push((cost, fpath));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                self.node(
                    child,
                    &format!("{path}.properties[{k}]"),
                    cardinality,
                    uncorrelatable,
                );
            }
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            let keyed = schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            let below = if keyed {
                uncorrelatable
            } else {
                uncorrelatable.or(Some(path))
            };
            let n = static_size(schema);
            self.node(
                items,
                &format!("{path}.items"),
                cardinality.saturating_mul(n),
                below,
            );
        }
        if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            let below = if atomic(schema) {
                uncorrelatable.or(Some(path))
            } else {
                uncorrelatable
            };
            let n = static_size(schema);
            self.node(
                a,
                &format!("{path}.additionalProperties"),
                cardinality.saturating_mul(n),
                below,
            );
        }
    }
}

fn atomic(schema: &Value) -> bool {
    schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
}

// ---------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------

/// The fewest bytes a value of `schema` takes in JSON.
fn min_serialized(schema: &Value) -> u64 {
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => 2 + schema.get("minLength").and_then(Value::as_u64).unwrap_or(0),
        Some("boolean") => 4,
        Some("object") | Some("array") => 2,
        _ => 1,
    }
}

/// The most elements (items, properties) a list or map of `schema` holds,
/// from its bound or, unbounded, from the request size.
pub fn static_size(schema: &Value) -> u64 {
    let limit = MAX_REQUEST_BYTES - 2;
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        return schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(limit / (min_serialized(items) + 1));
    }
    if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        return schema
            .get("maxProperties")
            .and_then(Value::as_u64)
            .unwrap_or(limit / (min_serialized(a) + 4));
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        return p.len() as u64;
    }
    schema
        .get("maxItems")
        .or_else(|| schema.get("maxProperties"))
        .and_then(Value::as_u64)
        .unwrap_or(limit / 2)
}

/// Estimates what evaluating `expr` costs, `self` being a value of
/// `schema` and `size` giving the number of elements of a list or map
/// schema (see the module documentation).
pub fn estimate(expr: &IdedExpr, schema: &Value, size: &dyn Fn(&Value) -> u64) -> u64 {
    estimate_bounded(expr, schema, size, (MAX_REQUEST_BYTES - 2) / 2)
}

/// As [`estimate`], with `unknown` the size of a collection whose schema
/// is not known (the values bound, for an admission policy's expression).
fn estimate_bounded(
    expr: &IdedExpr,
    schema: &Value,
    size: &dyn Fn(&Value) -> u64,
    unknown: u64,
) -> u64 {
    let mut e = Estimator {
        root: schema,
        size,
        unknown,
        vars: Vec::new(),
    };
    e.cost(expr)
}

struct Estimator<'a> {
    root: &'a Value,
    size: &'a dyn Fn(&Value) -> u64,
    /// The size of a collection of unknown schema.
    unknown: u64,
    /// Comprehension variables and the schema of their values, if known.
    vars: Vec<(&'a str, Option<&'a Value>)>,
}

impl<'a> Estimator<'a> {
    /// The schema of `e`'s value, when it is `self` or a path below it.
    fn shape(&self, e: &'a IdedExpr) -> Option<&'a Value> {
        match &e.expr {
            Expr::Ident(name) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, s)) => *s,
                None if name == "self" || name == "oldSelf" => Some(self.root),
                None => None,
            },
            Expr::Select(s) if !s.test => {
                let parent = self.shape(&s.operand)?;
                if let Some(props) = parent.get("properties").and_then(Value::as_object) {
                    props
                        .iter()
                        .find(|(k, _)| escape(k).as_deref() == Some(s.field.as_str()))
                        .map(|(_, v)| v)
                } else {
                    parent.get("additionalProperties").filter(|a| a.is_object())
                }
            }
            Expr::Call(c) if c.func_name == "_[_]" && c.args.len() == 2 => {
                let parent = self.shape(&c.args[0])?;
                parent
                    .get("items")
                    .or_else(|| parent.get("additionalProperties"))
                    .filter(|a| a.is_object())
            }
            Expr::Call(c) if c.func_name == "value" && c.args.is_empty() => {
                self.shape(c.target.as_deref()?)
            }
            _ => None,
        }
    }

    /// How many elements `e`'s value has at most, for an iteration.
    fn elements(&self, e: &'a IdedExpr) -> u64 {
        match &e.expr {
            Expr::List(l) => l.elements.len() as u64,
            Expr::Map(m) => m.entries.len() as u64,
            Expr::Comprehension(c) => self.elements(&c.iter_range),
            _ => match self.shape(e) {
                Some(s) => (self.size)(s),
                None => self.unknown,
            },
        }
    }

    fn is_collection(&self, e: &'a IdedExpr) -> bool {
        matches!(
            e.expr,
            Expr::List(_) | Expr::Map(_) | Expr::Comprehension(_)
        ) || self.shape(e).is_some_and(|s| {
            matches!(
                s.get("type").and_then(Value::as_str),
                Some("array" | "object")
            )
        })
    }

    fn cost(&mut self, e: &'a IdedExpr) -> u64 {
        match &e.expr {
            // Comprehensions' accumulators are bookkeeping, constants free.
            Expr::Ident(name) if name.starts_with('@') => 0,
            Expr::Ident(_) => 1,
            Expr::Literal(_) | Expr::Unspecified => 0,
            Expr::Call(c) if c.func_name == "@not_strictly_false" => c
                .args
                .iter()
                .fold(0u64, |t, a| t.saturating_add(self.cost(a))),
            Expr::Select(s) => 1 + self.cost(&s.operand),
            Expr::List(l) => l
                .elements
                .iter()
                .fold(1u64, |t, x| t.saturating_add(self.cost(x))),
            Expr::Map(m) => m.entries.iter().fold(1u64, |t, entry| match &entry.expr {
                EntryExpr::MapEntry(me) => t
                    .saturating_add(self.cost(&me.key))
                    .saturating_add(self.cost(&me.value)),
                EntryExpr::StructField(sf) => t.saturating_add(self.cost(&sf.value)),
            }),
            Expr::Struct(s) => s.entries.iter().fold(1u64, |t, entry| match &entry.expr {
                EntryExpr::StructField(sf) => t.saturating_add(self.cost(&sf.value)),
                EntryExpr::MapEntry(me) => t.saturating_add(self.cost(&me.value)),
            }),
            Expr::Call(c) => {
                let mut total = 1u64;
                if let Some(t) = &c.target {
                    total = total.saturating_add(self.cost(t));
                }
                for a in &c.args {
                    total = total.saturating_add(self.cost(a));
                }
                let linear = match c.func_name.as_str() {
                    "@in" if c.args.len() == 2 => self.elements(&c.args[1]),
                    "_==_" | "_!=_" | "_+_" if c.args.len() == 2 => {
                        let lists = c.args.iter().filter(|a| self.is_collection(a));
                        lists.map(|a| self.elements(a)).max().unwrap_or(0)
                    }
                    "isSorted" | "sum" | "min" | "max" | "join" | "size" => c
                        .target
                        .as_deref()
                        .or(c.args.first())
                        .filter(|t| self.is_collection(t))
                        .map_or(0, |t| self.elements(t)),
                    "matches" => REGEX_COST,
                    _ => 0,
                };
                total.saturating_add(linear)
            }
            Expr::Comprehension(c) => {
                let n = self.elements(&c.iter_range);
                // A list's variable is an item; a map's is a key (a string).
                let elem = self
                    .shape(&c.iter_range)
                    .and_then(|s| s.get("items").filter(|i| i.is_object()));
                let mut total = 1u64
                    .saturating_add(self.cost(&c.iter_range))
                    .saturating_add(self.cost(&c.accu_init));
                let depth = self.vars.len();
                self.vars.push((&c.iter_var, elem));
                if let Some(v2) = &c.iter_var2 {
                    self.vars.push((v2, None));
                }
                self.vars.push((&c.accu_var, None));
                let body = self
                    .cost(&c.loop_cond)
                    .saturating_add(self.cost(&c.loop_step));
                total = total
                    .saturating_add(n.saturating_mul(body))
                    .saturating_add(self.cost(&c.result));
                self.vars.truncate(depth);
                total
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// How a property name is spelled in CEL (upstream's `Escape`): reserved
/// words as `__name__`, and `__`, `.`, `-`, `/` escaped; `None` when the
/// name cannot be a CEL identifier, so rules cannot reach it.
pub fn escape(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    let first = *chars.peek()?;
    if first.is_ascii_digit() {
        return None;
    }
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// A JSON value as CEL sees it under `schema`: numbers of `type: number`
/// are doubles, object properties are escaped, and at a resource's root
/// only apiVersion, kind and metadata's name and generateName are seen.
fn to_cel(v: &Value, schema: Option<&Value>, resource: bool) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            let double =
                schema.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("number");
            match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if !double => Cel::Int(i),
                (None, Some(u)) if !double => Cel::UInt(u),
                _ => Cel::Float(n.as_f64().unwrap_or_default()),
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            Cel::List(Arc::new(
                items
                    .iter()
                    .map(|i| to_cel(i, item_schema, embedded(item_schema)))
                    .collect(),
            ))
        }
        Value::Object(map) => to_cel_map(map, schema, resource),
    }
}

fn embedded(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-embedded-resource"))
        .and_then(Value::as_bool)
        == Some(true)
}

fn to_cel_map(map: &Map<String, Value>, schema: Option<&Value>, resource: bool) -> Cel {
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let additional = schema
        .and_then(|s| s.get("additionalProperties"))
        .filter(|a| a.is_object());
    let mut out: HashMap<String, Cel> = HashMap::with_capacity(map.len());
    for (k, child) in map {
        if resource && k == "metadata" {
            let mut meta = HashMap::new();
            for f in ["name", "generateName"] {
                if let Some(Value::String(s)) = child.get(f) {
                    meta.insert(f.to_string(), Cel::String(Arc::new(s.clone())));
                }
            }
            out.insert(k.clone(), Cel::Map(meta.into()));
            continue;
        }
        let (key, child_schema) = match (props.and_then(|p| p.get(k)), additional) {
            (Some(cs), _) => (escape(k), Some(cs)),
            (None, Some(a)) if props.is_none() => (Some(k.clone()), Some(a)),
            // Preserved unknown fields are properties too.
            (None, _) => (escape(k), None),
        };
        if let Some(key) = key {
            out.insert(key, to_cel(child, child_schema, embedded(child_schema)));
        }
    }
    Cel::Map(out.into())
}

/// The number of JSON values in `v`: what bounds any list or map in it.
fn value_count(v: &Value) -> u64 {
    match v {
        Value::Array(items) => 1 + items.iter().map(value_count).sum::<u64>(),
        Value::Object(map) => 1 + map.values().map(value_count).sum::<u64>(),
        _ => 1,
    }
}

// ---------------------------------------------------------------------------
// Evaluating
// ---------------------------------------------------------------------------

struct Run {
    ctx: Context<'static, 'static>,
    /// What is left of the object's budget.
    remaining: u64,
    /// The budget ran out: no further rules.
    stopped: bool,
    errs: Vec<FieldError>,
}

/// A field path for an error: upstream's root path prints as `<nil>`.
fn shown(path: &str) -> String {
    if path.is_empty() {
        "<nil>".to_string()
    } else {
        path.to_string()
    }
}

/// cel-go's wording of an evaluation error.
fn go_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".into(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".into(),
        ExecutionError::Overflow(..) => "integer overflow".into(),
        ExecutionError::IndexOutOfBounds(i) => format!("index out of bounds: {}", cel_text(i)),
        ExecutionError::NoSuchOverload(_) | ExecutionError::UnsupportedBinaryOperator(..) => {
            "no such overload".into()
        }
        ExecutionError::UndeclaredReference(n) => format!("no such attribute: {n}"),
        ExecutionError::FunctionError { message, .. } => message.clone(),
        other => {
            let s = other.to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

fn cel_text(v: &Cel) -> String {
    match v {
        Cel::Int(i) => i.to_string(),
        Cel::UInt(u) => u.to_string(),
        Cel::Float(f) => f.to_string(),
        Cel::String(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

impl Run {
    fn node(
        &mut self,
        rules: &Rules,
        schema: &Value,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        resource: bool,
    ) {
        // Only non-null values are validated, as upstream.
        if self.stopped || v.is_null() {
            return;
        }
        let old = old.filter(|o| !o.is_null());
        if !rules.rules.is_empty() {
            self.rules(rules, schema, v, old, path, resource);
        }
        match v {
            Value::Object(map) => {
                let correlated = !atomic(schema);
                let props = schema.get("properties");
                for (k, child) in map {
                    let sub = rules
                        .properties
                        .get(k)
                        .map(|r| (r, props.and_then(|p| p.get(k))))
                        .or_else(|| {
                            let a = schema.get("additionalProperties");
                            rules.additional.as_deref().map(|r| (r, a))
                        });
                    let Some((sub, Some(child_schema))) = sub else {
                        continue;
                    };
                    let old_child = old.filter(|_| correlated).and_then(|o| o.get(k));
                    let child_path = join(path, k);
                    let child_path = if rules.properties.contains_key(k) {
                        child_path
                    } else {
                        format!("{path}[{k}]")
                    };
                    self.node(
                        sub,
                        child_schema,
                        child,
                        old_child,
                        &child_path,
                        embedded(Some(child_schema)),
                    );
                }
            }
            Value::Array(items) => {
                let (Some(sub), Some(item_schema)) = (rules.items.as_deref(), schema.get("items"))
                else {
                    return;
                };
                let keys: Vec<&str> =
                    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                        Some("map") => schema
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect(),
                        _ => Vec::new(),
                    };
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let old_item = old_items.filter(|_| !keys.is_empty()).and_then(|olds| {
                        olds.iter()
                            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
                    });
                    self.node(
                        sub,
                        item_schema,
                        item,
                        old_item,
                        &format!("{path}[{i}]"),
                        embedded(Some(item_schema)),
                    );
                }
            }
            _ => {}
        }
    }

    fn rules(
        &mut self,
        rules: &Rules,
        schema: &Value,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        resource: bool,
    ) {
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let repr = go_quote(ty);
        let this = to_cel(v, Some(schema), resource);
        let old_cel = old.map(|o| to_cel(o, Some(schema), resource));
        let actual = value_count(v) + old.map_or(0, value_count);
        let sizes = |s: &Value| static_size(s).min(actual);
        for rule in &rules.rules {
            let program = match &rule.program {
                Ok(p) => p,
                Err(e) => {
                    self.errs.push(FieldError::invalid_repr(
                        shown(path),
                        &repr,
                        &format!("rule compile error: {e}"),
                    ));
                    continue;
                }
            };
            if rule.uses_old_self && old.is_none() && !rule.optional_old_self {
                continue;
            }
            let cost = estimate(program.expression(), schema, &sizes);
            if cost > CALL_COST_LIMIT {
                self.errs.push(FieldError::invalid_repr(
                    shown(path),
                    &repr,
                    &format!(
                        "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {}",
                        rule.error_string()
                    ),
                ));
                self.stopped = true;
                return;
            }
            if cost > self.remaining {
                self.errs.push(FieldError::invalid_repr(
                    shown(path),
                    &repr,
                    "validation failed due to running out of cost budget, no further validation rules will be run",
                ));
                self.stopped = true;
                return;
            }
            self.remaining -= cost;
            let mut scope = self.ctx.new_inner_scope();
            scope.add_variable_from_value("self", this.clone());
            if rule.optional_old_self {
                let opt = match old_cel.clone().map(<Box<dyn Val>>::try_from) {
                    Some(Ok(o)) => CelOptional::of(o),
                    _ => CelOptional::none(),
                };
                scope.add_variable_as_val("oldSelf", Box::new(opt));
            } else if let Some(o) = &old_cel {
                scope.add_variable_from_value("oldSelf", o.clone());
            }
            let detail = match program.execute(&scope) {
                Ok(Cel::Bool(true)) => continue,
                Ok(Cel::Bool(false)) => None,
                Ok(_) => Some(format!(
                    "cel expression must evaluate to a bool evaluating rule: {}",
                    rule.error_string()
                )),
                Err(e) => {
                    let err = go_error(&e);
                    Some(if err == "no such overload" {
                        format!(
                            "'{err}': call arguments did not match a supported operator, function or macro signature for rule: {}",
                            rule.error_string()
                        )
                    } else {
                        format!("{err} evaluating rule: {}", rule.error_string())
                    })
                }
            };
            if let Some(detail) = detail {
                self.errs
                    .push(FieldError::invalid_repr(shown(path), &repr, &detail));
                continue;
            }
            let at = match &rule.field_path {
                Some(fp) => shown(&join(path, fp)),
                None => shown(path),
            };
            let message = rule
                .message_expression
                .as_ref()
                .and_then(|m| {
                    self.remaining =
                        self.remaining
                            .saturating_sub(estimate(m.expression(), schema, &sizes));
                    match m.execute(&scope) {
                        Ok(Cel::String(s)) => Some(s.trim().to_string()),
                        _ => None,
                    }
                })
                .filter(|m| !m.is_empty() && m.len() <= MAX_MESSAGE_BYTES && !m.contains('\n'))
                .unwrap_or_else(|| {
                    if rule.message.is_empty() {
                        format!("failed rule: {}", rule.rule.trim())
                    } else {
                        rule.message.trim().to_string()
                    }
                });
            self.errs.push(match rule.reason.as_deref() {
                Some("FieldValueForbidden") => FieldError::forbidden(at, &message),
                Some("FieldValueRequired") => FieldError::required(at, &message),
                Some("FieldValueDuplicate") => FieldError::duplicate_repr(at, &repr),
                _ => FieldError::invalid_repr(at, &repr, &message),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_expressions_bind_json_variables() {
        let vars = ["object", "oldObject", "params"];
        let e = Expression::compile("object.spec.replicas <= params.max", &vars).unwrap();
        let object = serde_json::json!({"spec": {"replicas": 3}});
        let params = serde_json::json!({"max": 5});
        assert!(
            e.eval_bool(&[("object", &object), ("params", &params)])
                .unwrap()
        );
        let small = serde_json::json!({"max": 2});
        assert!(
            !e.eval_bool(&[("object", &object), ("params", &small)])
                .unwrap()
        );
        let err = Expression::compile("request.name == 'x'", &vars).unwrap_err();
        assert!(err.contains("undeclared reference to 'request'"), "{err}");
        let m = Expression::compile("'replicas: ' + string(object.spec.replicas)", &vars).unwrap();
        assert_eq!(
            m.eval_string(&[("object", &object)]).unwrap(),
            "replicas: 3"
        );
        let v = Expression::compile("object.spec", &vars).unwrap();
        assert_eq!(
            v.eval_json(&[("object", &object)]).unwrap(),
            serde_json::json!({"replicas": 3})
        );
        assert!(
            Expression::compile("object.spec", &vars)
                .unwrap()
                .eval_bool(&[("object", &object)])
                .is_err()
        );
    }
    use serde_json::json;

    /// The messages of `obj` (and `old`) validated by the rules of `schema`.
    fn run(schema: &Value, obj: Value, old: Option<Value>) -> Vec<String> {
        assert!(
            check_schema(schema, "s").is_empty(),
            "{:?}",
            check_schema(schema, "s")
        );
        let rules = Rules::compile(schema).expect("the schema has rules");
        rules
            .validate(schema, &obj, old.as_ref())
            .iter()
            .map(|e| format!("{}: {} ({})", e.field, e.message, e.reason()))
            .collect()
    }

    fn spec(props: Value, rules: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object", "properties": props, "x-kubernetes-validations": rules}}})
    }

    fn replicas(rules: Value) -> Value {
        spec(
            json!({"min": {"type": "integer"}, "max": {"type": "integer"}}),
            rules,
        )
    }

    #[test]
    fn a_false_rule_fails_with_the_default_message() {
        let s = replicas(json!([{"rule": "self.min <= self.max"}]));
        assert!(run(&s, json!({"spec": {"min": 1, "max": 2}}), None).is_empty());
        assert_eq!(
            run(&s, json!({"spec": {"min": 3, "max": 2}}), None),
            [
                r#"spec: Invalid value: "object": failed rule: self.min <= self.max (FieldValueInvalid)"#
            ]
        );
    }

    #[test]
    fn message_and_message_expression() {
        let s = replicas(json!([
            {"rule": "self.min <= self.max", "message": "min must not exceed max"},
            {"rule": "self.max < 10", "message": "unused",
             "messageExpression": "'max is ' + string(self.max) + ', above 9'"},
            {"rule": "self.max < 10", "message": "fallback", "messageExpression": "''"},
        ]));
        assert_eq!(
            run(&s, json!({"spec": {"min": 30, "max": 20}}), None),
            [
                r#"spec: Invalid value: "object": min must not exceed max (FieldValueInvalid)"#,
                r#"spec: Invalid value: "object": max is 20, above 9 (FieldValueInvalid)"#,
                r#"spec: Invalid value: "object": fallback (FieldValueInvalid)"#,
            ]
        );
    }

    #[test]
    fn transition_rules_run_on_updates_with_an_old_value() {
        let s = spec(
            json!({"name": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]}}),
            json!([]),
        );
        let obj = json!({"spec": {"name": "b"}});
        assert!(
            run(&s, obj.clone(), None).is_empty(),
            "no old object: skipped"
        );
        assert!(
            run(&s, obj.clone(), Some(json!({"spec": {}}))).is_empty(),
            "no old value: skipped"
        );
        assert!(run(&s, obj.clone(), Some(json!({"spec": {"name": "b"}}))).is_empty());
        assert_eq!(
            run(&s, obj, Some(json!({"spec": {"name": "a"}}))),
            [r#"spec.name: Invalid value: "string": name is immutable (FieldValueInvalid)"#]
        );
    }

    #[test]
    fn optional_old_self_runs_on_create_too() {
        let s = spec(
            json!({"n": {"type": "integer", "x-kubernetes-validations": [{
                "rule": "oldSelf.hasValue() ? self >= oldSelf.value() : self < 5",
                "message": "bad", "optionalOldSelf": true}]}}),
            json!([]),
        );
        assert_eq!(run(&s, json!({"spec": {"n": 7}}), None).len(), 1);
        assert!(run(&s, json!({"spec": {"n": 3}}), None).is_empty());
        assert!(
            run(
                &s,
                json!({"spec": {"n": 8}}),
                Some(json!({"spec": {"n": 7}}))
            )
            .is_empty()
        );
        assert_eq!(
            run(
                &s,
                json!({"spec": {"n": 6}}),
                Some(json!({"spec": {"n": 7}}))
            )
            .len(),
            1
        );
    }

    #[test]
    fn old_values_follow_list_map_keys() {
        let s = spec(
            json!({"ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "port": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.port >= oldSelf.port", "message": "port may only grow"}]}}}),
            json!([]),
        );
        let old = json!({"spec": {"ports": [{"name": "a", "port": 5}, {"name": "b", "port": 9}]}});
        let obj = json!({"spec": {"ports": [{"name": "b", "port": 8}, {"name": "a", "port": 6}, {"name": "c", "port": 1}]}});
        assert_eq!(
            run(&s, obj, Some(old)),
            [r#"spec.ports[0]: Invalid value: "object": port may only grow (FieldValueInvalid)"#]
        );
    }

    #[test]
    fn reasons_and_field_paths() {
        let s = replicas(json!([
            {"rule": "self.min > 0", "message": "min must be positive", "reason": "FieldValueForbidden", "fieldPath": ".min"},
            {"rule": "has(self.max)", "message": "max is required", "reason": "FieldValueRequired", "fieldPath": ".max"},
            {"rule": "self.min != 0", "reason": "FieldValueDuplicate"},
        ]));
        assert_eq!(
            run(&s, json!({"spec": {"min": 0}}), None),
            [
                "spec.min: Forbidden: min must be positive (FieldValueForbidden)",
                "spec.max: Required value: max is required (FieldValueRequired)",
                r#"spec: Duplicate value: "object" (FieldValueDuplicate)"#,
            ]
        );
    }

    #[test]
    fn root_rules_see_name_and_report_nil() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.metadata.name.startsWith('web-')"},
            {"rule": "!has(self.metadata.labels)"}]});
        let obj = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "db", "labels": {"a": "b"}}});
        assert_eq!(
            run(&s, obj, None),
            [
                r#"<nil>: Invalid value: "object": failed rule: self.metadata.name.startsWith('web-') (FieldValueInvalid)"#
            ]
        );
    }

    #[test]
    fn evaluation_errors_name_the_rule() {
        let s = replicas(json!([{"rule": "self.max > 1", "message": "max above one"}]));
        assert_eq!(
            run(&s, json!({"spec": {"min": 1}}), None),
            [
                r#"spec: Invalid value: "object": no such key: max evaluating rule: max above one (FieldValueInvalid)"#
            ]
        );
    }

    #[test]
    fn functions() {
        let s = spec(
            json!({
                "xs": {"type": "array", "maxItems": 10, "items": {"type": "integer"}},
                "names": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
                "ratio": {"type": "number"},
                "dash-ed": {"type": "string"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}}}),
            json!([{"rule": "true"}]),
        );
        let obj = json!({"spec": {"xs": [1, 2, 5], "names": ["Ab", "cd"], "ratio": 1, "dash-ed": "v",
            "tags": {"team": "core"}}});
        let cases = [
            (
                "self.xs.isSorted() && !self.names.map(n, n.upperAscii()).isSorted() == false",
                true,
            ),
            (
                "self.xs.sum() == 8 && self.xs.min() == 1 && self.xs.max() == 5",
                true,
            ),
            (
                "self.xs.all(x, x > 0) && self.xs.exists(x, x == 5) && self.xs.exists_one(x, x > 4)",
                true,
            ),
            ("self.xs.filter(x, x > 1).map(x, x * 2) == [4, 10]", true),
            (
                "size(self.names) == 2 && self.names[0].lowerAscii() == 'ab'",
                true,
            ),
            (
                "self.names.all(n, n.matches('^[a-zA-Z]+$')) && 'cd' in self.names",
                true,
            ),
            (
                "self.names[1].endsWith('d') && self.names[1].contains('c')",
                true,
            ),
            ("self.ratio == 1.0 && self.dash__dash__ed == 'v'", true),
            ("self.tags.team == 'core' && 'team' in self.tags", true),
            ("self.xs.exists_one(x, x > 1)", false),
        ];
        for (rule, want) in cases {
            let mut s = s.clone();
            s["properties"]["spec"]["x-kubernetes-validations"] = json!([{"rule": rule}]);
            let errs = run(&s, obj.clone(), None);
            assert_eq!(errs.is_empty(), want, "{rule}: {errs:?}");
        }
    }

    #[test]
    fn definitions_with_bad_rules_are_refused() {
        let s = replicas(json!([
            {"rule": "self.min >"},
            {"rule": "self.min > other"},
            {"rule": ""},
            {"rule": "true", "reason": "Nope"},
            {"rule": "true", "fieldPath": ".nope"},
            {"rule": "true", "message": "two\nlines"},
        ]));
        let errs: Vec<String> = check_schema(&s, "spec.versions[0].schema.openAPIV3Schema")
            .iter()
            .map(ToString::to_string)
            .collect();
        let p = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations";
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert!(errs[0].starts_with(&format!(
            r#"{p}[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:"self.min >", Message:"", MessageExpression:"", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:"", OptionalOldSelf:(*bool)(nil)}}: compilation failed: ERROR: <input>:1:"#
        )), "{}", errs[0]);
        assert!(errs[1].ends_with("compilation failed: ERROR: <input>:1:12: undeclared reference to 'other' (in container '')"), "{}", errs[1]);
        assert_eq!(
            errs[2],
            format!("{p}[2].rule: Required value: rule is not specified")
        );
        assert_eq!(
            errs[3],
            format!(
                r#"{p}[3].reason: Unsupported value: "Nope": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired""#
            )
        );
        assert_eq!(
            errs[4],
            format!(r#"{p}[4].fieldPath: Invalid value: ".nope": fieldPath must be a valid path"#)
        );
        assert_eq!(
            errs[5],
            format!(
                r#"{p}[5].message: Invalid value: "two\nlines": message must not contain line breaks"#
            )
        );
    }

    #[test]
    fn old_self_is_refused_where_nothing_correlates() {
        let s = spec(
            json!({"xs": {"type": "array", "items": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}),
            json!([]),
        );
        let errs = check_schema(&s, "o");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            r#"o.properties[spec].properties[xs].items.x-kubernetes-validations[0].rule: Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of the schema within o.properties[spec].properties[xs]"#
        );
    }

    fn nested(max_items: Option<u64>) -> Value {
        let mut inner = json!({"type": "array", "items": {"type": "string"}});
        let mut outer = json!({"type": "array", "items": {"type": "object", "properties": {"names": inner.clone()}}});
        if let Some(m) = max_items {
            inner["maxItems"] = json!(m);
            outer["items"]["properties"]["names"] = inner;
            outer["maxItems"] = json!(m);
        }
        spec(
            json!({"groups": outer}),
            json!([{"rule": "self.groups.all(g, g.names.all(n, n.size() < 10))"}]),
        )
    }

    #[test]
    fn nested_unbounded_iteration_is_refused() {
        let errs = check_schema(&nested(None), "o");
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs[0],
            "o.properties[spec].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
        assert!(msgs.iter().any(|m| m.starts_with("o: Forbidden: x-kubernetes-validations estimated rule & messageExpression cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x")), "{msgs:#?}");
        assert!(check_schema(&nested(Some(100)), "o").is_empty());
        // One unbounded iteration is affordable.
        let single = spec(
            json!({"xs": {"type": "array", "items": {"type": "integer"}}}),
            json!([{"rule": "self.xs.all(x, x > 0)"}]),
        );
        assert!(check_schema(&single, "o").is_empty());
        // A rule under an unbounded list runs once per item: its own unbounded
        // iteration is then nested too.
        let under = spec(
            json!({"groups": {"type": "array", "items": {"type": "object",
                "properties": {"names": {"type": "array", "items": {"type": "string"}}},
                "x-kubernetes-validations": [{"rule": "self.names.all(n, n != '')"}]}}}),
            json!([]),
        );
        assert_eq!(
            check_schema(&under, "o")[0].field,
            "o.properties[spec].properties[groups].items.x-kubernetes-validations[0].rule"
        );
    }

    #[test]
    fn an_expensive_evaluation_is_cut_short() {
        // Compiled without the definition check, which would refuse it.
        let s = nested(None);
        let rules = Rules::compile(&s).unwrap();
        let names: Vec<String> = (0..1200).map(|i| format!("n{i}")).collect();
        let obj = json!({"spec": {"groups": [{"names": names}]}});
        let errs = rules.validate(&s, &obj, None);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.groups.all"), "{}", errs[0].message);
        let small = json!({"spec": {"groups": [{"names": ["a", "b"]}, {"names": ["c"]}]}});
        assert!(rules.validate(&s, &small, None).is_empty());
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("a-b.c/d").as_deref(),
            Some("a__dash__b__dot__c__slash__d")
        );
        assert_eq!(escape("x__y").as_deref(), Some("x__underscores__y"));
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("1a"), None);
        assert_eq!(escape("a b"), None);
    }
}
