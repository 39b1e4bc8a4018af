//! Types glue over k8s-openapi: the resource registry (group, version, kind,
//! plural, scope, short names, subresources), defaulting, validation,
//! patching, OpenAPI documents and table printing. This crate does no I/O.

pub mod apply;
pub mod cel;
pub mod defaults;
pub mod duration;
pub mod jwt;
pub mod openapi;
pub mod openapi_v2_proto;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod structural;
pub mod table;
pub mod validation;
pub mod value;
pub mod x509;

/// The Kubernetes version skiff's API corresponds to (k8s-openapi feature v1_33).
pub const KUBERNETES_VERSION: &str = "v1.33.0+skiff";
