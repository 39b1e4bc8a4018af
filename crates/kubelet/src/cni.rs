//! The pod network's CNI config (↔ k3s's flannel-less bridge setup):
//! Debian's containernetworking-plugins bridge + host-local (+ portmap
//! for hostPort) on the node's pod CIDR.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub const CONF_FILE: &str = "10-skiff.conflist";
/// The pod CIDR when the node has none (k3s's first node gets the first /24 of 10.42.0.0/16).
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/24";
pub const DEFAULT_BRIDGE: &str = "skiff0";

/// Whether iptables is installed (the bridge's ipMasq and portmap need it).
pub fn have_iptables() -> bool {
    ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// The conflist for a bridge on `subnet`, with host-local's state in `ipam_dir`.
pub fn conflist(bridge: &str, subnet: &str, ipam_dir: &Path, iptables: bool) -> Value {
    conflist_masq(bridge, subnet, ipam_dir, iptables, iptables, None)
}

/// The conflist, with the bridge's ipMasq as given: off when the agent
/// masquerades itself only what leaves the pod network (crate::routes), as
/// the bridge's would also masquerade pod-to-pod traffic across nodes; and
/// the MTU of the bridge and the pods' interfaces when not the default
/// (an overlay's, see crate::vxlan).
pub fn conflist_masq(
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
    iptables: bool,
    ip_masq: bool,
    mtu: Option<u32>,
) -> Value {
    let mut bridge_plugin = json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": ip_masq && iptables,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": ipam_dir.display().to_string(),
        },
    });
    if let Some(mtu) = mtu {
        bridge_plugin["mtu"] = json!(mtu);
    }
    let mut plugins = vec![bridge_plugin];
    if iptables {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    json!({"cniVersion": "1.0.0", "name": "skiff", "plugins": plugins})
}

/// Where the conflist goes.
pub fn conf_path(conf_dir: &Path) -> PathBuf {
    conf_dir.join(CONF_FILE)
}

/// Write the conflist (atomically) unless it already says the same; true when written.
pub fn write(conf_dir: &Path, bridge: &str, subnet: &str) -> std::io::Result<bool> {
    write_masq(conf_dir, bridge, subnet, true, None)
}

/// [`write`] with the bridge's ipMasq on or off and an MTU (see [`conflist_masq`]).
pub fn write_masq(
    conf_dir: &Path,
    bridge: &str,
    subnet: &str,
    ip_masq: bool,
    mtu: Option<u32>,
) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    let ipam = conf_dir.join("networks");
    let iptables = have_iptables();
    let text = serde_json::to_string_pretty(&conflist_masq(
        bridge, subnet, &ipam, iptables, ip_masq, mtu,
    ))
    .map_err(std::io::Error::other)?;
    let path = conf_path(conf_dir);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let tmp = conf_dir.join(format!(".{CONF_FILE}.tmp"));
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn conflist_shape() {
        let c = conflist("skiff0", "10.42.3.0/24", Path::new("/d/cni/networks"), true);
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(c["plugins"][1]["type"], "portmap");
        let c = conflist("skiff0", "10.42.3.0/24", Path::new("/d"), false);
        assert_eq!(c["plugins"].as_array().unwrap().len(), 1);
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        let c = conflist_masq("skiff0", "10.42.3.0/24", Path::new("/d"), true, false, None);
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert!(c["plugins"][0].get("mtu").is_none());
        let c = conflist_masq(
            "skiff0",
            "10.42.3.0/24",
            Path::new("/d"),
            true,
            false,
            Some(1450),
        );
        assert_eq!(c["plugins"][0]["mtu"], 1450);
        assert_eq!(c["plugins"][1]["type"], "portmap");
        assert_eq!(
            conflist("skiff0", "10.42.3.0/24", Path::new("/d"), true)["plugins"][0]["ipMasq"],
            true
        );
    }

    #[test]
    fn write_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        assert!(write(d.path(), "skiff0", DEFAULT_POD_CIDR).unwrap());
        assert!(!write(d.path(), "skiff0", DEFAULT_POD_CIDR).unwrap());
        assert!(write(d.path(), "skiff0", "10.42.1.0/24").unwrap());
    }
}
