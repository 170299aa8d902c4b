//! The status page: plain HTML rendered here, no script, no build step. It reloads itself
//! every [`REFRESH_SECS`]; each element a test or a reader looks for has an id.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Snapshot;

/// The page reloads itself this often.
pub const REFRESH_SECS: u32 = 2;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Seconds since midnight UTC, as HH:MM:SS.
fn clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// The page for `snap`; `render` numbers the pages served; it reloads every `refresh`
/// seconds ([`REFRESH_SECS`] unless the URL asks for another, `/?refresh=N`).
pub fn render(snap: &Snapshot, render: u64, refresh: u32) -> String {
    let mut h = String::with_capacity(4096);
    let id = escape(&snap.server_id);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>fileapp {id}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 12px;text-align:left}}\
         th{{border-bottom:1px solid #999}}.down{{color:#b00}}</style></head><body>\
         <h1>fileapp index server <span id=\"server-id\">{id}</span></h1>\
         <p>Up <span id=\"uptime\">{}</span>; page <span id=\"render\">{render}</span>, \
         refreshed every {refresh} s.</p>\
         <table><tbody>\
         <tr><th>online clients (all servers)</th><td id=\"online\">{}</td></tr>\
         <tr><th>online clients (this server)</th><td id=\"local-online\">{}</td></tr>\
         <tr><th>offered files</th><td id=\"files\">{}</td></tr>\
         <tr><th>registered names</th><td id=\"names\">{}</td></tr>\
         <tr><th>table version</th><td id=\"version\">{}</td></tr>\
         <tr><th>lag behind the shared log</th><td id=\"lag\">{}</td></tr>\
         <tr><th>relay</th><td id=\"relay\">{}</td></tr>\
         </tbody></table>",
        uptime(snap.started.elapsed()),
        snap.online,
        snap.local_online,
        snap.files,
        snap.names,
        snap.version,
        snap.lag
            .map_or("no shared log".into(), |l| format!("{l} entries")),
        snap.relay.map_or("not in this server".into(), |r| format!(
            "{} sessions, {} waiting; {} paired, {} refused since start",
            r.sessions, r.waiting, r.paired, r.refused
        )),
    );
    h.push_str("<h2>Servers</h2>");
    if snap.servers.is_empty() {
        h.push_str("<p id=\"servers\">This server alone (no shared database).</p>");
    } else {
        h.push_str(
            "<table id=\"servers\"><thead><tr><th>server</th><th>address</th>\
             <th>online clients</th><th>lag</th><th>state</th></tr></thead><tbody>",
        );
        for s in &snap.servers {
            let (class, state) = if s.down {
                (" class=\"down\"", "down")
            } else {
                ("", "up")
            };
            let _ = write!(
                h,
                "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
                escape(&s.id),
                escape(&s.addr),
                s.online,
                s.lag
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>Recent changes</h2><ol id=\"recent\" reversed>");
    for (at, what) in snap.recent.iter().rev() {
        let _ = write!(h, "<li>{} UTC: {}</li>", clock(*at), escape(what));
    }
    h.push_str("</ol></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::shared::ServerLine;

    #[test]
    fn the_page_shows_the_numbers_and_escapes_names() {
        let snap = Snapshot {
            server_id: "a<b>".into(),
            started: std::time::Instant::now(),
            online: 7,
            local_online: 3,
            names: 9,
            files: 12,
            version: 44,
            lag: Some(2),
            relay: Some(crate::reach::relay::RelayNumbers {
                sessions: 5,
                waiting: 1,
                paired: 30,
                refused: 2,
            }),
            servers: vec![ServerLine {
                id: "s2".into(),
                addr: "127.0.0.1:1".into(),
                lag: 5,
                online: 4,
                down: true,
            }],
            recent: [(
                UNIX_EPOCH + Duration::from_secs(3661),
                "<x> online".to_string(),
            )]
            .into_iter()
            .collect(),
        };
        let page = render(&snap, 3, REFRESH_SECS);
        for want in [
            "<td id=\"online\">7</td>",
            "<td id=\"local-online\">3</td>",
            "<td id=\"files\">12</td>",
            "<span id=\"render\">3</span>",
            "a&lt;b&gt;",
            "<tr class=\"down\"><td>s2</td>",
            "01:01:01 UTC: &lt;x&gt; online",
            "content=\"2\"",
            "<td id=\"relay\">5 sessions, 1 waiting; 30 paired, 2 refused since start</td>",
        ] {
            assert!(page.contains(want), "{want} in {page}");
        }
        assert_eq!(uptime(Duration::from_secs(3725)), "1 h 2 min");
    }
}
