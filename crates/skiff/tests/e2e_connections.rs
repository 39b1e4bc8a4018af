//! Security review D1 end to end: two thousand idle connections to the API
//! server do not lock kubectl out (the server raises its open-files limit
//! at start and caps connections far above that).

mod support;

use support::Server;

/// Set this process's soft open-files limit (children inherit it).
fn set_open_files_limit(soft: Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = match (soft, limit.maximum) {
        (Some(s), Some(max)) => Some(s.min(max)),
        (None, max) => max,
        (s, None) => s,
    };
    setrlimit(Resource::Nofile, limit).expect("setrlimit");
}

#[test]
fn two_thousand_idle_connections_leave_room_for_kubectl() {
    // The server starts with the common default soft limit of 1,024 (this
    // machine's own may be higher) and must raise it itself.
    set_open_files_limit(Some(1024));
    let s = Server::start();
    // This process needs a descriptor per connection too.
    set_open_files_limit(None);
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        match std::net::TcpStream::connect(("127.0.0.1", s.port)) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
    }
    let pods = s.ok(&["get", "pods", "-A", "-o", "name"]);
    assert!(!pods.contains("error"), "{pods}");
    s.ok(&["create", "configmap", "still-writable"]);
    drop(idle);
}
