//! Defaulting, as kube-apiserver's registered defaulters (SetDefaults_*) and
//! defaulting admission plugins do it. Works on the JSON form after the typed
//! round trip; fields the user set are never overwritten.
//!
//! Defaults that need cluster state (a Service's clusterIP and nodePorts, a
//! Job's generated selector) are the API server's job, not this module's.

use serde_json::{Map, Value, json};

fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

fn object_at<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = v.as_object_mut()?;
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), Value::Object(Map::new()));
    }
    map.get_mut(key)?.as_object_mut()
}

/// Apply the defaults of a kind to an object (create and update alike).
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = object_at(obj, "spec") {
                default_pod_spec(spec);
            }
            let qos = qos_class(obj);
            if let Some(status) = object_at(obj, "status") {
                set_default(status, "phase", json!("Pending"));
                set_default(status, "qosClass", json!(qos));
            }
        }
        ("", "PodTemplate") => default_template(obj, "template"),
        ("", "ReplicationController") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
            }
            default_template_in_spec(obj);
            // An RC without a selector selects its template's labels.
            let labels = obj.pointer("/spec/template/metadata/labels").cloned();
            if let (Some(spec), Some(labels)) = (
                obj.pointer_mut("/spec").and_then(Value::as_object_mut),
                labels,
            ) {
                set_default(spec, "selector", labels);
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
                if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut)
                    && strategy
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("RollingUpdate")
                        == "RollingUpdate"
                {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    set_default(strategy, "rollingUpdate", json!({}));
                    if let Some(ru) = strategy
                        .get_mut("rollingUpdate")
                        .and_then(Value::as_object_mut)
                    {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template_in_spec(obj);
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            default_template_in_spec(obj);
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            default_template_in_spec(obj);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            default_template_in_spec(obj);
        }
        ("batch", "Job") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "completions", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
            if obj.pointer("/spec/template/spec/restartPolicy").is_none()
                && let Some(tspec) = obj
                    .pointer_mut("/spec/template/spec")
                    .and_then(Value::as_object_mut)
            {
                tspec.insert("restartPolicy".into(), json!("Never"));
            }
            default_template_in_spec(obj);
        }
        ("batch", "CronJob") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(job_spec) = obj.pointer_mut("/spec/jobTemplate/spec") {
                let mut job = json!({"spec": job_spec.take()});
                apply_defaults("batch", "Job", &mut job);
                if let Some(s) = job.get_mut("spec") {
                    *job_spec = s.take();
                }
            }
        }
        ("", "Service") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                let svc_type = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_string();
                if svc_type != "ExternalName" {
                    set_default(spec, "sessionAffinity", json!("None"));
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if svc_type == "NodePort" || svc_type == "LoadBalancer" {
                    set_default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
            if let Some(status) = object_at(obj, "status") {
                set_default(status, "loadBalancer", json!({}));
            }
        }
        ("", "Namespace") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = object_at(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        ("", "Secret") => {
            if let Some(map) = obj.as_object_mut() {
                set_default(map, "type", json!("Opaque"));
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = object_at(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = object_at(obj, "spec") {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = object_at(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "Node") => {
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
                && let Some(cap) = status.get("capacity").cloned()
            {
                set_default(status, "allocatable", cap);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(map) = obj.as_object_mut() {
                set_default(map, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            if let Some(map) = obj.as_object_mut() {
                set_default(map, "reclaimPolicy", json!("Delete"));
                set_default(map, "volumeBindingMode", json!("Immediate"));
            }
        }
        _ => {}
    }
}

fn default_template_in_spec(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        default_template(spec, "template");
    }
}

fn default_template(parent: &mut Value, key: &str) {
    if let Some(template) = parent.get_mut(key)
        && let Some(spec) = object_at(template, "spec")
    {
        default_pod_spec(spec);
    }
}

/// SetDefaults_PodSpec and SetDefaults_Container.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for (source, mode_key) in [
                ("configMap", "defaultMode"),
                ("secret", "defaultMode"),
                ("downwardAPI", "defaultMode"),
                ("projected", "defaultMode"),
            ] {
                if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set_default(src, mode_key, json!(420));
                }
            }
            if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(hp, "type", json!(""));
            }
        }
        // A pod with no volume source given gets an emptyDir.
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            if v.len() == 1 && v.contains_key("name") {
                v.insert("emptyDir".into(), json!({}));
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(http) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(http, "path", json!("/"));
                set_default(http, "scheme", json!("HTTP"));
            }
        }
    }
}

/// Always for `:latest` or untagged images, IfNotPresent otherwise (digests too).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "d", "image": "busybox:1.36"}]}});
        apply_defaults("", "Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn user_values_win() {
        let mut pod = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}});
        apply_defaults("", "Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn deployment_and_service_defaults() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply_defaults("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("", "Service", &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn qos() {
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
