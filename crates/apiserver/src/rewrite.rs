//! The link rewriting of the API server's HTTP proxy (↔ k8s.io/apimachinery
//! pkg/util/proxy/transport.go): absolute links in `text/html` responses
//! and `Location` headers that point at the proxied backend are prefixed
//! with the proxy path (`/api/v1/namespaces/NS/pods/NAME/proxy`), so that
//! a page served through pods/proxy or services/proxy links back through
//! it.

/// What the rewriting needs to know about one proxied request.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// The API path before the proxied path, e.g. `/api/v1/namespaces/ns/pods/p/proxy`.
    pub path_prepend: String,
    /// The backend's `host:port`.
    pub backend_host: String,
    /// The Host the client asked the API server for.
    pub request_host: String,
}

/// Which attributes of which tags hold URLs (↔ atomsToAttrs).
fn url_attrs(tag: &str) -> &'static [&'static str] {
    match tag {
        "a" | "area" | "base" | "link" => &["href"],
        "applet" => &["codebase"],
        "audio" | "embed" | "script" | "source" => &["src"],
        "blockquote" | "del" | "ins" | "q" => &["cite"],
        "body" => &["background"],
        "button" => &["formaction"],
        "command" => &["icon"],
        "form" => &["action"],
        "frame" | "iframe" => &["longdesc", "src"],
        "head" => &["profile"],
        "html" => &["manifest"],
        "img" => &["longdesc", "src", "usemap"],
        "input" => &["src", "usemap", "formaction"],
        "object" => &["classid", "codebase", "data", "usemap"],
        "video" => &["poster", "src"],
        _ => &[],
    }
}

/// Go's path.Join of a prefix and a path (cleaned; empty elements,
/// `.` and `..` resolved).
fn join_clean(prefix: &str, path: &str) -> String {
    let joined = format!("{prefix}/{path}");
    let mut out: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

impl Rewriter {
    /// Rewrite one URL found in a page or a Location header (↔ rewriteURL):
    /// absolute paths on the backend's (or the API server's) host get the
    /// proxy prefix; other hosts and relative references stay as they are.
    pub fn url(&self, target: &str) -> String {
        let (before_fragment, fragment) = match target.find('#') {
            Some(i) => target.split_at(i),
            None => (target, ""),
        };
        let (reference, query) = match before_fragment.find('?') {
            Some(i) => before_fragment.split_at(i),
            None => (before_fragment, ""),
        };
        let scheme_end = reference.find(':').filter(|&i| {
            let s = &reference[..i];
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        let (scheme, rest) = match scheme_end {
            Some(i) => (&reference[..i], &reference[i + 1..]),
            None => ("", reference),
        };
        let (host, path) = match rest.strip_prefix("//") {
            Some(r) => match r.find('/') {
                Some(i) => r.split_at(i),
                None => (r, ""),
            },
            // "mailto:x" and the like: an opaque URL, relative to nothing.
            None if !scheme.is_empty() => return target.to_string(),
            None => ("", rest),
        };
        let different_host =
            !host.is_empty() && host != self.backend_host && host != self.request_host;
        if different_host || !path.starts_with('/') {
            return target.to_string();
        }
        // The transport has no scheme or host of its own (the API server's
        // request URL has none), so both are dropped unless the link
        // already names the API server.
        let keep_host = !host.is_empty() && host == self.request_host;
        let new_path = if path.starts_with(&self.path_prepend) {
            path.to_string()
        } else {
            let mut p = join_clean(&self.path_prepend, path);
            if path.ends_with('/') && !p.ends_with('/') {
                p.push('/');
            }
            p
        };
        let mut out = String::new();
        if keep_host {
            if !scheme.is_empty() {
                out.push_str(scheme);
                out.push(':');
            }
            out.push_str("//");
            out.push_str(host);
        }
        out.push_str(&new_path);
        out.push_str(query);
        out.push_str(fragment);
        out
    }

    /// Rewrite the URL attributes of an HTML page (↔ rewriteHTML). Start
    /// tags are written back normalized, as Go's html.Token.String does
    /// (lower-case names, double-quoted escaped values); everything else is
    /// copied as it is.
    pub fn html(&self, page: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(page.len() + 256);
        let mut i = 0;
        let mut raw_until: Option<String> = None;
        while i < page.len() {
            let Some(lt) = page[i..].iter().position(|&b| b == b'<').map(|p| p + i) else {
                out.extend_from_slice(&page[i..]);
                break;
            };
            out.extend_from_slice(&page[i..lt]);
            i = lt;
            if let Some(end_tag) = &raw_until {
                // Inside <script>, <style>, ...: only the end tag ends it.
                let rest = &page[i..];
                let close = format!("</{end_tag}");
                if rest.len() >= close.len()
                    && rest[..close.len()].eq_ignore_ascii_case(close.as_bytes())
                {
                    raw_until = None;
                } else {
                    out.push(b'<');
                    i += 1;
                    continue;
                }
            }
            let rest = &page[i..];
            if rest.starts_with(b"<!--") {
                let end = find(rest, b"-->").map_or(rest.len(), |e| e + 3);
                out.extend_from_slice(&rest[..end]);
                i += end;
                continue;
            }
            let starts_tag = rest.get(1).is_some_and(|b| b.is_ascii_alphabetic());
            if !starts_tag {
                // End tags, doctype, processing instructions, stray '<'.
                let end = if rest.get(1).is_some_and(|b| matches!(b, b'/' | b'!' | b'?')) {
                    rest.iter()
                        .position(|&b| b == b'>')
                        .map_or(rest.len(), |e| e + 1)
                } else {
                    1
                };
                out.extend_from_slice(&rest[..end]);
                i += end;
                continue;
            }
            match parse_tag(rest) {
                Some((tag, used)) => {
                    out.extend_from_slice(self.render(&tag).as_bytes());
                    if !tag.self_closing
                        && matches!(
                            tag.name.as_str(),
                            "script"
                                | "style"
                                | "textarea"
                                | "title"
                                | "xmp"
                                | "iframe"
                                | "noembed"
                                | "noframes"
                        )
                    {
                        raw_until = Some(tag.name.clone());
                    }
                    i += used;
                }
                None => {
                    // An unterminated tag: copied as it is.
                    out.extend_from_slice(rest);
                    break;
                }
            }
        }
        out
    }

    fn render(&self, tag: &Tag) -> String {
        let attrs = url_attrs(&tag.name);
        let mut s = format!("<{}", tag.name);
        for (k, v) in &tag.attrs {
            let v = if attrs.contains(&k.as_str()) {
                self.url(v)
            } else {
                v.clone()
            };
            s.push(' ');
            s.push_str(k);
            s.push_str("=\"");
            s.push_str(&escape(&v));
            s.push('"');
        }
        s.push_str(if tag.self_closing { "/>" } else { ">" });
        s
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
    self_closing: bool,
}

/// Parse a start tag at the beginning of `s` (which starts with `<` and a
/// letter); returns the tag and the bytes it used.
fn parse_tag(s: &[u8]) -> Option<(Tag, usize)> {
    let mut i = 1;
    let name_end = s[i..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'>'))
        .map_or(s.len(), |p| p + i);
    let name = String::from_utf8_lossy(&s[i..name_end]).to_ascii_lowercase();
    i = name_end;
    let mut attrs = Vec::new();
    loop {
        while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b'/') {
            if s[i] == b'/' && s.get(i + 1) == Some(&b'>') {
                return Some((
                    Tag {
                        name,
                        attrs,
                        self_closing: true,
                    },
                    i + 2,
                ));
            }
            i += 1;
        }
        match s.get(i) {
            None => return None,
            Some(b'>') => {
                return Some((
                    Tag {
                        name,
                        attrs,
                        self_closing: false,
                    },
                    i + 1,
                ));
            }
            Some(_) => {}
        }
        let key_end = s[i..]
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b'=' | b'>' | b'/'))
            .map_or(s.len(), |p| p + i)
            .max(i + 1)
            .min(s.len());
        let key = String::from_utf8_lossy(&s[i..key_end]).to_ascii_lowercase();
        i = key_end;
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if s.get(i) == Some(&b'=') {
            i += 1;
            while i < s.len() && s[i].is_ascii_whitespace() {
                i += 1;
            }
            match s.get(i) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let end = s[i + 1..].iter().position(|&b| b == q)? + i + 1;
                    value = unescape(&String::from_utf8_lossy(&s[i + 1..end]));
                    i = end + 1;
                }
                Some(_) => {
                    let end = s[i..]
                        .iter()
                        .position(|b| b.is_ascii_whitespace() || *b == b'>')
                        .map_or(s.len(), |p| p + i);
                    value = unescape(&String::from_utf8_lossy(&s[i..end]));
                    i = end;
                }
                None => return None,
            }
        }
        attrs.push((key, value));
    }
}

/// Decode the character references Go's tokenizer decodes most often.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
                _ => None,
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Go's html.EscapeString.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rw() -> Rewriter {
        Rewriter {
            path_prepend: "/api/v1/namespaces/ns/pods/web:1080/proxy".into(),
            backend_host: "10.42.0.7:1080".into(),
            request_host: "127.0.0.1:6443".into(),
        }
    }

    #[test]
    fn rewrites_urls_as_kubernetes() {
        let r = rw();
        assert_eq!(
            r.url("/rewriteme"),
            "/api/v1/namespaces/ns/pods/web:1080/proxy/rewriteme"
        );
        assert_eq!(
            r.url("/a/b/?x=1#f"),
            "/api/v1/namespaces/ns/pods/web:1080/proxy/a/b/?x=1#f"
        );
        assert_eq!(
            r.url("http://10.42.0.7:1080/x"),
            "/api/v1/namespaces/ns/pods/web:1080/proxy/x"
        );
        assert_eq!(
            r.url("https://127.0.0.1:6443/x"),
            "https://127.0.0.1:6443/api/v1/namespaces/ns/pods/web:1080/proxy/x"
        );
        // Other hosts, relative links and opaque URLs stay.
        assert_eq!(r.url("http://example.com/x"), "http://example.com/x");
        assert_eq!(r.url("relative/x"), "relative/x");
        assert_eq!(r.url("mailto:a@b"), "mailto:a@b");
        // Already prefixed.
        assert_eq!(
            r.url("/api/v1/namespaces/ns/pods/web:1080/proxy/y"),
            "/api/v1/namespaces/ns/pods/web:1080/proxy/y"
        );
    }

    #[test]
    fn rewrites_html_links_only_in_url_attributes() {
        let r = rw();
        let out = r.html(br#"<a href="/rewriteme">test</a>"#);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<a href="/api/v1/namespaces/ns/pods/web:1080/proxy/rewriteme">test</a>"#
        );
        let page = br#"<!DOCTYPE html><HTML><!-- <a href="/c"> --><IMG SRC=/i.png alt='x y'/><p title="/t">x</p><script>if (a<b) { s = "<a href='/s'>"; }</script></html>"#;
        let out = String::from_utf8(r.html(page)).unwrap();
        assert_eq!(
            out,
            r#"<!DOCTYPE html><html><!-- <a href="/c"> --><img src="/api/v1/namespaces/ns/pods/web:1080/proxy/i.png" alt="x y"/><p title="/t">x</p><script>if (a<b) { s = "<a href='/s'>"; }</script></html>"#
        );
    }
}
