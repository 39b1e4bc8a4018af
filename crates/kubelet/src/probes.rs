//! Liveness, readiness and startup probes (↔ pkg/kubelet/prober): one
//! worker task per container and probe kind, each on its own
//! `periodSeconds` ticker, counting consecutive results against
//! `successThreshold` / `failureThreshold` as the kubelet's prober worker
//! does, and writing the outcome into a results cache the pod's sync
//! reads (readiness → containerStatuses[].ready, startup → `started`,
//! liveness or startup failure → kill and restart).
//!
//! A [`ProbeManager`] belongs to one pod's [`crate::sync::PodWorker`]:
//! the sync tells it what it observed of the containers
//! ([`ProbeManager::observe`]) and asks it for results; the workers wake
//! the pod's sync through [`ProbeManager::results_changed`] when a result
//! changes, and hand their `Unhealthy` events over through
//! [`ProbeManager::take_events`] (signalled by [`ProbeManager::events_added`]).
//! The network side of httpGet and tcpSocket is the [`Prober`] trait;
//! [`NetProber`] is the real one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container as SpecContainer, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::{Runtime, RuntimeError};
use crate::sync::{EventKind, PodEvent};

/// The User-Agent of probe requests.
pub const USER_AGENT: &str = "kube-probe/1.33";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// As the kubelet prints it in events.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The result a new container starts with (↔ worker.initialValue).
    fn initial(self) -> ProbeResult {
        match self {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }

    fn of(self, c: &SpecContainer) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// A cached probe result (↔ proberesults.Result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// What one run of a probe said (↔ probe.Result plus its output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The probe ran and failed, with its output.
    Failure(String),
    /// The probe could not be run; its result is thrown away.
    Error(String),
}

/// An HTTP GET to make (httpGet probes and hooks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// "HTTP" or "HTTPS".
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The request target as sent: escaped as Go's url package does.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.to_ascii_lowercase(),
            host_port(&self.host, self.port),
            self.path
        )
    }
}

/// "host:port", with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The network side of probes and hooks.
#[async_trait::async_trait]
pub trait Prober: Send + Sync {
    /// GET `request` within `timeout`: the response's status code, or the
    /// error as Go's HTTP client words it.
    async fn http_get(&self, request: &HttpRequest, timeout: Duration) -> Result<u16, String>;
    /// Open a TCP connection within `timeout`, or the error as Go words it.
    async fn tcp_connect(&self, host: &str, port: u16, timeout: Duration) -> Result<(), String>;
    /// Call grpc.health.v1.Health/Check for `service` within `timeout`:
    /// Ok when SERVING, else the failure as the kubelet's gRPC prober words it.
    async fn grpc_check(
        &self,
        host: &str,
        port: u16,
        service: &str,
        timeout: Duration,
    ) -> Result<(), String>;
}

/// The real [`Prober`]: tokio sockets and a minimal HTTP/1.1 GET.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetProber;

fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    };
    format!("dial tcp {addr}: {what}")
}

#[async_trait::async_trait]
impl Prober for NetProber {
    async fn http_get(&self, request: &HttpRequest, timeout: Duration) -> Result<u16, String> {
        let url = request.url();
        // Go's transport refuses these before it dials.
        check_headers(&request.headers).map_err(|e| format!("Get \"{url}\": {e}"))?;
        let https = request.scheme.eq_ignore_ascii_case("HTTPS");
        if !https && !request.scheme.eq_ignore_ascii_case("HTTP") {
            return Err(format!(
                "Get \"{url}\": unsupported protocol scheme \"{}\"",
                request.scheme.to_ascii_lowercase()
            ));
        }
        let addr = host_port(&request.host, request.port);
        let get = async {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("Get \"{url}\": {}", dial_error(&addr, &e)))?;
            if !https {
                return get_status(stream, request, &addr)
                    .await
                    .map_err(|e| format!("Get \"{url}\": {e}"));
            }
            // As the kubelet: HTTPS probes do not verify the certificate.
            let name = rustls::pki_types::ServerName::try_from(request.host.clone())
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(
                insecure_tls().map_err(|e| format!("Get \"{url}\": {e}"))?,
            )
            .connect(name, stream)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
            get_status(tls, request, &addr)
                .await
                .map_err(|e| format!("Get \"{url}\": {e}"))
        };
        match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        }
    }

    async fn tcp_connect(&self, host: &str, port: u16, timeout: Duration) -> Result<(), String> {
        let addr = host_port(host, port);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(dial_error(&addr, &e)),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        }
    }

    async fn grpc_check(
        &self,
        host: &str,
        port: u16,
        service: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let addr = host_port(host, port);
        let mut connection = None;
        let check = grpc_health_check(&addr, service, &mut connection);
        let result = match tokio::time::timeout(timeout, check).await {
            Ok(r) => r,
            Err(_) if connection.is_none() => Err(format!(
                "timeout: failed to connect service {addr:?} within {}s",
                timeout.as_secs()
            )),
            Err(_) => Err(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
        };
        if let Some(task) = connection {
            task.abort();
        }
        result
    }
}

/// Header names must be HTTP tokens and values free of control
/// characters but tab, as Go's transport insists (so that no header can
/// add lines to the request).
pub fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    for (name, value) in headers {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
        {
            return Err(format!(
                "net/http: invalid header field name {}",
                go_quote(name)
            ));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!(
                "net/http: invalid header field value for {}",
                go_quote(name)
            ));
        }
    }
    Ok(())
}

/// A string as Go's %q prints it (ASCII escapes; enough for error messages).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether Go's url package escapes `b` in a path (shouldEscape, encodePath).
fn should_escape_in_path(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b))
}

/// Go's url.PathEscape-like escape of a decoded path (escape, encodePath).
fn escape_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &b in p {
        if should_escape_in_path(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Percent-decoding as Go's unescape in path mode: None on a bad escape.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The request target of an httpGet path, as the kubelet's formatURL and
/// Go's URL.RequestURI make it: a path that is already validly encoded is
/// sent as is, anything else is escaped; a path Go cannot parse (control
/// characters, a bad %-escape) is escaped whole, its `?` included, so no
/// CR, LF or space ever reaches the request line. (A space in the query,
/// which Go would pass on raw, is escaped too.)
pub fn request_target(path: &str) -> String {
    let whole = |p: &str| {
        let t = escape_path(p.as_bytes());
        if t.starts_with('/') {
            t
        } else {
            format!("/{t}")
        }
    };
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return whole(path);
    }
    let (rest, fragment) = path.split_once('#').unwrap_or((path, ""));
    if unescape(fragment).is_none() {
        return whole(path);
    }
    let (p, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let Some(decoded) = unescape(p) else {
        return whole(path);
    };
    let valid_encoded = p
        .bytes()
        .all(|b| b"!$&'()*+,;=:@[]%".contains(&b) || !should_escape_in_path(b));
    let mut target = if valid_encoded {
        p.to_string()
    } else {
        escape_path(&decoded)
    };
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(&q.replace(' ', "%20"));
    }
    target
}

/// A probe's host as it goes into the URL: Go refuses control
/// characters (and anything else that cannot be in a host name) when it
/// parses the URL, before any connection.
fn check_host(host: &str, url: &str) -> Result<(), String> {
    if host.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "parse {}: net/url: invalid control character in URL",
            go_quote(url)
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(*c)))
    {
        return Err(format!(
            "parse {}: invalid character {} in host name",
            go_quote(url),
            go_quote(&c.to_string())
        ));
    }
    Ok(())
}

/// Send `request` as an HTTP/1.1 GET over `stream`; the response's status code.
async fn get_status<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &HttpRequest,
    addr: &str,
) -> Result<u16, String> {
    let mut head = format!("GET {} HTTP/1.1\r\n", request.path);
    let has = |name: &str| {
        request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if !has("Host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("User-Agent") {
        head.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("Accept") {
        head.push_str("Accept: */*\r\n");
    }
    for (k, v) in &request.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The status line is all a probe needs.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ if buf.is_empty() => Err("EOF".into()),
        _ => Err(format!(
            "net/http: HTTP/1.x transport connection broken: malformed HTTP response {line:?}"
        )),
    }
}

/// A TLS client config that accepts any certificate (signatures are still checked).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The names of grpc.health.v1.HealthCheckResponse.ServingStatus.
fn serving_status(n: u64) -> &'static str {
    match n {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// The names of gRPC status codes.
fn grpc_code(n: i64) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("Code({n})"))
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` field (1) of a HealthCheckResponse; UNKNOWN (0) when absent.
fn health_status(msg: &[u8]) -> Option<u64> {
    let mut pos = 0;
    let mut status = 0;
    while pos < msg.len() {
        let key = read_varint(msg, &mut pos)?;
        match key & 7 {
            0 => {
                let v = read_varint(msg, &mut pos)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => pos += 8,
            2 => pos += usize::try_from(read_varint(msg, &mut pos)?).ok()?,
            5 => pos += 4,
            _ => return None,
        }
    }
    Some(status)
}

/// One Health/Check over HTTP/2 without TLS (as the kubelet's insecure
/// gRPC dial); the connection's task lands in `connection`.
async fn grpc_health_check(
    addr: &str,
    service: &str,
    connection: &mut Option<tokio::task::AbortHandle>,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let dial_failed = |e: String| format!("error: failed to connect service at {addr:?}: {e}");
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| dial_failed(dial_error(addr, &e)))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| dial_failed(e.to_string()))?;
    *connection = Some(
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "gRPC probe connection ended");
            }
        })
        .abort_handle(),
    );
    // HealthCheckRequest{service}, length-prefixed.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        push_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let failed = |e: String| format!("error: health rpc probe failed: {e}");
    let request = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", USER_AGENT)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| failed(e.to_string()))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let header = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = header("grpc-status").and_then(|c| c.parse::<i64>().ok());
    let message = header("grpc-message").unwrap_or_default();
    match code {
        Some(0) => {}
        Some(12) => {
            return Err(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
            ));
        }
        Some(c) => {
            return Err(failed(format!(
                "rpc error: code = {} desc = {message}",
                grpc_code(c)
            )));
        }
        None if !parts.status.is_success() => {
            return Err(failed(format!(
                "rpc error: code = Unknown desc = unexpected HTTP status code received from server: {}",
                parts.status.as_u16()
            )));
        }
        None => return Err(failed(
            "rpc error: code = Internal desc = server closed the stream without sending trailers"
                .into(),
        )),
    }
    let status = data.get(5..).and_then(health_status).ok_or_else(|| {
        failed("rpc error: code = Internal desc = malformed HealthCheckResponse".into())
    })?;
    if status == 1 {
        Ok(())
    } else {
        Err(format!(
            "service unhealthy (responded with {:?})",
            serving_status(status)
        ))
    }
}

/// A port given by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &SpecContainer) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| i64::from(p.container_port))
                .ok_or_else(|| format!("couldn't find port: {s} in {}", c.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// The request an httpGet action makes against a pod at `pod_ip`.
pub fn http_request(
    action: &k8s_openapi::api::core::v1::HTTPGetAction,
    c: &SpecContainer,
    pod_ip: &str,
) -> Result<HttpRequest, String> {
    let port = resolve_port(&action.port, c)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let request = HttpRequest {
        scheme: action
            .scheme
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "HTTP".into()),
        host,
        port,
        path: request_target(action.path.as_deref().unwrap_or_default()),
        headers: action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    };
    check_host(&request.host, &request.url())?;
    Ok(request)
}

/// Whether a runtime error is an exec that ran out of time.
pub fn is_timeout(e: &RuntimeError) -> bool {
    match e {
        RuntimeError::Timeout { .. } => true,
        RuntimeError::Call { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("timeout") || m.contains("timed out") || m.contains("deadline")
        }
        _ => false,
    }
}

/// Run `probe` once against container `container_id` of a pod at `pod_ip`
/// (↔ prober.runProbe).
pub async fn run_probe(
    runtime: &dyn Runtime,
    prober: &dyn Prober,
    probe: &Probe,
    c: &SpecContainer,
    container_id: &str,
    pod_ip: &str,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.filter(|t| *t > 0).unwrap_or(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match runtime.exec_sync(container_id, &command, timeout).await {
            Ok(r) => {
                let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&r.stderr));
                if r.exit_code == 0 {
                    Outcome::Success
                } else {
                    Outcome::Failure(output)
                }
            }
            Err(e) if is_timeout(&e) => {
                Outcome::Failure(format!("command {:?} timed out", command.join(" ")))
            }
            Err(e) => Outcome::Error(e.to_string()),
        };
    }
    if let Some(action) = &probe.http_get {
        let request = match http_request(action, c, pod_ip) {
            Ok(r) => r,
            Err(e) => return Outcome::Error(e),
        };
        return match prober.http_get(&request, timeout).await {
            Ok(code) if (200..400).contains(&code) => Outcome::Success,
            Ok(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            Err(e) => Outcome::Failure(e),
        };
    }
    if let Some(action) = &probe.tcp_socket {
        let port = match resolve_port(&action.port, c) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let host = action
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return match prober.tcp_connect(&host, port, timeout).await {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failure(e),
        };
    }
    if let Some(action) = &probe.grpc {
        let Some(port) = u16::try_from(action.port).ok().filter(|p| *p > 0) else {
            return Outcome::Error(format!("invalid port number: {}", action.port));
        };
        // gRPC probes always go to the pod's IP.
        return match prober
            .grpc_check(
                pod_ip,
                port,
                action.service.as_deref().unwrap_or_default(),
                timeout,
            )
            .await
        {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failure(e),
        };
    }
    Outcome::Error("missing probe handler".into())
}

/// What the pod's sync last saw of one container.
#[derive(Clone, Debug, Default)]
struct Observed {
    /// Empty while no instance exists.
    container_id: String,
    running: bool,
    terminated: bool,
    /// status.state.running.startedAt.
    started_at: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    /// (kind, container id) → result.
    results: HashMap<(ProbeKind, String), ProbeResult>,
    /// Container name → what the sync saw.
    observed: HashMap<String, Observed>,
    pod_ip: String,
    terminal: bool,
    restart_never: bool,
    events: Vec<PodEvent>,
}

struct Shared {
    runtime: Arc<dyn Runtime>,
    prober: Arc<dyn Prober>,
    state: Mutex<State>,
    results_changed: Arc<Notify>,
    events_added: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set a result; wake the pod's sync when it changed.
    fn set(&self, kind: ProbeKind, id: &str, result: ProbeResult, wake: bool) {
        let changed = self.lock().results.insert((kind, id.to_string()), result) != Some(result);
        if changed && wake {
            self.results_changed.notify_one();
        }
    }

    fn event(&self, container: &str, message: String) {
        self.lock().events.push(PodEvent {
            kind: EventKind::Warning,
            reason: "Unhealthy".into(),
            message,
            field_path: Some(format!("spec.containers{{{container}}}")),
        });
        self.events_added.notify_one();
    }
}

struct WorkerHandle {
    task: tokio::task::AbortHandle,
    trigger: Arc<Notify>,
}

/// The probe workers and results of one pod (↔ prober.manager and
/// proberesults.Manager, per pod).
pub struct ProbeManager {
    shared: Arc<Shared>,
    workers: HashMap<(String, ProbeKind), WorkerHandle>,
    added: bool,
}

impl ProbeManager {
    pub fn new(runtime: Arc<dyn Runtime>, prober: Arc<dyn Prober>) -> ProbeManager {
        ProbeManager {
            shared: Arc::new(Shared {
                runtime,
                prober,
                state: Mutex::new(State::default()),
                results_changed: Arc::new(Notify::new()),
                events_added: Arc::new(Notify::new()),
            }),
            workers: HashMap::new(),
            added: false,
        }
    }

    /// The prober (also used by lifecycle hooks).
    pub fn prober(&self) -> Arc<dyn Prober> {
        self.shared.prober.clone()
    }

    /// Woken when a probe result changes: the pod needs a sync.
    pub fn results_changed(&self) -> Arc<Notify> {
        self.shared.results_changed.clone()
    }

    /// Woken when probe events wait in [`ProbeManager::take_events`].
    pub fn events_added(&self) -> Arc<Notify> {
        self.shared.events_added.clone()
    }

    pub fn take_events(&self) -> Vec<PodEvent> {
        std::mem::take(&mut self.shared.lock().events)
    }

    /// Start the workers of the pod's probes, once (↔ manager.AddPod).
    pub fn add_pod(&mut self, pod: &Pod) {
        if self.added {
            return;
        }
        self.added = true;
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        for c in &spec.containers {
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Readiness,
                ProbeKind::Liveness,
            ] {
                let Some(probe) = kind.of(c) else { continue };
                let trigger = Arc::new(Notify::new());
                let worker = Worker {
                    shared: self.shared.clone(),
                    kind,
                    probe: probe.clone(),
                    container: c.clone(),
                    trigger: trigger.clone(),
                    container_id: String::new(),
                    on_hold: false,
                    last: None,
                    run: 0,
                    running_since: None,
                };
                let task = tokio::spawn(worker.run()).abort_handle();
                self.workers
                    .insert((c.name.clone(), kind), WorkerHandle { task, trigger });
            }
        }
    }

    /// Stop every worker (the pod terminates or is gone).
    pub fn stop(&mut self) {
        for (_, w) in self.workers.drain() {
            w.task.abort();
        }
    }

    fn has(&self, container: &str, kind: ProbeKind) -> bool {
        self.workers.contains_key(&(container.to_string(), kind))
    }

    /// Whether running container `id` (instance of `container`) has
    /// started: its startup probe succeeded, or it has none.
    pub fn started(&self, container: &str, id: &str) -> bool {
        match self
            .shared
            .lock()
            .results
            .get(&(ProbeKind::Startup, id.to_string()))
        {
            Some(r) => *r == ProbeResult::Success,
            None => !self.has(container, ProbeKind::Startup),
        }
    }

    /// Whether started container `id` is ready: its readiness probe
    /// succeeded, or it has none.
    pub fn ready(&self, container: &str, id: &str) -> bool {
        match self
            .shared
            .lock()
            .results
            .get(&(ProbeKind::Readiness, id.to_string()))
        {
            Some(ProbeResult::Success) => true,
            _ => !self.has(container, ProbeKind::Readiness),
        }
    }

    /// The probe whose failure means running container `id` must be killed.
    pub fn failed(&self, id: &str) -> Option<ProbeKind> {
        let st = self.shared.lock();
        [ProbeKind::Liveness, ProbeKind::Startup]
            .into_iter()
            .find(|k| st.results.get(&(*k, id.to_string())) == Some(&ProbeResult::Failure))
    }

    /// Tell the workers what the sync saw: the pod's app containerStatuses
    /// (as computed), its IP, and whether it finished. Readiness workers of
    /// started but unready containers probe at once (↔ UpdatePodStatus's
    /// manual trigger).
    pub fn observe(&self, pod: &Pod, statuses: &[Value], pod_ip: Option<&str>, terminal: bool) {
        {
            let mut st = self.shared.lock();
            st.pod_ip = pod_ip.unwrap_or_default().to_string();
            st.terminal = terminal;
            st.restart_never =
                pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
            for s in statuses {
                let Some(name) = s["name"].as_str() else {
                    continue;
                };
                let id = s["containerID"]
                    .as_str()
                    .map(|i| i.split_once("://").map(|(_, id)| id).unwrap_or(i))
                    .unwrap_or_default();
                let started_at = s
                    .pointer("/state/running/startedAt")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(SystemTime::from);
                st.observed.insert(
                    name.to_string(),
                    Observed {
                        container_id: id.to_string(),
                        running: s["state"].get("running").is_some(),
                        terminated: s["state"].get("terminated").is_some(),
                        started_at,
                    },
                );
            }
        }
        for s in statuses {
            if s["started"] == true
                && s["ready"] != true
                && let Some(name) = s["name"].as_str()
                && let Some(w) = self.workers.get(&(name.to_string(), ProbeKind::Readiness))
            {
                w.trigger.notify_one();
            }
        }
    }
}

impl Drop for ProbeManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One container's probe of one kind (↔ prober.worker).
struct Worker {
    shared: Arc<Shared>,
    kind: ProbeKind,
    probe: Probe,
    container: SpecContainer,
    trigger: Arc<Notify>,
    /// The instance being probed.
    container_id: String,
    /// After a liveness or startup failure: no probing until a new instance.
    on_hold: bool,
    last: Option<ProbeResult>,
    /// How many times in a row `last` came out.
    run: i32,
    /// When the instance started running, on the tokio clock.
    running_since: Option<Instant>,
}

impl Worker {
    async fn run(mut self) {
        let period =
            Duration::from_secs(self.probe.period_seconds.filter(|p| *p > 0).unwrap_or(10) as u64);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // As the kubelet's worker, created with the pod: its first round
        // finds no container yet; the next comes a period later (or when
        // the status triggers a readiness probe).
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.trigger.notified() => {}
            }
            if !self.probe_once().await {
                tracing::debug!(container = %self.container.name, kind = self.kind.name(), "probe worker done");
                return;
            }
        }
    }

    /// One round; false when the worker should stop (↔ worker.doProbe).
    async fn probe_once(&mut self) -> bool {
        let (observed, terminal, never, pod_ip, startup) = {
            let st = self.shared.lock();
            let observed = st.observed.get(&self.container.name).cloned();
            let startup = observed.as_ref().and_then(|o| {
                st.results
                    .get(&(ProbeKind::Startup, o.container_id.clone()))
                    .copied()
            });
            (
                observed,
                st.terminal,
                st.restart_never,
                st.pod_ip.clone(),
                startup,
            )
        };
        if terminal {
            return false;
        }
        let Some(observed) = observed.filter(|o| !o.container_id.is_empty()) else {
            return true;
        };
        if self.container_id != observed.container_id {
            if !self.container_id.is_empty() {
                self.shared
                    .lock()
                    .results
                    .remove(&(self.kind, self.container_id.clone()));
            }
            self.container_id = observed.container_id.clone();
            self.shared
                .set(self.kind, &self.container_id, self.kind.initial(), false);
            self.on_hold = false;
            self.running_since = None;
        }
        if self.on_hold {
            return true;
        }
        if !observed.running {
            self.shared
                .set(self.kind, &self.container_id, ProbeResult::Failure, false);
            // A container that will not be restarted is done with.
            return !(observed.terminated && never);
        }
        let since = *self.running_since.get_or_insert_with(|| {
            let age = observed
                .started_at
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        });
        let initial_delay = self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        if since.elapsed().as_secs() < initial_delay {
            return true;
        }
        let started = match startup {
            Some(r) => r == ProbeResult::Success,
            None => self.container.startup_probe.is_none(),
        };
        if started {
            // Once started, the startup probe is done with this instance.
            if self.kind == ProbeKind::Startup {
                return true;
            }
        } else if self.kind != ProbeKind::Startup {
            // The other probes wait until the container started.
            return true;
        }
        let outcome = run_probe(
            self.shared.runtime.as_ref(),
            self.shared.prober.as_ref(),
            &self.probe,
            &self.container,
            &self.container_id,
            &pod_ip,
        )
        .await;
        let result = match outcome {
            Outcome::Success => ProbeResult::Success,
            Outcome::Failure(output) => {
                self.shared.event(
                    &self.container.name,
                    format!("{} probe failed: {}", self.kind.name(), output.trim_end()),
                );
                ProbeResult::Failure
            }
            Outcome::Error(e) => {
                self.shared.event(
                    &self.container.name,
                    format!("{} probe errored: {e}", self.kind.name()),
                );
                return true;
            }
        };
        if self.last == Some(result) {
            self.run += 1;
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let failure_threshold = self.probe.failure_threshold.filter(|t| *t > 0).unwrap_or(3);
        let success_threshold = self.probe.success_threshold.filter(|t| *t > 0).unwrap_or(1);
        if (result == ProbeResult::Failure && self.run < failure_threshold)
            || (result == ProbeResult::Success && self.run < success_threshold)
        {
            return true;
        }
        self.shared.set(self.kind, &self.container_id, result, true);
        if self.kind != ProbeKind::Readiness && result == ProbeResult::Failure {
            // The container will be restarted; wait for the new instance.
            self.on_hold = true;
            self.run = 0;
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::env::NoLookup;
    use crate::fake::FakeRuntime;
    use crate::runtime::ExecResult;
    use crate::sync::{PodWorker, Settings};
    use serde_json::json;

    /// Answers httpGet and tcpSocket by port; records what it was asked.
    #[derive(Default)]
    pub(crate) struct FakeProber {
        pub http: Mutex<HashMap<u16, Result<u16, String>>>,
        pub tcp: Mutex<HashMap<u16, Result<(), String>>>,
        pub requests: Mutex<Vec<HttpRequest>>,
        pub dials: Mutex<Vec<(String, u16)>>,
    }

    #[async_trait::async_trait]
    impl Prober for FakeProber {
        async fn http_get(&self, request: &HttpRequest, _timeout: Duration) -> Result<u16, String> {
            self.requests.lock().unwrap().push(request.clone());
            self.http
                .lock()
                .unwrap()
                .get(&request.port)
                .cloned()
                .unwrap_or(Ok(200))
        }

        async fn tcp_connect(
            &self,
            host: &str,
            port: u16,
            _timeout: Duration,
        ) -> Result<(), String> {
            self.dials.lock().unwrap().push((host.to_string(), port));
            self.tcp
                .lock()
                .unwrap()
                .get(&port)
                .cloned()
                .unwrap_or(Ok(()))
        }

        async fn grpc_check(
            &self,
            host: &str,
            port: u16,
            service: &str,
            _timeout: Duration,
        ) -> Result<(), String> {
            self.dials
                .lock()
                .unwrap()
                .push((format!("grpc {host} {service}"), port));
            self.tcp
                .lock()
                .unwrap()
                .get(&port)
                .cloned()
                .unwrap_or(Ok(()))
        }
    }

    /// A pod worker over the fake runtime and prober (also the hooks' tests').
    pub(crate) struct H {
        pub(crate) rt: Arc<FakeRuntime>,
        pub(crate) prober: Arc<FakeProber>,
        pub(crate) w: PodWorker,
        _dir: tempfile::TempDir,
    }

    impl H {
        pub(crate) fn new() -> H {
            let dir = tempfile::tempdir().unwrap();
            let rt = Arc::new(FakeRuntime::with_images(&["busybox:skiff"]));
            let mut s = Settings::new("node-1", "192.168.1.10", dir.path().to_path_buf());
            s.cgroup_root = String::new();
            let mut w = PodWorker::new(rt.clone() as Arc<dyn Runtime>, Arc::new(s));
            let prober = Arc::new(FakeProber::default());
            w.set_prober(prober.clone());
            H {
                rt,
                prober,
                w,
                _dir: dir,
            }
        }

        pub(crate) async fn sync(&mut self, pod: &Pod) -> Value {
            self.w.sync(pod, &NoLookup).await.unwrap().status
        }

        pub(crate) fn exec_result(
            &self,
            container: &str,
            word: &str,
            exit_code: i32,
            output: &str,
        ) {
            self.rt.lock().exec_results.insert(
                (container.into(), word.into()),
                ExecResult {
                    exit_code,
                    stdout: output.as_bytes().to_vec(),
                    stderr: vec![],
                },
            );
        }

        pub(crate) fn execs(&self, word: &str) -> usize {
            self.rt
                .lock()
                .execs
                .iter()
                .filter(|(_, cmd)| cmd.first().map(String::as_str) == Some(word))
                .count()
        }

        pub(crate) fn events(&mut self) -> Vec<(String, String)> {
            self.w
                .take_events()
                .into_iter()
                .map(|e| (e.reason, e.message))
                .collect()
        }
    }

    fn pod(restart: &str, container: Value) -> Pod {
        let mut c = json!({"name": "app", "image": "busybox:skiff", "ports": [{"name": "http", "containerPort": 8080}]});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
            c.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
            "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 10, "containers": [c]},
        }))
        .unwrap()
    }

    fn exec_probe(word: &str, extra: Value) -> Value {
        let mut p = json!({"exec": {"command": [word]}, "periodSeconds": 1});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    }

    fn condition(status: &Value, kind: &str) -> String {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn advance(secs: f64) {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failures_count_to_the_threshold_then_kill_and_restart() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({"livenessProbe": exec_probe("live", json!({"failureThreshold": 3}))}),
        );
        let st = h.sync(&p).await;
        assert_eq!(
            st["containerStatuses"][0]["ready"], true,
            "no readiness probe: ready once running"
        );
        h.events();
        h.exec_result("app", "live", 1, "boom\n");
        let changed = h.w.probe_signals().0;

        // Two failures: below the threshold, nothing happens.
        advance(2.5).await;
        assert_eq!(h.execs("live"), 2);
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
        let events = h.events();
        assert_eq!(
            events
                .iter()
                .filter(|(r, m)| r == "Unhealthy" && m == "Liveness probe failed: boom")
                .count(),
            2,
            "{events:?}"
        );
        assert!(!events.iter().any(|(r, _)| r == "Killing"));

        // The third: the result flips, the pod's sync is woken, kills and restarts.
        tokio::time::timeout(Duration::from_secs(2), changed.notified())
            .await
            .expect("woken by the liveness failure");
        let st = h.sync(&p).await;
        let events = h.events();
        assert!(
            events.contains(&(
                "Killing".into(),
                "Container app failed liveness probe, will be restarted".into()
            )),
            "{events:?}"
        );
        assert_eq!(st["containerStatuses"][0]["restartCount"], 1, "{st:#}");
        assert!(st["containerStatuses"][0]["state"]["running"].is_object());
        assert_eq!(
            st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );
        assert_eq!(h.rt.lock().stops.len(), 1);
        assert_eq!(h.rt.lock().stops[0].1, 10, "the pod's grace period");

        // On hold until the new instance is seen; the new one fails again and
        // its restart is held back by the crash-loop backoff.
        tokio::time::timeout(Duration::from_secs(10), changed.notified())
            .await
            .expect("second liveness failure");
        let st = h.sync(&p).await;
        let events = h.events();
        assert!(events.iter().any(|(r, _)| r == "Killing"), "{events:?}");
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff",
            "{st:#}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_kill_without_restart_under_never() {
        let mut h = H::new();
        let p = pod(
            "Never",
            json!({"livenessProbe": exec_probe("live", json!({"failureThreshold": 1, "terminationGracePeriodSeconds": 3}))}),
        );
        h.sync(&p).await;
        h.events();
        h.exec_result("app", "live", 1, "");
        advance(1.5).await;
        let st = h.sync(&p).await;
        let events = h.events();
        assert!(
            events.contains(&(
                "Killing".into(),
                "Container app failed liveness probe".into()
            )),
            "{events:?}"
        );
        assert_eq!(
            h.rt.lock().stops[0].1,
            3,
            "the probe's terminationGracePeriodSeconds"
        );
        assert_eq!(st["phase"], "Failed", "{st:#}");
        assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_probe_before_the_initial_delay() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({"livenessProbe": exec_probe("live", json!({"initialDelaySeconds": 5}))}),
        );
        h.sync(&p).await;
        advance(3.5).await;
        assert_eq!(h.execs("live"), 0);
        advance(3.0).await;
        assert!(h.execs("live") >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_sets_ready_and_the_pod_conditions() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({"readinessProbe": exec_probe("ready", json!({"failureThreshold": 2, "successThreshold": 2}))}),
        );
        h.exec_result("app", "ready", 1, "not yet");
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["ready"], false);
        assert_eq!(st["containerStatuses"][0]["started"], true);
        assert_eq!(condition(&st, "Ready"), "False");
        assert_eq!(condition(&st, "ContainersReady"), "False");
        assert_eq!(st["phase"], "Running");
        // The manual trigger probes at once.
        advance(0.1).await;
        assert_eq!(h.execs("ready"), 1);
        let events = h.events();
        assert!(
            events.contains(&("Unhealthy".into(), "Readiness probe failed: not yet".into())),
            "{events:?}"
        );

        // Success twice in a row (successThreshold 2) makes it ready.
        h.exec_result("app", "ready", 0, "");
        advance(1.0).await;
        assert_eq!(
            h.sync(&p).await["containerStatuses"][0]["ready"],
            false,
            "one success is not enough"
        );
        advance(1.0).await;
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["ready"], true, "{st:#}");
        assert_eq!(condition(&st, "Ready"), "True");
        assert_eq!(condition(&st, "ContainersReady"), "True");

        // Two failures make it unready again; the container keeps running.
        h.exec_result("app", "ready", 1, "");
        advance(2.0).await;
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["ready"], false);
        assert_eq!(condition(&st, "Ready"), "False");
        assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probe_gates_liveness_and_readiness() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({
                "startupProbe": exec_probe("start", json!({"failureThreshold": 30})),
                "readinessProbe": exec_probe("ready", json!({})),
                "livenessProbe": exec_probe("live", json!({})),
            }),
        );
        h.exec_result("app", "start", 1, "");
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["started"], false);
        assert_eq!(st["containerStatuses"][0]["ready"], false);
        advance(5.5).await;
        assert_eq!(h.execs("start"), 5);
        assert_eq!(
            h.execs("ready") + h.execs("live"),
            0,
            "gated by the startup probe"
        );
        assert_eq!(h.sync(&p).await["containerStatuses"][0]["started"], false);

        h.exec_result("app", "start", 0, "");
        advance(1.0).await;
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["started"], true, "{st:#}");
        // Readiness probes at once (triggered by the status), liveness on its tick.
        advance(1.0).await;
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["ready"], true, "{st:#}");
        assert_eq!(condition(&st, "Ready"), "True");
        assert!(h.execs("live") >= 1);
        let starts = h.execs("start");
        advance(3.0).await;
        assert_eq!(
            h.execs("start"),
            starts,
            "the startup probe is done once started"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probe_failure_kills_the_container() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({"startupProbe": exec_probe("start", json!({"failureThreshold": 2}))}),
        );
        h.exec_result("app", "start", 1, "");
        h.sync(&p).await;
        advance(2.5).await;
        let st = h.sync(&p).await;
        let events = h.events();
        assert!(
            events.contains(&(
                "Killing".into(),
                "Container app failed startup probe, will be restarted".into()
            )),
            "{events:?}"
        );
        assert_eq!(st["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(st["containerStatuses"][0]["started"], false);
    }

    #[tokio::test(start_paused = true)]
    async fn http_and_tcp_probes_go_to_the_pod_ip() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1},
            }),
        );
        h.prober.http.lock().unwrap().insert(8080, Ok(503));
        h.sync(&p).await;
        advance(1.5).await;
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["ready"], false);
        let events = h.events();
        assert!(
            events.contains(&(
                "Unhealthy".into(),
                "Readiness probe failed: HTTP probe failed with statuscode: 503".into()
            )),
            "{events:?}"
        );
        {
            let requests = h.prober.requests.lock().unwrap();
            let r = &requests[0];
            assert_eq!(
                (r.scheme.as_str(), r.host.as_str(), r.port, r.path.as_str()),
                ("HTTP", "10.42.0.2", 8080, "/healthz")
            );
            assert_eq!(r.headers, vec![("X-Probe".to_string(), "1".to_string())]);
            assert_eq!(
                h.prober.dials.lock().unwrap()[0],
                ("10.42.0.2".to_string(), 9000)
            );
        }
        h.prober.http.lock().unwrap().insert(8080, Ok(302));
        advance(1.0).await;
        assert_eq!(
            h.sync(&p).await["containerStatuses"][0]["ready"],
            true,
            "3xx is success"
        );
        h.prober.tcp.lock().unwrap().insert(
            9000,
            Err("dial tcp 10.42.0.2:9000: connect: connection refused".into()),
        );
        advance(3.0).await;
        h.sync(&p).await;
        let events = h.events();
        assert!(
            events.contains(&(
                "Unhealthy".into(),
                "Liveness probe failed: dial tcp 10.42.0.2:9000: connect: connection refused"
                    .into()
            )),
            "{events:?}"
        );
        assert!(events.iter().any(|(r, _)| r == "Killing"), "{events:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_pod_stops_its_probes() {
        let mut h = H::new();
        let p = pod(
            "Never",
            json!({"readinessProbe": exec_probe("ready", json!({}))}),
        );
        h.sync(&p).await;
        h.rt.exit("app", 0);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Succeeded");
        advance(1.5).await;
        let n = h.execs("ready");
        advance(5.0).await;
        assert_eq!(h.execs("ready"), n);
    }

    #[tokio::test]
    async fn the_real_prober_speaks_https_without_verifying() {
        let tls = crate::server::tls_config(
            crate::serving::self_signed_for_tests("node-1", "127.0.0.1"),
            None,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                let _ = s.shutdown().await;
            }
        });
        let req = HttpRequest {
            scheme: "HTTPS".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
        };
        assert_eq!(
            NetProber.http_get(&req, Duration::from_secs(5)).await,
            Ok(204)
        );
        let plain = HttpRequest {
            scheme: "HTTP".into(),
            ..req
        };
        assert!(
            NetProber
                .http_get(&plain, Duration::from_secs(5))
                .await
                .is_err(),
            "plain HTTP to a TLS port"
        );
    }

    #[tokio::test]
    async fn the_real_prober_speaks_grpc_health() {
        use http_body_util::BodyExt;
        use hyper::body::Frame;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let name =
                            String::from_utf8_lossy(body.get(7..).unwrap_or_default()).to_string();
                        let mut trailers = hyper::HeaderMap::new();
                        let mut frames = Vec::new();
                        if path != "/grpc.health.v1.Health/Check" {
                            trailers.insert("grpc-status", "12".parse().unwrap());
                        } else if name == "missing" {
                            trailers.insert("grpc-status", "5".parse().unwrap());
                            trailers.insert("grpc-message", "unknown service".parse().unwrap());
                        } else {
                            let status: u8 = if name == "down" { 2 } else { 1 };
                            frames.push(Ok::<_, std::convert::Infallible>(Frame::data(
                                bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]),
                            )));
                            trailers.insert("grpc-status", "0".parse().unwrap());
                        }
                        frames.push(Ok(Frame::trailers(trailers)));
                        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(NetProber.grpc_check("127.0.0.1", port, "", t).await, Ok(()));
        assert_eq!(
            NetProber.grpc_check("127.0.0.1", port, "down", t).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            NetProber.grpc_check("127.0.0.1", port, "missing", t).await,
            Err(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = NetProber
            .grpc_check("127.0.0.1", closed, "", t)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!(
                "error: failed to connect service at \"127.0.0.1:{closed}\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_probes_go_to_the_pod_ip() {
        let mut h = H::new();
        let p = pod(
            "Always",
            json!({"readinessProbe": {"grpc": {"port": 9090, "service": "api"}, "periodSeconds": 1, "failureThreshold": 1}}),
        );
        h.prober.tcp.lock().unwrap().insert(
            9090,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into()),
        );
        h.sync(&p).await;
        advance(0.5).await;
        assert_eq!(
            h.prober.dials.lock().unwrap()[0],
            ("grpc 10.42.0.2 api".to_string(), 9090)
        );
        let events = h.events();
        assert!(
            events.contains(&(
                "Unhealthy".into(),
                "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")".into()
            )),
            "{events:?}"
        );
        h.prober.tcp.lock().unwrap().remove(&9090);
        advance(1.0).await;
        assert_eq!(h.sync(&p).await["containerStatuses"][0]["ready"], true);
    }

    #[test]
    fn ports_resolve_by_number_and_name() {
        let c: SpecContainer = serde_json::from_value(
            json!({"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }

    #[tokio::test]
    async fn the_real_prober_speaks_http_and_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                n += 1;
                let mut buf = [0u8; 1024];
                let got = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..got]).to_string();
                assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
                assert!(req.contains("User-Agent: kube-probe/"), "{req}");
                let code = if n == 1 {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let req = HttpRequest {
            scheme: "HTTP".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            headers: vec![],
        };
        assert_eq!(
            NetProber.http_get(&req, Duration::from_secs(2)).await,
            Ok(200)
        );
        assert_eq!(
            NetProber.http_get(&req, Duration::from_secs(2)).await,
            Ok(500)
        );
        assert_eq!(
            NetProber
                .tcp_connect("127.0.0.1", port, Duration::from_secs(2))
                .await,
            Ok(())
        );
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = NetProber
            .tcp_connect("127.0.0.1", closed, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
        );
        let req = HttpRequest {
            port: closed,
            ..req
        };
        let err = NetProber
            .http_get(&req, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp"
            )),
            "{err}"
        );
    }

    #[test]
    fn request_targets_are_escaped_as_go_does() {
        for (path, want) in [
            ("/healthz", "/healthz"),
            ("healthz", "/healthz"),
            ("", "/"),
            ("/a/b?x=1&y=2", "/a/b?x=1&y=2"),
            ("/a%20b", "/a%20b"),
            ("/a b", "/a%20b"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/x#frag", "/x"),
            ("/p?a b", "/p?a%20b"),
            // Control characters: Go cannot parse it, so all of it is the path.
            (
                "/v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                "/v3/kv/put%20HTTP/1.1%0D%0AHost:%20x%0D%0AContent-Length:%202%0D%0A%0D%0A%7B%7D",
            ),
            ("/a?b\n", "/a%3Fb%0A"),
            // A bad escape: likewise.
            ("/%zz?q", "/%25zz%3Fq"),
        ] {
            let t = request_target(path);
            assert_eq!(t, want, "{path:?}");
            assert!(!t.bytes().any(|b| b <= b' ' || b == 0x7f), "{t:?}");
        }
    }

    #[test]
    fn headers_and_hosts_cannot_add_lines() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        assert_eq!(check_headers(&h("X-Custom-Header", "a\tb")), Ok(()));
        assert_eq!(
            check_headers(&h("X-A", "v\r\nX-Injected: 1")),
            Err("net/http: invalid header field value for \"X-A\"".into())
        );
        assert_eq!(
            check_headers(&h("X-A\r\nX-B", "v")),
            Err("net/http: invalid header field name \"X-A\\r\\nX-B\"".into())
        );
        assert!(check_headers(&h("", "v")).is_err());
        assert!(check_headers(&h("A B", "v")).is_err());
        let c: SpecContainer = serde_json::from_value(json!({"name": "c"})).unwrap();
        let action = |host: &str| -> k8s_openapi::api::core::v1::HTTPGetAction {
            serde_json::from_value(json!({"host": host, "port": 80, "path": "/"})).unwrap()
        };
        assert!(http_request(&action("10.0.0.1"), &c, "10.1.1.1").is_ok());
        assert!(http_request(&action("fd00::1"), &c, "10.1.1.1").is_ok());
        assert_eq!(
            http_request(&action("a\r\nX-Injected: 1"), &c, "10.1.1.1"),
            Err("parse \"http://[a\\r\\nX-Injected: 1]:80/\": net/url: invalid control character in URL".into())
        );
        assert!(http_request(&action("a b"), &c, "10.1.1.1").is_err());
    }

    /// The request the real prober writes: one request line, its own
    /// headers, nothing smuggled.
    #[tokio::test]
    async fn the_real_prober_sends_no_injected_lines() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                let _ = s.shutdown().await;
            }
        });
        let c: SpecContainer = serde_json::from_value(json!({"name": "c"})).unwrap();
        let action: k8s_openapi::api::core::v1::HTTPGetAction = serde_json::from_value(json!({
            "host": "127.0.0.1", "port": port,
            "path": "/x HTTP/1.1\r\nHost: evil\r\nContent-Length: 2\r\n\r\n{}",
            "httpHeaders": [{"name": "X-Ok", "value": "1"}]}))
        .unwrap();
        let req = http_request(&action, &c, "").unwrap();
        assert_eq!(
            NetProber.http_get(&req, Duration::from_secs(5)).await,
            Ok(200)
        );
        let sent = rx.recv().await.unwrap();
        let lines: Vec<&str> = sent.trim_end().split("\r\n").collect();
        assert_eq!(
            lines[0],
            "GET /x%20HTTP/1.1%0D%0AHost:%20evil%0D%0AContent-Length:%202%0D%0A%0D%0A%7B%7D HTTP/1.1"
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("Host:")).count(),
            1,
            "{sent}"
        );
        assert!(!sent.contains("Host: evil"), "{sent}");
        // A header that would add a line is refused before any connection.
        let bad = HttpRequest {
            headers: vec![("X-A".into(), "1\r\nHost: evil".into())],
            ..req
        };
        let err = NetProber
            .http_get(&bad, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            err.ends_with(": net/http: invalid header field value for \"X-A\""),
            "{err}"
        );
        assert!(rx.try_recv().is_err());
    }
}
