#!/usr/bin/env python3
"""Generate crates/api/src/protobuf_schema.rs, the message table behind
skiff_api::protobuf (the Kubernetes protobuf -> JSON decoder).

Inputs (both are crates already in the Cargo registry cache; no network):

* k8s-pb 0.9.0 (prost bindings of the k8s.io generated.proto files): every
  message, its fields, tags, wire types, message types, repeated and map
  labels.
* k8s-openapi 0.29.0 (v1_33 first, newer versions as fallback): the real
  Kubernetes type names (prost renames JSONSchemaProps to JsonSchemaProps),
  the JSON field names (prost snake_cases podIP to pod_ip), which string
  fields are required (kept even when empty), which (apiVersion, kind) pairs
  are top-level kinds, and the API group of each proto package.

Plus two small hand-kept lists below: GO_VALUE_SCALARS (numbers / bools that
are Go value types, whose zero on the wire means "unset") and
JSON_NAME_OVERRIDES (proto-only fields a camelCase guess misspells).

Usage (from the repository root):

    python3 scripts/gen-protobuf-schema.py

Options: --k8s-pb DIR (k8s-pb src dir), --k8s-openapi DIR (k8s-openapi src
dir), --out FILE, --check (fail if the output would change), -v (report
name-resolution details on stderr).
"""

import argparse
import glob
import os
import re
import sys

PB_PREFIX = {
    "api": "io.k8s.api",
    "apimachinery": "io.k8s.apimachinery",
    "apiextensions_apiserver": "io.k8s.apiextensions-apiserver",
    "kube_aggregator": "io.k8s.kube-aggregator",
    "metrics": "io.k8s.metrics",
}

# Proto packages left out of the table.
SKIP_PACKAGES = {"io.k8s.apimachinery.pkg.apis.testapigroup.v1"}

# API groups whose packages have no top-level kind in k8s-openapi.
EXTRA_GROUPS = {
    "meta.k8s.io": "io.k8s.apimachinery.pkg.apis.meta",
    "extensions": "io.k8s.api.extensions",
    "admission.k8s.io": "io.k8s.api.admission",
    "imagepolicy.k8s.io": "io.k8s.api.imagepolicy",
    "apidiscovery.k8s.io": "io.k8s.api.apidiscovery",
    "internal.apiserver.k8s.io": "io.k8s.api.apiserverinternal",
    "metrics.k8s.io": "io.k8s.metrics.pkg.apis.metrics",
    "custom.metrics.k8s.io": "io.k8s.metrics.pkg.apis.custom_metrics",
    "external.metrics.k8s.io": "io.k8s.metrics.pkg.apis.external_metrics",
}

# Messages whose JSON form is not an object (custom MarshalJSON in Go),
# keyed by the normalized short name; the value is the Special variant.
SPECIAL = {
    ("io.k8s.apimachinery.pkg.apis.meta.v1", "time"): "Time",
    ("io.k8s.apimachinery.pkg.apis.meta.v1", "microtime"): "MicroTime",
    ("io.k8s.apimachinery.pkg.apis.meta.v1", "duration"): "Duration",
    ("io.k8s.apimachinery.pkg.apis.meta.v1", "fieldsv1"): "RawJson",
    ("io.k8s.apimachinery.pkg.api.resource", "quantity"): "Quantity",
    ("io.k8s.apimachinery.pkg.api.resource", "quantityvalue"): "Quantity",
    ("io.k8s.apimachinery.pkg.util.intstr", "intorstring"): "IntOrString",
    ("io.k8s.apimachinery.pkg.runtime", "rawextension"): "RawJson",
}
SPECIAL_ANY_PACKAGE = {
    "json": "RawJson",
    "jsonschemapropsorarray": "SchemaOrArray",
    "jsonschemapropsorbool": "SchemaOrBool",
    "jsonschemapropsorstringarray": "SchemaOrStringArray",
}

# Number / bool fields known to be Go value types (not pointers), keyed by
# "Message.jsonName" (any package / version). gogo-protobuf writes a value-typed
# field whether set or not, so their zero on the wire means "unset" and is
# dropped (as Go's JSON encoder does through omitempty). Every other optional
# number / bool keeps its zero: for a pointer field (replicas, runAsUser,
# automountServiceAccountToken, ...) an explicit 0 / false is meaningful.
# Only list a field after checking its Go type in k8s.io/api (a wrongly listed
# pointer field would lose an explicit zero); a missing entry only leaves a
# harmless explicit zero in the JSON.
GO_VALUE_SCALARS = {
    "ObjectMeta.generation",
    "DeploymentSpec.minReadySeconds",
    "DeploymentSpec.paused",
    "DeploymentStatus.observedGeneration",
    "DeploymentStatus.replicas",
    "DeploymentStatus.updatedReplicas",
    "DeploymentStatus.readyReplicas",
    "DeploymentStatus.availableReplicas",
    "DeploymentStatus.unavailableReplicas",
    "ReplicaSetSpec.minReadySeconds",
    "ReplicaSetStatus.fullyLabeledReplicas",
    "ReplicaSetStatus.readyReplicas",
    "ReplicaSetStatus.availableReplicas",
    "ReplicaSetStatus.observedGeneration",
    "StatefulSetSpec.minReadySeconds",
    "StatefulSetStatus.observedGeneration",
    "StatefulSetStatus.readyReplicas",
    "StatefulSetStatus.currentReplicas",
    "StatefulSetStatus.updatedReplicas",
    "DaemonSetSpec.minReadySeconds",
    "DaemonSetStatus.observedGeneration",
    "DaemonSetStatus.updatedNumberScheduled",
    "DaemonSetStatus.numberAvailable",
    "DaemonSetStatus.numberUnavailable",
    "JobStatus.active",
    "JobStatus.succeeded",
    "JobStatus.failed",
    "PodSpec.hostNetwork",
    "PodSpec.hostPID",
    "PodSpec.hostIPC",
    "Container.stdin",
    "Container.stdinOnce",
    "Container.tty",
    "EphemeralContainerCommon.stdin",
    "EphemeralContainerCommon.stdinOnce",
    "EphemeralContainerCommon.tty",
    "ContainerPort.hostPort",
    "VolumeMount.readOnly",
    "PersistentVolumeClaimVolumeSource.readOnly",
    "Probe.initialDelaySeconds",
    "Probe.timeoutSeconds",
    "Probe.periodSeconds",
    "Probe.successThreshold",
    "Probe.failureThreshold",
    "ServiceSpec.publishNotReadyAddresses",
    "ServiceSpec.healthCheckNodePort",
    "ServicePort.nodePort",
    "ServiceBackendPort.number",
    "PodDisruptionBudgetStatus.observedGeneration",
    "PriorityClass.globalDefault",
}

# The scalar types the Kubernetes protos use; the decoder's Ty enum has
# exactly these (extend both if a new one appears).
# JSON names of proto-only messages (no OpenAPI definition anywhere) that a
# camelCase guess gets wrong.
JSON_NAME_OVERRIDES = {
    "insecure_skip_tls_verify_backend": "insecureSkipTLSVerifyBackend",
    "desired_api_version": "desiredAPIVersion",
}

SCALARS = {
    "string": "S",
    "bytes": "Y",
    "bool": "B",
    "int32": "I32",
    "int64": "I64",
    "double": "F64",
}


def norm(name):
    """Lowercase alphanumerics only: pod_ip / podIP / r#type / $ref match."""
    if name.startswith("r#"):
        name = name[2:]
    return re.sub(r"[^0-9a-z]", "", name.lower())


def camel(snake):
    if snake.startswith("r#"):
        snake = snake[2:]
    snake = snake.rstrip("_")
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def registry_dir(pattern):
    found = sorted(glob.glob(os.path.expanduser(pattern)))
    if not found:
        sys.exit(f"gen-protobuf-schema: nothing matches {pattern}")
    return found[-1]


# --------------------------------------------------------------------------
# k8s-openapi: definitions, JSON names, required fields, kinds.


class Def:
    def __init__(self, name):
        self.name = name  # full definition name, e.g. io.k8s.api.core.v1.Pod
        self.props = {}  # norm(json) -> (json name, required)
        self.kinds = []  # (apiVersion, kind)
        self.list_kind = None
        self.group = None


def parse_openapi(src_dir, log):
    defs = {}
    versions = sorted(
        (d for d in os.listdir(src_dir) if re.fullmatch(r"v1_\d+", d)),
        key=lambda d: int(d.split("_")[1]),
    )
    for version in versions:
        for path in sorted(glob.glob(os.path.join(src_dir, version, "**", "*.rs"), recursive=True)):
            with open(path, encoding="utf-8") as fh:
                src = fh.read()
            m = re.match(r"// Generated from definition (\S+)", src)
            if not m:
                continue
            name = m.group(1)
            new = name not in defs
            d = defs.setdefault(name, Def(name))
            sm = re.search(r"^pub struct \w+(?:<[^>]*>)? \{\n(.*?)^\}", src, re.S | re.M)
            rust_required = {}
            if sm:
                for fm in re.finditer(r"^    pub (?:r#)?(\w+): (.*),$", sm.group(1), re.M):
                    rust_required[fm.group(1)] = not fm.group(2).startswith("Option<")
            for fm in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', src):
                json, rust = fm.group(1), fm.group(2)
                if sm and rust not in rust_required:
                    continue  # apiVersion / kind of a resource (TypeMeta)
                key = norm(json)
                if key not in d.props:
                    d.props[key] = (json, rust_required.get(rust, False))
            if new:
                api = re.search(r'const API_VERSION: &\'static str = "([^"]*)";', src)
                kind = re.search(r'const KIND: &\'static str = "([^"]*)";', src)
                group = re.search(r'const GROUP: &\'static str = "([^"]*)";', src)
                lk = re.search(r'const LIST_KIND: &\'static str = "([^"]*)";', src)
                if api and kind:
                    d.kinds.append((api.group(1), kind.group(1)))
                    d.group = group.group(1) if group else None
                if lk:
                    d.list_kind = lk.group(1)
    log(f"k8s-openapi: {len(defs)} definitions from {', '.join(versions)}")
    return defs


# --------------------------------------------------------------------------
# k8s-pb: messages.


class PbField:
    def __init__(self, tag, rust, card, ty, msg_path):
        self.tag = tag
        self.rust = rust
        self.card = card  # "opt" | "rep" | "map"
        self.ty = ty  # scalar code or "msg" (map: value type)
        self.msg_path = msg_path  # resolved full proto name of message type
        self.json = None
        self.required = False
        self.inline = False
        self.omit_zero = False


class PbMessage:
    def __init__(self, package, prost_name):
        self.package = package
        self.prost_name = prost_name
        self.name = prost_name  # real (Kubernetes) short name, resolved later
        self.fields = []
        self.special = "None"
        self.defn = None

    @property
    def pb_full(self):
        return f"{self.package}.{self.prost_name}"

    @property
    def full(self):
        return f"{self.package}.{self.name}"


def module_to_package(mod_path):
    head, rest = mod_path[0], mod_path[1:]
    return ".".join([PB_PREFIX[head]] + rest)


def resolve_type(ty, mod_path):
    """Resolve a prost Rust type path to (package, prost name)."""
    ty = re.sub(r"\s+", "", ty).replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper):-1]
    segs = ty.split("::")
    module = list(mod_path)
    while segs and segs[0] == "super":
        segs.pop(0)
        module.pop()
    module += segs[:-1]
    return module_to_package(module), segs[-1]


def parse_pb(src_dir, log):
    messages = []
    for path in sorted(glob.glob(os.path.join(src_dir, "**", "mod.rs"), recursive=True)):
        rel = os.path.relpath(os.path.dirname(path), src_dir)
        mod_path = rel.split(os.sep)
        if mod_path[0] not in PB_PREFIX:
            continue
        package = module_to_package(mod_path)
        if package in SKIP_PACKAGES:
            continue
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        msg = None
        i = 0
        while i < len(lines):
            line = lines[i]
            sm = re.match(r"^pub struct (\w+) \{(\})?$", line)
            if sm:
                msg = PbMessage(package, sm.group(1))
                messages.append(msg)
                if sm.group(2):
                    msg = None
            elif line == "}":
                msg = None
            elif line.startswith("pub enum ") or (line.startswith("pub mod ") and not line.endswith(";")):
                sys.exit(f"gen-protobuf-schema: unsupported item in {path}: {line}")
            am = re.match(r"^    #\[prost\((.*)\)\]$", line)
            if am and msg is not None:
                attr = am.group(1)
                # The field declaration may span several lines.
                decl = ""
                i += 1
                while True:
                    decl += lines[i].strip()
                    if decl.endswith(",") and decl.count("<") == decl.count(">"):
                        break
                    i += 1
                dm = re.match(r"^pub ((?:r#)?\w+):(.*),$", decl)
                if not dm:
                    sys.exit(f"gen-protobuf-schema: cannot parse field in {path}: {decl}")
                rust, rust_ty = dm.group(1), dm.group(2)
                msg.fields.append(parse_field(attr, rust, rust_ty, mod_path, path))
            i += 1
    log(f"k8s-pb: {len(messages)} messages")
    return messages


def parse_field(attr, rust, rust_ty, mod_path, path):
    tag = re.search(r'tag = "(\d+)"', attr)
    if not tag:
        sys.exit(f"gen-protobuf-schema: no tag in {path}: {attr}")
    tag = int(tag.group(1))
    mm = re.match(r'btree_map = "(\w+), (\w+)"', attr) or re.match(r'hash_map = "(\w+), (\w+)"', attr)
    if mm:
        key, value = mm.group(1), mm.group(2)
        if key != "string":
            sys.exit(f"gen-protobuf-schema: unsupported map key {key} in {path}")
        msg_path = None
        if value == "message":
            inner = re.sub(r"\s+", "", rust_ty).replace(",>", ">")
            vm = re.match(r".*BTreeMap<::prost::alloc::string::String,(.*)>$", inner) or re.match(
                r".*HashMap<::prost::alloc::string::String,(.*)>$", inner
            )
            if not vm:
                sys.exit(f"gen-protobuf-schema: cannot parse map value in {path}: {rust_ty}")
            msg_path = resolve_type(vm.group(1), mod_path)
            vty = "msg"
        elif value in SCALARS:
            vty = SCALARS[value]
        else:
            sys.exit(f"gen-protobuf-schema: unsupported map value {value} in {path}")
        return PbField(tag, rust, "map", vty, msg_path)
    kind = re.match(r"(\w+)", attr).group(1)
    labels = [p.strip() for p in attr.split(",")]
    card = "rep" if "repeated" in labels else "opt"
    if "oneof" in attr or "group" == kind:
        sys.exit(f"gen-protobuf-schema: unsupported field kind in {path}: {attr}")
    if kind == "message":
        return PbField(tag, rust, card, "msg", resolve_type(rust_ty, mod_path))
    if kind not in SCALARS:
        sys.exit(f"gen-protobuf-schema: unsupported scalar {kind} in {path}")
    return PbField(tag, rust, card, SCALARS[kind], None)


# --------------------------------------------------------------------------
# Resolution.


def group_prefix(package):
    """io.k8s.api.apps.v1 -> io.k8s.api.apps (drop the version segment)."""
    parts = package.split(".")
    if re.fullmatch(r"v\d+((alpha|beta)\d+)?", parts[-1]):
        return ".".join(parts[:-1])
    return package


def embeddable(target, props, depth):
    """Whether every field of `target` (recursively through its own embedded
    messages) is a JSON property of the parent: a Go `json:",inline"` struct."""
    if target is None or not target.fields or depth > 4 or target.special != "None":
        return False
    for tf in target.fields:
        if norm(tf.rust) in props:
            continue
        if tf.card == "opt" and tf.ty == "msg" and embeddable(tf.target, props, depth + 1):
            continue
        return False
    return True


def resolve(messages, defs, log, verbose):
    by_pkg_norm = {}
    by_group_norm = {}
    for d in defs.values():
        pkg, short = d.name.rsplit(".", 1)
        by_pkg_norm.setdefault((pkg, norm(short)), d)
        by_group_norm.setdefault((group_prefix(pkg), norm(short)), []).append(d)
    known_groups = {g for (g, _) in by_group_norm}

    def find_def(package, short):
        key = norm(short)
        d = by_pkg_norm.get((package, key))
        if d is not None:
            return d
        # Same API group, another version (e.g. apps/v1beta2 -> apps/v1).
        cands = by_group_norm.get((group_prefix(package), key), [])
        if cands:
            return cands[0]
        # A group k8s-openapi does not know at all (extensions/v1beta1): the
        # same name in the io.k8s.api groups (extensions.Ingress ->
        # networking.v1.Ingress).
        if group_prefix(package) not in known_groups and package.startswith("io.k8s.api."):
            cands = sorted(
                (d for (g, k), ds in by_group_norm.items() if k == key and g.startswith("io.k8s.api.") for d in ds),
                key=lambda d: d.name,
            )
            return cands[0] if cands else None
        return None

    # Real names.
    for m in messages:
        d = find_def(m.package, m.prost_name)
        if d is not None and d.name.rsplit(".", 1)[0] == m.package:
            m.defn = d
            m.name = d.name.rsplit(".", 1)[1]
        elif d is not None:
            m.defn = d
            m.name = d.name.rsplit(".", 1)[1]
        elif m.prost_name.endswith("List"):
            stem = find_def(m.package, m.prost_name[: -len("List")])
            if stem is not None:
                m.name = stem.name.rsplit(".", 1)[1] + "List"
        key = norm(m.prost_name)
        m.special = SPECIAL.get((m.package, key)) or (
            SPECIAL_ANY_PACKAGE.get(key) if m.package.startswith("io.k8s.apiextensions-apiserver") else None
        ) or "None"
        if m.special == "None" and len(m.fields) == 1:
            f = m.fields[0]
            if f.tag == 1 and f.card == "rep" and f.ty == "S" and f.rust == "items":
                m.special = "StringList"

    by_pb_full = {m.pb_full: m for m in messages}
    names = {}
    for m in messages:
        if m.full in names:
            sys.exit(f"gen-protobuf-schema: duplicate message name {m.full}")
        names[m.full] = m

    # Message types of fields.
    for m in messages:
        for f in m.fields:
            f.target = None
            if f.msg_path is not None:
                f.target = by_pb_full.get(".".join(f.msg_path))
                if f.target is None:
                    sys.exit(f"gen-protobuf-schema: {m.full}.{f.rust}: unknown message {'.'.join(f.msg_path)}")

    # Embedded Go structs (`json:",inline"`): a proto field of the struct's
    # type whose fields appear in the parent's JSON object. An embedded
    # message without an OpenAPI definition of its own (VolumeSource,
    # ProbeHandler, ...) takes its JSON names from the object embedding it.
    borrowed = {}

    def props_of(m):
        if m.defn is not None:
            return m.defn.props
        return borrowed.get(m.full)

    for _ in range(5):  # nested embedding settles in a couple of rounds
        for m in messages:
            props = props_of(m)
            if props is None:
                continue
            for f in m.fields:
                if f.inline or norm(f.rust) in props or f.card != "opt":
                    continue
                if embeddable(f.target, props, 0):
                    f.inline = True
                    if verbose:
                        log(f"inline: {m.full}.{f.rust} ({f.target.full})")
                if f.inline and f.target.defn is None:
                    into = borrowed.setdefault(f.target.full, {})
                    for key, value in props.items():
                        into.setdefault(key, value)

    # Field JSON names: the property of the message's own definition (or of
    # the object it is embedded in), else an override, else a camelCase guess.
    guessed = 0
    for m in messages:
        props = props_of(m)
        for f in m.fields:
            hit = (props or {}).get(norm(f.rust))
            if hit is not None and not f.inline:
                f.json, f.required = hit
                continue
            f.json = JSON_NAME_OVERRIDES.get(f.rust) or camel(f.rust)
            if f.inline:
                continue
            if props is not None and m.special == "None":
                guessed += 1
                if verbose:
                    log(f"no JSON name: {m.full}.{f.rust} -> {f.json}")
        if verbose and m.defn is not None and m.special == "None":
            covered = set()

            def cover(msg, depth):
                for f in msg.fields:
                    covered.add(norm(f.rust))
                    if f.inline and depth < 4:
                        cover(f.target, depth + 1)

            cover(m, 0)
            for key, (json, _) in sorted(m.defn.props.items()):
                if key not in covered:
                    log(f"JSON property without proto field: {m.full}.{json}")
    # Go value-typed numbers / bools: zero means unset.
    unused = set(GO_VALUE_SCALARS)
    for m in messages:
        for f in m.fields:
            key = f"{m.name}.{f.json}"
            if key in GO_VALUE_SCALARS:
                if f.card != "opt" or f.inline or f.ty not in ("B", "I32", "I64", "F64"):
                    sys.exit(f"gen-protobuf-schema: GO_VALUE_SCALARS entry {key} is not an optional number / bool")
                f.omit_zero = True
                unused.discard(key)
    if unused:
        sys.exit(f"gen-protobuf-schema: GO_VALUE_SCALARS entries match no field: {sorted(unused)}")

    log(f"fields with a guessed JSON name (no k8s-openapi property): {guessed}")
    return names


def collect_kinds(messages, defs, log):
    by_full = {m.full: m for m in messages}
    kinds = {}
    groups = dict(EXTRA_GROUPS)
    for d in sorted(defs.values(), key=lambda d: d.name):
        pkg = d.name.rsplit(".", 1)[0]
        for api_version, kind in d.kinds:
            if d.name in by_full:
                kinds.setdefault((api_version, kind), d.name)
            if d.list_kind and f"{pkg}.{d.list_kind}" in by_full:
                kinds.setdefault((api_version, d.list_kind), f"{pkg}.{d.list_kind}")
            if d.group is not None:
                groups.setdefault(d.group, group_prefix(pkg))
    log(f"kinds: {len(kinds)}, groups: {len(groups)}")
    return kinds, groups


# --------------------------------------------------------------------------
# Output.


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def emit(messages, kinds, groups, pb_dir, openapi_dir):
    ordered = sorted(messages, key=lambda m: m.full.encode())
    index = {m.full: i for i, m in enumerate(ordered)}
    if len(ordered) >= 1 << 16:
        sys.exit("gen-protobuf-schema: too many messages for u16 indices")
    out = []
    w = out.append
    w("// @generated by scripts/gen-protobuf-schema.py from")
    w(f"// {os.path.basename(os.path.dirname(pb_dir))} and {os.path.basename(os.path.dirname(openapi_dir))}.")
    w("// Do not edit: run `python3 scripts/gen-protobuf-schema.py`.")
    w("//")
    w("// Field(tag, JSON name, cardinality, type): O optional, Q optional but kept")
    w("// when empty (required in OpenAPI), Z optional Go value type (zero = unset),")
    w("// E embedded (inline) message, L repeated, P map<string, type>; M(i) is the")
    w("// message at index i of MESSAGES.")
    w("")
    w("use super::Card::{")
    w("    Embedded as E, Map as P, OmitZero as Z, Optional as O, Repeated as L, Required as Q,")
    w("};")
    w("use super::Special as Sp;")
    w("use super::Ty::{")
    w("    Bool as B, Bytes as Y, Double as F64, Int32 as I32, Int64 as I64, Message as M, String as S,")
    w("};")
    w("use super::{Field as F, Message};")
    w("")
    w("/// Every message, sorted by full name (binary search).")
    w("#[rustfmt::skip]")
    w("pub(super) static MESSAGES: &[Message] = &[")
    for i, m in enumerate(ordered):
        parts = []
        for f in m.fields:
            ty_s = f"M({index[f.target.full]})" if f.ty == "msg" else f.ty
            if f.card == "map":
                card = "P"
            elif f.card == "rep":
                card = "L"
            elif f.inline:
                card = "E"
            elif f.omit_zero:
                card = "Z"
            elif f.required:
                card = "Q"
            else:
                card = "O"
            parts.append(f"F({f.tag},{rust_str(f.json)},{card},{ty_s})")
        w(f"/*{i}*/Message({rust_str(m.full)},Sp::{m.special},&[{','.join(parts)}]),")
    w("];")
    w("")
    w("/// Top-level kinds: (apiVersion, kind, message index), sorted.")
    w("#[rustfmt::skip]")
    w("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
    for (api_version, kind), full in sorted(kinds.items(), key=lambda kv: (kv[0][0].encode(), kv[0][1].encode())):
        w(f"({rust_str(api_version)},{rust_str(kind)},{index[full]}),")
    w("];")
    w("")
    w("/// API group -> proto package prefix (without the version), sorted.")
    w("#[rustfmt::skip]")
    w("pub(super) static GROUPS: &[(&str, &str)] = &[")
    for group, prefix in sorted(groups.items(), key=lambda kv: kv[0].encode()):
        w(f"({rust_str(group)},{rust_str(prefix)}),")
    w("];")
    return "\n".join(out) + "\n"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-pb", default=None)
    ap.add_argument("--k8s-openapi", default=None)
    ap.add_argument("--out", default=os.path.join(root, "crates", "api", "src", "protobuf_schema.rs"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    pb_dir = args.k8s_pb or registry_dir("~/.cargo/registry/src/*/k8s-pb-0.9.0/src")
    openapi_dir = args.k8s_openapi or registry_dir("~/.cargo/registry/src/*/k8s-openapi-0.29.0/src")

    def log(msg):
        print(f"gen-protobuf-schema: {msg}", file=sys.stderr)

    defs = parse_openapi(openapi_dir, log)
    messages = parse_pb(pb_dir, log)
    resolve(messages, defs, log, args.verbose)
    kinds, groups = collect_kinds(messages, defs, log)
    text = emit(messages, kinds, groups, pb_dir, openapi_dir)
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as fh:
                current = fh.read()
        except FileNotFoundError:
            current = None
        if current != text:
            sys.exit(f"gen-protobuf-schema: {args.out} is out of date")
        return
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, args.out)
    log(f"wrote {args.out} ({len(text)} bytes, {len(messages)} messages)")


if __name__ == "__main__":
    main()
