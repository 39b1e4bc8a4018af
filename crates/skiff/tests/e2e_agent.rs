//! A real container through the in-process node agent: containerd + runc
//! through CRI, CNI bridge networking, an image imported from busybox-static.
//! Needs root and Debian's containerd, runc, containernetworking-plugins and
//! busybox-static, which .ci/run installs.

mod support;

use std::path::Path;

use support::{Server, eventually};

fn missing_prerequisite() -> Option<String> {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if !root {
        return Some("not running as root".into());
    }
    for (path, pkg) in [("/usr/bin/containerd", "containerd"), ("/usr/sbin/runc", "runc"), ("/usr/lib/cni/bridge", "containernetworking-plugins"), ("/bin/busybox", "busybox-static")] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {pkg})"));
        }
    }
    None
}

#[test]
fn kubectl_run_starts_a_real_container() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipping the node agent end-to-end test: {why}");
        return;
    }
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready "));
    let runtime = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].status.nodeInfo.containerRuntimeVersion}"]);
    assert!(runtime.starts_with("containerd://"), "{runtime}");
    let image = s.data_dir().join("busybox-skiff.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
    let out = std::process::Command::new("bash").arg(&script).arg(&image).output().expect("build image");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "import"])
        .arg(&image)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .expect("skiff images import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    s.ok(&["run", "hello", "--image=busybox:skiff", "--image-pull-policy=IfNotPresent", "--", "sh", "-c", "echo hello from skiff; sleep 3600"]);
    eventually("hello Running with an IP", &s, || {
        let wide = s.ok(&["get", "pod", "hello", "-o", "wide", "--no-headers"]);
        wide.contains("Running") && wide.contains("10.42.")
    });
    let pod = s.json(&["get", "pod", "hello"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    assert!(pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or_default().starts_with("containerd://"));
    // A missing image: ErrImagePull, then ImagePullBackOff.
    s.ok(&["run", "ghost", "--image=127.0.0.1:1/none:1"]);
    eventually("ImagePullBackOff", &s, || {
        let st = s.ok(&["get", "pod", "ghost", "--no-headers"]);
        st.contains("ErrImagePull") || st.contains("ImagePullBackOff")
    });
    // Graceful deletion stops the container and removes the pod.
    s.ok(&["delete", "pod", "hello", "ghost", "--grace-period=2", "--timeout=60s"]);
    assert!(s.ok(&["get", "pods", "--no-headers"]).trim().is_empty());
}
