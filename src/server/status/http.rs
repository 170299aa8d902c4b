//! The metrics address's HTTP: one request per connection, head only (no bodies are
//! read), bounded in size and time; anything else is answered with a status line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::{AdminCmd, AdminKind, Snapshot, page};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the HTTP side serves.
pub(super) struct Site {
    pub metrics: PrometheusHandle,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub admin: mpsc::Sender<AdminCmd>,
    pub token: Option<String>,
    /// Pages rendered so far (shown on the page: a refresh shows a higher number).
    pub renders: AtomicU64,
}

pub(super) async fn serve(listener: TcpListener, site: Site) {
    let site = Arc::new(site);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if site.admin.is_closed() {
            return; // the driver stopped
        }
        let site = site.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, answer(stream, &site)).await;
        });
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub bearer: Option<String>,
}

/// Parses a request head; `None` if it is not HTTP/1.x.
pub(super) fn parse(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let bearer = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| {
            v.trim()
                .strip_prefix("Bearer ")
                .map(|t| t.trim().to_string())
        });
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        bearer,
    })
}

/// The value of `key` in a query string (percent-decoded), if present.
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn answer(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return reply(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let Some(req) = std::str::from_utf8(&head).ok().and_then(parse) else {
        return reply(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        )
        .await;
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/metrics") => {
            let body = site.metrics.render();
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            reply(&mut stream, "200 OK", kind, &body).await
        }
        ("GET", "/") => {
            let n = site.renders.fetch_add(1, Ordering::Relaxed) + 1;
            let snap = site.snapshot.lock().ok().map(|s| s.clone());
            let body = match snap {
                Some(s) => {
                    let refresh = req
                        .query
                        .as_deref()
                        .and_then(|q| query_value(q, "refresh"))
                        .and_then(|r| r.parse().ok())
                        .map_or(page::REFRESH_SECS, |r: u32| r.clamp(1, 3600));
                    page::render(&s, n, refresh)
                }
                None => "status unavailable".into(),
            };
            reply(&mut stream, "200 OK", "text/html; charset=utf-8", &body).await
        }
        ("POST", "/admin/release") | ("POST", "/admin/drop") => {
            let (status, body) = admin(site, &req).await;
            reply(&mut stream, status, "text/plain", &body).await
        }
        _ => reply(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn admin(site: &Site, req: &Request) -> (&'static str, String) {
    let Some(token) = &site.token else {
        return (
            "404 Not Found",
            "admin requests are off (no --admin-token)\n".into(),
        );
    };
    if req.bearer.as_deref() != Some(token.as_str()) {
        return ("401 Unauthorized", "wrong or missing admin token\n".into());
    }
    let Some(name) = req.query.as_deref().and_then(|q| query_value(q, "name")) else {
        return ("400 Bad Request", "missing name=\n".into());
    };
    let kind = if req.path.ends_with("release") {
        AdminKind::Release
    } else {
        AdminKind::Drop
    };
    let (tx, rx) = oneshot::channel();
    let cmd = AdminCmd {
        kind,
        name: name.clone(),
        reply: tx,
    };
    if site.admin.send(cmd).await.is_err() {
        return ("503 Service Unavailable", "server stopping\n".into());
    }
    match (rx.await, kind) {
        (Ok(true), AdminKind::Release) => ("200 OK", format!("released {name}\n")),
        (Ok(true), AdminKind::Drop) => ("200 OK", format!("dropped {name}\n")),
        (Ok(false), AdminKind::Release) => ("404 Not Found", format!("no client named {name}\n")),
        (Ok(false), AdminKind::Drop) => (
            "404 Not Found",
            format!("{name} has no session on this server\n"),
        ),
        (Err(_), _) => ("503 Service Unavailable", "server stopping\n".into()),
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_queries_parse() {
        let r = parse(
            "POST /admin/drop?name=B%20x HTTP/1.1\r\nHost: a\r\nauthorization: Bearer s3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/admin/drop");
        assert_eq!(r.bearer.as_deref(), Some("s3"));
        assert_eq!(
            query_value(r.query.as_deref().unwrap(), "name").as_deref(),
            Some("B x")
        );
        assert_eq!(query_value("name=%zz", "name"), None);
        assert_eq!(query_value("name=%4", "name"), None);
        assert_eq!(query_value("a=1", "name"), None);
        assert!(parse("GET / SPDY\r\n\r\n").is_none());
        assert!(parse("").is_none());
    }
}
