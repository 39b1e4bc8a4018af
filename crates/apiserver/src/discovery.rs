//! Discovery documents: /api, /apis, per group-version resource lists, and
//! aggregated discovery (apidiscovery.k8s.io/v2) that kubectl 1.30+ asks
//! for first. Built from the registry with k8s-openapi's meta types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::crd::Resources;

use crate::resource_metrics::{GROUP as METRICS_GROUP, VERSION as METRICS_VERSION};

/// The media type of aggregated discovery responses.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version the Accept header asks for, if any.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
    }
    None
}

pub fn api_versions(server_address: &str) -> Value {
    let v = APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: server_address.into(),
        }],
    };
    with_kind(
        serde_json::to_value(v).unwrap_or_default(),
        "APIVersions",
        "v1",
    )
}

fn with_kind(mut v: Value, kind: &str, api_version: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("kind".into(), json!(kind));
        m.insert("apiVersion".into(), json!(api_version));
    }
    v
}

fn api_group(group: &str, versions: &[&str]) -> APIGroup {
    let gvs: Vec<GroupVersionForDiscovery> = versions
        .iter()
        .map(|v| GroupVersionForDiscovery {
            group_version: format!("{group}/{v}"),
            version: v.to_string(),
        })
        .collect();
    APIGroup {
        name: group.into(),
        preferred_version: gvs.first().cloned(),
        versions: gvs,
        server_address_by_client_cidrs: None,
    }
}

/// The groups of the create-only review resources not in the registry
/// (authentication.k8s.io, authorization.k8s.io), each with its version.
fn review_groups(res: &Resources) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in crate::authz::REVIEWS {
        let served = res.groups().iter().any(|(g, _)| *g == r.group);
        if !served && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn review_resource(r: &crate::authz::Review) -> APIResource {
    APIResource {
        name: r.plural.into(),
        singular_name: r.kind.to_ascii_lowercase(),
        namespaced: r.namespaced,
        kind: r.kind.into(),
        verbs: verbs(&["create"]),
        short_names: None,
        categories: None,
        storage_version_hash: None,
        group: None,
        version: None,
    }
}

pub fn api_group_list(res: &Resources) -> Value {
    let groups = res
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group(g, &versions))
        .chain(
            review_groups(res)
                .into_iter()
                .map(|(g, v)| api_group(g, &[v])),
        )
        .chain([api_group(METRICS_GROUP, &[METRICS_VERSION])])
        .collect();
    with_kind(
        serde_json::to_value(APIGroupList { groups }).unwrap_or_default(),
        "APIGroupList",
        "v1",
    )
}

pub fn api_group_doc(res: &Resources, group: &str) -> Option<Value> {
    if let Some((g, v)) = review_groups(res).into_iter().find(|(g, _)| *g == group) {
        return Some(with_kind(
            serde_json::to_value(api_group(g, &[v])).unwrap_or_default(),
            "APIGroup",
            "v1",
        ));
    }
    if group == METRICS_GROUP {
        return Some(with_kind(
            serde_json::to_value(api_group(group, &[METRICS_VERSION])).unwrap_or_default(),
            "APIGroup",
            "v1",
        ));
    }
    let (_, versions) = res
        .groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())?;
    Some(with_kind(
        serde_json::to_value(api_group(group, &versions)).unwrap_or_default(),
        "APIGroup",
        "v1",
    ))
}

fn verbs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// (verbs, response kind as (group, version, kind)) of a subresource.
fn subresource_shape(r: &ResourceInfo, sub: &str) -> (Vec<String>, (String, String, String)) {
    let own = (
        r.group.to_string(),
        r.version.to_string(),
        r.kind.to_string(),
    );
    match sub {
        "status" => (verbs(&["get", "patch", "update"]), own),
        "scale" => (
            verbs(&["get", "patch", "update"]),
            ("autoscaling".into(), "v1".into(), "Scale".into()),
        ),
        "binding" => (
            verbs(&["create"]),
            ("".into(), "v1".into(), "Binding".into()),
        ),
        "eviction" => (
            verbs(&["create"]),
            ("policy".into(), "v1".into(), "Eviction".into()),
        ),
        "token" => (
            verbs(&["create"]),
            (
                "authentication.k8s.io".into(),
                "v1".into(),
                "TokenRequest".into(),
            ),
        ),
        "log" => (verbs(&["get"]), ("".into(), "v1".into(), "Pod".into())),
        "exec" | "attach" | "portforward" => (
            verbs(&["create", "get"]),
            ("".into(), "v1".into(), "PodExecOptions".into()),
        ),
        "proxy" => (
            verbs(&["create", "delete", "get", "patch", "update"]),
            ("".into(), "v1".into(), format!("{}ProxyOptions", r.kind)),
        ),
        "ephemeralcontainers" => (verbs(&["get", "patch", "update"]), own),
        "finalize" => (verbs(&["update"]), own),
        _ => (verbs(&["get"]), own),
    }
}

pub fn api_resource_list(res: &Resources, group: &str, version: &str) -> Option<Value> {
    if (group, version) == (METRICS_GROUP, METRICS_VERSION) {
        return Some(crate::resource_metrics::api_resource_list());
    }
    let mut resources = Vec::new();
    for r in res.in_group_version(group, version) {
        resources.push(APIResource {
            name: r.plural.into(),
            singular_name: r.singular.clone(),
            namespaced: r.namespaced,
            kind: r.kind.into(),
            verbs: verbs(r.verbs()),
            short_names: (!r.short_names.is_empty()).then(|| verbs(r.short_names)),
            categories: (!r.categories.is_empty()).then(|| verbs(r.categories)),
            storage_version_hash: Some(storage_version_hash(r)),
            group: None,
            version: None,
        });
        for sub in r.subresources {
            let (v, (g, ver, k)) = subresource_shape(r, sub);
            resources.push(APIResource {
                name: format!("{}/{sub}", r.plural),
                singular_name: String::new(),
                namespaced: r.namespaced,
                kind: k,
                verbs: v,
                short_names: None,
                categories: None,
                storage_version_hash: None,
                group: (g != r.group).then_some(g),
                version: (ver != r.version).then_some(ver),
            });
        }
    }
    resources.extend(
        crate::authz::REVIEWS
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(review_resource),
    );
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let list = APIResourceList {
        group_version: gv,
        resources,
    };
    Some(with_kind(
        serde_json::to_value(list).unwrap_or_default(),
        "APIResourceList",
        "v1",
    ))
}

fn storage_version_hash(r: &ResourceInfo) -> String {
    use base64::Engine;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in r
        .group
        .bytes()
        .chain(r.version.bytes())
        .chain(r.kind.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    base64::engine::general_purpose::STANDARD.encode(&h.to_be_bytes())
}

/// Aggregated discovery for /api (legacy = true) or /apis.
pub fn aggregated(res: &Resources, legacy: bool, media: &str) -> Value {
    let api_version = if media == AGGREGATED_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    let mut items = Vec::new();
    for (group, versions) in res.groups() {
        if group.is_empty() != legacy {
            continue;
        }
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = res
                    .in_group_version(group, v)
                    .into_iter()
                    .map(|r| {
                        let subs: Vec<Value> = r
                            .subresources
                            .iter()
                            .map(|sub| {
                                let (verbs, (g, ver, k)) = subresource_shape(r, sub);
                                json!({"subresource": sub, "responseKind": {"group": g, "version": ver, "kind": k}, "verbs": verbs})
                            })
                            .collect();
                        let mut res = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs(),
                        });
                        if !r.short_names.is_empty() {
                            res["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            res["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            res["subresources"] = Value::Array(subs);
                        }
                        res
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let metadata = if group.is_empty() {
            json!({"creationTimestamp": null})
        } else {
            json!({"name": group, "creationTimestamp": null})
        };
        items.push(json!({"metadata": metadata, "versions": versions}));
    }
    if !legacy {
        for (group, version) in review_groups(res) {
            let resources: Vec<Value> = crate::authz::REVIEWS
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| {
                    json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.kind.to_ascii_lowercase(),
                        "verbs": ["create"],
                    })
                })
                .collect();
            items.push(json!({"metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}]}));
        }
        items.push(crate::resource_metrics::aggregated_group());
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_include_subresources() {
        let v = api_resource_list(&Resources::default(), "", "v1").unwrap();
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/log"));
        assert!(names.contains(&"replicationcontrollers/scale"));
        let pods = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"][0], "po");
        assert_eq!(pods["categories"][0], "all");
        assert_eq!(pods["singularName"], "pod");
    }

    #[test]
    fn aggregated_has_groups() {
        assert_eq!(
            wants_aggregated(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            ),
            Some(AGGREGATED_V2)
        );
        assert_eq!(wants_aggregated("application/json"), None);
        let apis = aggregated(&Resources::default(), false, AGGREGATED_V2);
        assert!(
            apis["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
        for group in ["authorization.k8s.io", "authentication.k8s.io"] {
            assert!(
                apis["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g["metadata"]["name"] == group),
                "{group}"
            );
            assert!(api_group_doc(&Resources::default(), group).is_some());
        }
        let sar = api_resource_list(&Resources::default(), "authorization.k8s.io", "v1").unwrap();
        assert!(
            sar["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "subjectaccessreviews" && r["verbs"] == json!(["create"]))
        );
        let api = aggregated(&Resources::default(), true, AGGREGATED_V2);
        assert_eq!(api["items"].as_array().unwrap().len(), 1);
        assert!(
            api_group_list(&Resources::default())["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "coordination.k8s.io")
        );
    }
}
