//! skiff's Kubernetes API server (k8s.io/apiserver + kube-apiserver in Go):
//! HTTPS with bearer-token authentication, discovery, OpenAPI, resource
//! verbs, watch, patch and apply, admission, and a watch cache in front of
//! the store. Errors become a Kubernetes `Status` only in this crate.
//!
//! **Architecture Invariant:** this crate is the only component that talks
//! to the store; everything else reaches the cluster through its HTTP API.

pub mod admission;
pub mod admission_policy;
pub mod alloc;
pub mod authz;
pub mod bootdata;
pub mod bootstrap;
pub mod cache;
pub mod certificates;
pub mod crd;
pub mod discovery;
pub mod events_view;
pub mod flowcontrol;
pub mod handlers;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod nodeauthz;
pub mod output;
pub mod patching;
pub mod podproxy;
pub mod podsecurity;
pub mod policy;
pub mod proxy;
pub mod rbac;
pub mod request;
pub mod resource_metrics;
pub mod rewrite;
pub mod server;
pub mod spdy;
pub mod state;
pub mod status;
pub mod tls;
pub mod tokens;
pub mod watch;
pub mod webhook;
pub mod ws;
pub mod yaml;

pub use state::{ApiServer, Config, Running, StartError, run, start};
