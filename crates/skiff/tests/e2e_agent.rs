//! A real container through the in-process node agent: containerd + runc
//! through CRI, CNI bridge networking, an image imported from busybox-static.
//! Needs root and Debian's containerd, runc, containernetworking-plugins and
//! busybox-static, which .ci/run installs.

mod support;

use support::eventually;

#[test]
fn kubectl_run_starts_a_real_container() {
    let Some(s) = support::node_ready("the node agent end-to-end test") else {
        return;
    };
    let runtime = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.nodeInfo.containerRuntimeVersion}",
    ]);
    assert!(runtime.starts_with("containerd://"), "{runtime}");
    support::import_busybox(&s);

    s.ok(&[
        "run",
        "hello",
        "--image=busybox:skiff",
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo hello from skiff; sleep 3600",
    ]);
    // The pod's IP comes from the node's podCIDR (first three octets of a /24).
    eventually("the node's podCIDR", &s, || {
        s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"])
            .ends_with("/24")
    });
    let cidr = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"]);
    let prefix = cidr
        .trim()
        .rsplit_once('.')
        .map(|(p, _)| format!("{p}."))
        .unwrap_or_default();
    assert!(cidr.ends_with(".0/24"), "podCIDR {cidr}");
    eventually("hello Running with an IP", &s, || {
        let wide = s.ok(&["get", "pod", "hello", "-o", "wide", "--no-headers"]);
        wide.contains("Running") && wide.contains(&prefix)
    });
    let pod = s.json(&["get", "pod", "hello"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    assert!(
        pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or_default()
            .starts_with("containerd://")
    );
    // A missing image: ErrImagePull, then ImagePullBackOff.
    s.ok(&["run", "ghost", "--image=127.0.0.1:1/none:1"]);
    eventually("ImagePullBackOff", &s, || {
        let st = s.ok(&["get", "pod", "ghost", "--no-headers"]);
        st.contains("ErrImagePull") || st.contains("ImagePullBackOff")
    });
    // Graceful deletion stops the container and removes the pod.
    s.ok(&[
        "delete",
        "pod",
        "hello",
        "ghost",
        "--grace-period=2",
        "--timeout=60s",
    ]);
    assert!(s.ok(&["get", "pods", "--no-headers"]).trim().is_empty());
}
