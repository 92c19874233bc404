//! Headless Chromium as the remote peer: the runner serves lab/interop/chromium_peer.html on
//! 127.0.0.1 and bridges the page to the SIG/CTL lines over HTTP (`http.rs`, a thread per
//! connection; `bridge.log` in the case's folder has every request and response with its time):
//!   GET  /            the page (its query says who offers, how many messages, video or not)
//!   GET  /next?after=N long poll: the lines for the page from the Nth on, one per line (empty
//!                     after 20 s). The page says how many it has, so a response lost with its
//!                     connection (a browser may drop a kept-alive one and retry the GET) loses
//!                     no line: the retry gets the same lines again.
//!   POST /line?seq=K  the page's Kth batch of lines (SIG, CTL or RESULT); the page retries a
//!                     failed POST with the same K and a batch already taken is not taken twice
//!   POST /log         one line for page.log

use super::{http, Remote, Settings};
use crate::background::{self, Io};
use crate::fsutil::project_root;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use xshell::cmd;

/// Stops serving when dropped.
pub struct Bridge {
    _server: http::Server,
}

/// The lines for the page: every one sent so far (its index is what `/next?after=` counts),
/// filled by a thread from the runner's channel, so that no request holds a lock while it waits.
#[derive(Default)]
struct ForPage {
    lines: Mutex<Vec<String>>,
    arrived: Condvar,
}

/// The bridge's answer to one request; `page_log` gets `/log` bodies, `bridge_log` one line per
/// request and response (when, what, from which connection), which is how a request that never
/// arrives, or arrives late, is told from a page that never sent it.
fn handle(
    request: &http::Request,
    page: &str,
    for_page: &ForPage,
    from_page: &Mutex<(mpsc::Sender<String>, u64)>,
    page_log: &Mutex<std::fs::File>,
) -> http::Response {
    match (request.method.as_str(), request.path()) {
        ("GET", "/") => {
            http::Response { status: 200, content_type: "text/html; charset=utf-8", body: page.to_string() }
        }
        ("GET", "/next") => {
            let after = request.number("after") as usize;
            let lines = for_page.lines.lock().unwrap();
            let (lines, _) = for_page
                .arrived
                .wait_timeout_while(lines, Duration::from_secs(20), |lines| lines.len() <= after)
                .unwrap();
            http::Response::text(lines.get(after..).unwrap_or_default().join("\n"))
        }
        ("POST", "/line") => {
            let mut guard = from_page.lock().unwrap();
            let (sender, expected) = &mut *guard;
            if request.number("seq") == *expected {
                *expected += 1;
                for line in request.body.lines().filter(|l| !l.is_empty()) {
                    let _ = sender.send(line.to_string());
                }
            }
            http::Response::text(String::new())
        }
        ("POST", "/log") => {
            let _ = writeln!(page_log.lock().unwrap(), "{}", request.body);
            http::Response::text(String::new())
        }
        _ => http::Response { status: 404, content_type: "text/plain", body: "not found".into() },
    }
}

/// mDNS names off: host candidates on 127.0.0.1 as plain addresses. Post-quantum DTLS on, as
/// Chromium ships, unless the run says `--no-pqc`: Chromium 156's ML-KEM key share makes its
/// ClientHello span two DTLS fragments, which mbedTLS 3.6.5's DTLS server refuses ("ClientHello
/// fragmentation not supported"); the device is the DTLS client in both offer directions
/// (dtls_client_when_offering), so only `--device-dtls-server` meets that refusal.
fn disabled_features(pqc: bool) -> &'static str {
    if pqc {
        "--disable-features=WebRtcHideLocalIpsWithMdns"
    } else {
        "--disable-features=WebRtcHideLocalIpsWithMdns,WebRtcPqcForDtls"
    }
}

/// The page's lines in and out, and its URL, for any browser (Firefox too: `firefox.rs`).
pub struct Served {
    pub bridge: Bridge,
    pub url: String,
    pub to_remote: mpsc::Sender<String>,
    pub from_remote: mpsc::Receiver<String>,
}

/// Serves lab/interop/chromium_peer.html with its bridge; `extra` is appended to the page's query.
pub fn serve_page(offer: &str, settings: &Settings, dir: &Path, extra: &str) -> Result<Served> {
    let page = std::fs::read_to_string(project_root().join("lab/interop/chromium_peer.html"))
        .context("reading lab/interop/chromium_peer.html")?;
    let (to_remote, inbox) = mpsc::channel::<String>();
    let (from_page, from_remote) = mpsc::channel();
    let for_page = Arc::new(ForPage::default());
    let filling = for_page.clone();
    std::thread::spawn(move || {
        for line in inbox {
            filling.lines.lock().unwrap().push(line);
            filling.arrived.notify_all();
        }
    });
    let from_page = Mutex::new((from_page, 0u64));
    let page_log = Mutex::new(std::fs::File::create(dir.join("page.log"))?);
    let bridge_log = Mutex::new(std::fs::File::create(dir.join("bridge.log"))?);
    let started = Instant::now();
    let server = http::Server::start(move |request| {
        let ms = || started.elapsed().as_millis();
        let (method, target, peer) = (&request.method, &request.target, request.peer.port());
        let _ = writeln!(
            bridge_log.lock().unwrap(),
            "{:>7} ms  :{peer} {method} {target} ({} B)",
            ms(),
            request.body.len()
        );
        let response = handle(request, &page, &for_page, &from_page, &page_log);
        let _ = writeln!(
            bridge_log.lock().unwrap(),
            "{:>7} ms  :{peer} {} for {target} ({} B)",
            ms(),
            response.status,
            response.body.len()
        );
        response
    })?;
    let port = server.port();
    let video = if settings.refuse_video {
        "refuse"
    } else if settings.video {
        "1"
    } else {
        "0"
    };
    let url = format!(
        "http://127.0.0.1:{port}/?offer={offer}&messages={}&frames={}&video={video}&trickle={}{extra}",
        settings.messages,
        settings.frames,
        u8::from(settings.trickle)
    );
    Ok(Served { bridge: Bridge { _server: server }, url, to_remote, from_remote })
}

pub fn spawn(chromium: &Path, offer: &str, settings: &Settings, dir: &Path) -> Result<Remote> {
    let Served { bridge, url, to_remote, from_remote } = serve_page(offer, settings, dir, "")?;
    let profile = tempfile::Builder::new().prefix("esp-dc-chromium-").tempdir()?;
    let sh = xshell::Shell::new()?;
    let (features, user_data) =
        (disabled_features(!settings.no_pqc), format!("--user-data-dir={}", profile.path().display()));
    let cmd = cmd!(sh, "{chromium} {CHROMIUM_FLAGS...} {features} {user_data} {url}");
    let log = std::fs::File::create(dir.join("browser.log"))?;
    let process = background::spawn(cmd, Io::Null, Io::Null, Io::File(log))
        .with_context(|| format!("starting {}", chromium.display()))?;
    Ok(Remote { to_remote, from_remote, process, _bridge: Some(bridge), _profile: Some(profile) })
}

/// Headless Chromium as the interop runs start it, before the feature list, profile and page.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    // Without these three it dials out at start, and this machine has no route out.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--enable-logging=stderr",
    "--v=0",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// One HTTP/1.1 request on its own connection; the response body.
    fn request(url: &str, method: &str, path: &str, body: &str) -> String {
        let authority = url.trim_start_matches("http://").split('/').next().unwrap();
        let mut stream = std::net::TcpStream::connect(authority).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    /// A browser may lose a response with its connection and send the request again: the bridge
    /// must then give the page the same lines again and take a batch from the page only once.
    #[test]
    fn a_repeated_poll_or_post_loses_and_doubles_no_line() {
        let dir = std::env::temp_dir().join(format!("esp-dc-bridge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let served = serve_page("device", &Settings::default(), &dir, "").unwrap();
        served.to_remote.send("CTL open".into()).unwrap();
        served.to_remote.send("SIG 0 answer x".into()).unwrap();
        // A poll answers with the lines there are: wait until both are, so that the next two
        // polls must give the same two.
        assert_eq!(request(&served.url, "GET", "/next?after=1", ""), "SIG 0 answer x");
        let first = request(&served.url, "GET", "/next?after=0", "");
        assert_eq!(first, "CTL open\nSIG 0 answer x");
        assert_eq!(request(&served.url, "GET", "/next?after=0", ""), first, "a retried poll gets the lines again");
        served.to_remote.send("CTL closed".into()).unwrap();
        assert_eq!(request(&served.url, "GET", "/next?after=2", ""), "CTL closed");

        request(&served.url, "POST", "/line?seq=0", "CTL done");
        request(&served.url, "POST", "/line?seq=0", "CTL done");
        request(&served.url, "POST", "/line?seq=1", "RESULT ok");
        let got: Vec<String> = served.from_remote.try_iter().collect();
        assert_eq!(got, ["CTL done", "RESULT ok"], "a retried POST is taken once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
