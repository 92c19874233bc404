//! Headless Chromium as the remote peer: the runner serves lab/interop/chromium_peer.html on
//! 127.0.0.1 and bridges the page to the SIG/CTL lines over HTTP (tiny_http):
//!   GET  /            the page (its query says who offers, how many messages, video or not)
//!   GET  /next?after=N long poll: the lines for the page from the Nth on, one per line (empty
//!                     after 20 s). The page says how many it has, so a response lost with its
//!                     connection (a browser may drop a kept-alive one and retry the GET) loses
//!                     no line: the retry gets the same lines again.
//!   POST /line?seq=K  the page's Kth batch of lines (SIG, CTL or RESULT); the page retries a
//!                     failed POST with the same K and a batch already taken is not taken twice
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
    // Every line sent to the page so far (its index is what `after` counts) and the receiver
    // still to drain; the next batch number expected from the page.
    let for_page = Arc::new(Mutex::new((Vec::<String>::new(), for_page)));
    let next_batch = Arc::new(Mutex::new(0u64));
    let page_log = Arc::new(Mutex::new(page_log));
    for mut request in server.incoming_requests() {
        let (page, for_page, from_page, page_log, next_batch) =
            (page.clone(), for_page.clone(), from_page.clone(), page_log.clone(), next_batch.clone());
        // One thread per request: /next blocks while the page's other requests must go through.
        std::thread::spawn(move || {
            let url = request.url().to_string();
            let path = url.split('?').next().unwrap_or("").to_string();
            let number = |key: &str| -> u64 {
                let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
                query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
            };
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let text = match (request.method(), path.as_str()) {
                (tiny_http::Method::Get, "/") => {
                    let header = tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8").unwrap();
                    let _ = request.respond(tiny_http::Response::from_string(page).with_header(header));
                    return;
                }
                (tiny_http::Method::Get, "/next") => {
                    let after = number("after") as usize;
                    let mut guard = for_page.lock().unwrap();
                    let (sent, inbox) = &mut *guard;
                    if sent.len() <= after {
                        sent.extend(inbox.recv_timeout(Duration::from_secs(20)));
                    }
                    sent.extend(inbox.try_iter());
                    sent.get(after..).unwrap_or_default().join("\n")
                }
                (tiny_http::Method::Post, "/line") => {
                    let mut expected = next_batch.lock().unwrap();
                    if number("seq") == *expected {
                        *expected += 1;
                        for line in body.lines().filter(|l| !l.is_empty()) {
                            let _ = from_page.send(line.to_string());
                        }
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
