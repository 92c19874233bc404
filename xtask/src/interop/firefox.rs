//! Headless Firefox ESR as the remote peer: the same page and HTTP bridge as Chromium
//! (`chromium.rs`, lab/interop/chromium_peer.html), a fresh profile per case whose user.js holds
//! what /work/shared/firefox-openh264/README.md found to work:
//! * a fake camera the page captures from (never sent): only while capturing does Firefox gather
//!   a 127.0.0.1 host candidate, with `media.peerconnection.ice.loopback`;
//! * Cisco's OpenH264 plugin (GMP) for H.264, from a folder outside the project (it is a test
//!   tool, never copied in): `ESP_DC_FIREFOX_OPENH264`, else `../shared/firefox-openh264` beside
//!   the clone. Without it Firefox has no H.264: it rejects the device's video m-line or offers
//!   none, and the case says by name that its video part was skipped;
//! * post-quantum DTLS as shipped unless the run turns the browsers' off (`Settings::no_pqc`).

use super::chromium::{serve_page, Served};
use super::{Remote, Settings};
use crate::background::{self, Io};
use crate::fsutil::project_root;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::cmd;

/// The folder whose `gmp-gmpopenh264/system-installed/` holds the OpenH264 plugin, if present.
pub fn openh264() -> Option<PathBuf> {
    let folder = std::env::var_os("ESP_DC_FIREFOX_OPENH264")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("../shared/firefox-openh264"));
    plugin_dir(&folder).is_file().then(|| folder.canonicalize().unwrap_or(folder))
}

/// Where ESP_DC_FIREFOX_OPENH264 (or the default) is looked for, for messages.
pub fn openh264_wanted() -> String {
    std::env::var("ESP_DC_FIREFOX_OPENH264")
        .unwrap_or_else(|_| project_root().join("../shared/firefox-openh264").display().to_string())
}

fn plugin_dir(folder: &Path) -> PathBuf {
    folder.join("gmp-gmpopenh264/system-installed/libgmpopenh264.so")
}

/// The profile's user.js: loopback ICE through a fake camera, nothing dialled out at start (this
/// machine has no route out), OpenH264 on or off.
pub fn user_js(openh264: bool, pqc: bool) -> String {
    let mut prefs: Vec<(&str, &str)> = vec![
        ("media.navigator.streams.fake", "true"),
        ("media.navigator.permission.fake", "true"),
        ("media.navigator.permission.disabled", "true"),
        ("media.peerconnection.ice.loopback", "true"),
        ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
        ("media.autoplay.default", "0"),
        ("media.autoplay.blocking_policy", "0"),
        ("browser.shell.checkDefaultBrowser", "false"),
        ("browser.aboutwelcome.enabled", "false"),
        ("browser.startup.homepage_override.mstone", "\"ignore\""),
        ("datareporting.policy.dataSubmissionEnabled", "false"),
        ("toolkit.telemetry.enabled", "false"),
        ("network.captive-portal-service.enabled", "false"),
        ("network.connectivity-service.enabled", "false"),
        ("browser.safebrowsing.malware.enabled", "false"),
        ("browser.safebrowsing.phishing.enabled", "false"),
        ("extensions.update.enabled", "false"),
        ("app.update.auto", "false"),
        ("media.gmp-manager.updateEnabled", "false"),
        ("media.gmp-gmpopenh264.autoupdate", "false"),
        // Further start-up dial-outs, found in a run's MOZ_LOG=nsHttp:3: region, push, Normandy,
        // new-tab ads. Remote settings and a telemetry ping still try (release builds ignore
        // services.settings.server and toolkit.telemetry.server) and fail at once here.
        ("browser.region.network.url", "\"\""),
        ("browser.region.update.enabled", "false"),
        ("datareporting.healthreport.uploadEnabled", "false"),
        ("dom.push.connection.enabled", "false"),
        ("app.normandy.enabled", "false"),
        ("app.normandy.api_url", "\"\""),
        ("browser.newtabpage.enabled", "false"),
        ("browser.newtabpage.activity-stream.feeds.section.topstories", "false"),
        ("browser.newtabpage.activity-stream.showSponsored", "false"),
        ("browser.newtabpage.activity-stream.showSponsoredTopSites", "false"),
        ("browser.startup.page", "0"),
        // The page's console (a POST sent again, a script error) goes to stdout, so to browser.log.
        ("devtools.console.stdout.content", "true"),
    ];
    if openh264 {
        prefs.extend([
            ("media.gmp-gmpopenh264.enabled", "true"),
            ("media.gmp-gmpopenh264.visible", "true"),
            ("media.gmp-gmpopenh264.version", "\"system-installed\""),
            ("media.gmp-provider.enabled", "true"),
        ]);
    } else {
        prefs.push(("media.gmp-gmpopenh264.enabled", "false"));
    }
    if !pqc {
        // As shipped both are on: an ML-KEM key share makes the ClientHello span two DTLS records.
        prefs.extend([("media.webrtc.enable_pq_hybrid_kex", "false"), ("media.webrtc.send_mlkem_keyshare", "false")]);
    }
    prefs.iter().map(|(k, v)| format!("user_pref(\"{k}\", {v});\n")).collect()
}

pub fn spawn(firefox: &Path, openh264: Option<&Path>, offer: &str, settings: &Settings, dir: &Path) -> Result<Remote> {
    let Served { bridge, url, to_remote, from_remote } = serve_page(offer, settings, dir, "&capture=1")?;
    let profile = tempfile::Builder::new().prefix("esp-dc-firefox-").tempdir()?;
    std::fs::write(profile.path().join("user.js"), user_js(openh264.is_some(), !settings.no_pqc))?;
    let sh = xshell::Shell::new()?;
    let profile_dir = profile.path();
    let mut cmd = cmd!(sh, "{firefox} --headless --no-remote --new-instance --profile {profile_dir} {url}")
        .env("MOZ_HEADLESS", "1")
        // No crash reporter dialog or upload; no first-run import.
        .env("MOZ_CRASHREPORTER_DISABLE", "1");
    if let Some(folder) = openh264 {
        cmd = cmd
            .env("MOZ_GMP_PATH", folder.join("gmp-gmpopenh264/system-installed"))
            .env("MOZ_DISABLE_GMP_SANDBOX", "1");
    }
    let browser_log = std::fs::File::create(dir.join("browser.log"))?;
    let process = background::spawn(cmd, Io::Null, Io::File(browser_log.try_clone()?), Io::File(browser_log))
        .with_context(|| format!("starting {}", firefox.display()))?;
    Ok(Remote { to_remote, from_remote, process, _bridge: Some(bridge), _profile: Some(profile) })
}
