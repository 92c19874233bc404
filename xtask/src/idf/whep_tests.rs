//! Host tests of examples/common_components/whep_endpoint, the HTTP and SDP decisions of the
//! whep_camera example in plain C: compiled by gcc with ESP-IDF's warning level made errors and
//! AddressSanitizer/UBSan, run against real offers (Chromium, aiortc) and a fake WebRTC side. No
//! ESP-IDF and no sockets needed, so these run everywhere `cargo test` does; the example's end
//! to end run (esp_http_server, libdatachannel, Chromium) is `e2e::idf_whep_camera_…`.

use crate::fsutil::project_root;

#[test]
fn whep_endpoint_logic_passes_its_host_tests() {
    let component = project_root().join("examples/common_components/whep_endpoint");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_whep_endpoint");
    let sh = xshell::Shell::new().unwrap();
    let (include, source, test) = (
        component.join("include"),
        component.join("whep_endpoint.c"),
        component.join("host_test/test_whep_endpoint.c"),
    );
    let out = xshell::cmd!(
        sh,
        "gcc -std=c11 -D_DEFAULT_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=all -o {exe} -I{include} {source} {test}"
    )
    .quiet()
    .ignore_status()
    .output()
    .expect("gcc (run scripts/setup.sh)");
    assert!(out.status.success(), "gcc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let offers = component.join("host_test/offers");
    let run = xshell::cmd!(sh, "{exe} {offers}").quiet().ignore_status().output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    // The count guards against a test binary that silently checks nothing.
    let checks: usize = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no check count in {stdout:?}"));
    assert!(checks >= 80, "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
