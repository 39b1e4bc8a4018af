//! The pod's /etc/hosts (↔ the kubelet's makeHostsMount,
//! managedHostsFileContent and nodeHostsFileContent): written once per pod
//! under `<pods root>/<uid>/etc-hosts` and bind-mounted into every
//! container that does not mount /etc/hosts itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, HostAlias, Pod};

use crate::runtime::Mount;

/// Where containers see the file.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// The first line of a file the kubelet manages.
pub const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// The first line of a host-network pod's copy of the node's file.
pub const HOST_NETWORK_HEADER: &str = "# Kubernetes-managed hosts file (host network).\n";

/// The pod's hostname and domain (↔ GeneratePodHostNameAndDomain):
/// spec.hostname or the pod's name (at most 63 characters, without a
/// trailing '-' or '.'), and `<subdomain>.<namespace>.svc.<cluster
/// domain>` when spec.subdomain is set.
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, String) {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    let hostname = if hostname.len() > 63 {
        hostname
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    } else {
        hostname
    };
    let domain = match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) if !sub.is_empty() => format!(
            "{sub}.{}.svc.{cluster_domain}",
            pod.metadata.namespace.as_deref().unwrap_or("default")
        ),
        _ => String::new(),
    };
    (hostname, domain)
}

fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&a.ip);
        out.push('\t');
        out.push_str(&a.hostnames.clone().unwrap_or_default().join("\t"));
        out.push('\n');
    }
    out
}

/// The file of a pod with its own network namespace (↔ managedHostsFileContent).
pub fn managed_content(
    ips: &[String],
    hostname: &str,
    domain: &str,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The file of a host-network pod: its header, the node's own file as it
/// is, and the pod's hostAliases (↔ nodeHostsFileContent).
pub fn node_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(HOST_NETWORK_HEADER);
    out.push_str(node_hosts);
    out.push_str(&alias_entries(aliases));
    out
}

/// The pod's hosts file.
pub fn path(pods_root: &Path, uid: &str) -> PathBuf {
    crate::volumes::pod_dir(pods_root, uid).join("etc-hosts")
}

/// Write the pod's hosts file unless it exists (↔ ensureHostsFile: it is
/// written once, so what a container changes in it stays).
pub fn ensure(
    pods_root: &Path,
    pod: &Pod,
    ips: &[String],
    cluster_domain: &str,
    node_hosts: &Path,
) -> std::io::Result<PathBuf> {
    let file = path(pods_root, pod.metadata.uid.as_deref().unwrap_or_default());
    if file.exists() {
        return Ok(file);
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let aliases = spec.host_aliases.clone().unwrap_or_default();
    let content = if spec.host_network.unwrap_or(false) {
        let node = std::fs::read_to_string(node_hosts).unwrap_or_default();
        node_content(&node, &aliases)
    } else {
        let (hostname, domain) = hostname_and_domain(pod, cluster_domain);
        managed_content(ips, &hostname, &domain, &aliases)
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

/// The hosts mount of container `c`, unless it mounts /etc/hosts itself.
pub fn mount_for(c: &Container, file: &Path) -> Option<Mount> {
    if c.volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == ETC_HOSTS)
    {
        return None;
    }
    Some(Mount {
        container_path: ETC_HOSTS.into(),
        host_path: file.display().to_string(),
        readonly: false,
        ..Default::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "ns", "uid": "u1"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn managed_file_has_the_pod_ip_hostname_and_aliases() {
        let p = pod(
            json!({"hostname": "h", "subdomain": "sub", "containers": [],
            "hostAliases": [{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]}, {"ip": "::2", "hostnames": ["v6"]}]}),
        );
        let (h, d) = hostname_and_domain(&p, "cluster.local");
        assert_eq!((h.as_str(), d.as_str()), ("h", "sub.ns.svc.cluster.local"));
        let content = managed_content(
            &["10.42.0.5".into()],
            &h,
            &d,
            p.spec.as_ref().unwrap().host_aliases.as_deref().unwrap(),
        );
        assert_eq!(
            content,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             10.42.0.5\th.sub.ns.svc.cluster.local\th\n\n# Entries added by HostAliases.\n\
             123.45.67.89\tfoo\tbar\n::2\tv6\n"
        );
        // Without hostname and subdomain: the pod's name, alone.
        let plain = pod(json!({"containers": []}));
        let (h, d) = hostname_and_domain(&plain, "cluster.local");
        assert!(
            managed_content(&["10.42.0.6".into()], &h, &d, &[])
                .ends_with("fe00::2\tip6-allrouters\n10.42.0.6\tweb-0\n")
        );
        // A long name is cut to 63 characters without a trailing '-'.
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let lp: Pod =
            serde_json::from_value(json!({"metadata": {"name": long}, "spec": {"containers": []}}))
                .unwrap();
        assert_eq!(hostname_and_domain(&lp, "c").0, "a".repeat(62));
    }

    #[test]
    fn host_network_pods_get_the_nodes_file_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node-hosts");
        std::fs::write(&node, "127.0.0.1 localhost\n10.0.0.1 node-1").unwrap();
        let p = pod(json!({"hostNetwork": true, "containers": [],
            "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a"]}]}));
        let root = dir.path().join("pods");
        let file = ensure(&root, &p, &["10.0.0.1".into()], "cluster.local", &node).unwrap();
        assert_eq!(file, root.join("u1/etc-hosts"));
        let content = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            content,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.1 node-1\n# Entries added by HostAliases.\n1.2.3.4\ta\n"
        );
        // Written once: what is there stays.
        std::fs::write(&file, "changed\n").unwrap();
        ensure(&root, &p, &["10.0.0.1".into()], "cluster.local", &node).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "changed\n");
    }

    #[test]
    fn containers_mounting_etc_hosts_keep_theirs() {
        let own: Container = serde_json::from_value(json!({"name": "c",
            "volumeMounts": [{"name": "h", "mountPath": "/etc/hosts"}]}))
        .unwrap();
        assert_eq!(mount_for(&own, Path::new("/x")), None);
        let plain: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let m = mount_for(&plain, Path::new("/x")).unwrap();
        assert_eq!(
            (m.container_path.as_str(), m.host_path.as_str(), m.readonly),
            ("/etc/hosts", "/x", false)
        );
    }
}
