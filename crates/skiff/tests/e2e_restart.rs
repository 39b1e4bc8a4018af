//! Acknowledged writes survive kill -9, with their resourceVersions.

mod support;
use support::Server;

#[test]
fn objects_and_resource_versions_survive_kill_9() {
    let mut s = Server::start();
    for i in 0..20 {
        s.ok(&[
            "create",
            "configmap",
            &format!("cm{i}"),
            &format!("--from-literal=i={i}"),
        ]);
    }
    let before = s.json(&["get", "configmaps"]);
    s.kill9();
    s.spawn();
    let after = s.json(&["get", "configmaps"]);
    let pick = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        (
                            o["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            o["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            o["metadata"]["uid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(pick(&before), pick(&after));
    assert!(pick(&after).len() >= 20);
    // New writes continue the revision sequence.
    s.ok(&["create", "configmap", "later"]);
    let later: u64 = s.json(&["get", "cm", "later"])["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let max_before = pick(&before)
        .iter()
        .filter_map(|(_, rv, _)| rv.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(later > max_before, "{later} <= {max_before}");
}
