//! Headless Chromium as the remote peer: the runner serves lab/interop/chromium_peer.html on
//! 127.0.0.1 and bridges the page to the SIG/CTL lines over HTTP (tiny_http):
//!   GET  /            the page (its query says who offers, how many messages, video or not)
//!   GET  /next        long poll: the lines waiting for the page, one per line (empty after 20 s)
//!   POST /line        one line from the page (SIG, CTL or RESULT)
//!   POST /log         one line for page.log

use super::{Remote, Settings};
use crate::fsutil::project_root;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Stops serving when dropped.
pub struct Bridge {
    server: Arc<tiny_http::Server>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn serve(
    server: Arc<tiny_http::Server>,
    page: String,
    for_page: mpsc::Receiver<String>,
    from_page: mpsc::Sender<String>,
    page_log: std::fs::File,
) {
    let for_page = Arc::new(Mutex::new(for_page));
    let page_log = Arc::new(Mutex::new(page_log));
    for mut request in server.incoming_requests() {
        let (page, for_page, from_page, page_log) =
            (page.clone(), for_page.clone(), from_page.clone(), page_log.clone());
        // One thread per request: /next blocks while the page's other requests must go through.
        std::thread::spawn(move || {
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let text = match (request.method(), path.as_str()) {
                (tiny_http::Method::Get, "/") => {
                    let header = tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8").unwrap();
                    let _ = request.respond(tiny_http::Response::from_string(page).with_header(header));
                    return;
                }
                (tiny_http::Method::Get, "/next") => {
                    let inbox = for_page.lock().unwrap();
                    let mut lines: Vec<String> = inbox.recv_timeout(Duration::from_secs(20)).into_iter().collect();
                    lines.extend(inbox.try_iter());
                    lines.join("\n")
                }
                (tiny_http::Method::Post, "/line") => {
                    for line in body.lines().filter(|l| !l.is_empty()) {
                        let _ = from_page.send(line.to_string());
                    }
                    String::new()
                }
                (tiny_http::Method::Post, "/log") => {
                    let _ = writeln!(page_log.lock().unwrap(), "{body}");
                    String::new()
                }
                _ => {
                    let _ = request.respond(tiny_http::Response::from_string("not found").with_status_code(404));
                    return;
                }
            };
            let _ = request.respond(tiny_http::Response::from_string(text));
        });
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
    let server = Arc::new(
        tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("starting the page's HTTP server: {e}"))?,
    );
    let port = server.server_addr().to_ip().context("the HTTP server has no IP address")?.port();
    let (to_remote, for_page) = mpsc::channel();
    let (from_page, from_remote) = mpsc::channel();
    let page_log = std::fs::File::create(dir.join("page.log"))?;
    let serving = server.clone();
    std::thread::spawn(move || serve(serving, page, for_page, from_page, page_log));
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
    Ok(Served { bridge: Bridge { server }, url, to_remote, from_remote })
}

pub fn spawn(chromium: &Path, offer: &str, settings: &Settings, dir: &Path) -> Result<Remote> {
    let Served { bridge, url, to_remote, from_remote } = serve_page(offer, settings, dir, "")?;
    let profile = tempfile::Builder::new().prefix("esp-dc-chromium-").tempdir()?;
    let process = Command::new(chromium)
        .args([
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
        ])
        .arg(disabled_features(!settings.no_pqc))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("browser.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", chromium.display()))?;
    Ok(Remote { to_remote, from_remote, process, _bridge: Some(bridge), _profile: Some(profile) })
}
