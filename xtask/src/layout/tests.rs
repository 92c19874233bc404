use super::*;
use crate::exit::Failure;
use crate::kconfig_keys;
use crate::policy::{knob, KNOBS};
use std::process::ExitCode;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(Policy::path_for(name)).unwrap()
}

/// libdatachannel's patch list as policies/lean.toml spells it (the cases below remove it).
const LEAN_LDC_PATCHES: &str = "patches = [\n    \"libdatachannel/knobs.patch\",\n    \"libdatachannel/inline-constants.patch\",\n    \"libdatachannel/lazy-log-counters.patch\",\n    \"libdatachannel/fewer-locks.patch\",\n    \"libdatachannel/lazy-queues.patch\",\n    # juice-driven-by-pool.patch: with libjuice.driven_by_pool, an idle pool worker polls libjuice.\n    \"libdatachannel/juice-driven-by-pool.patch\",\n    # nack-window.patch: RtcpNackResponder's store by time and bytes (nack_window_ms, nack_max_bytes).\n    \"libdatachannel/nack-window.patch\",\n]\n";

/// Lean without libdatachannel's patches, and without the knobs whose code lives in patches of
/// their own (a policy may not set them without their patches: policy::KNOB_PATCHES).
fn without_ldc_patches(lean: &str) -> String {
    let text = with(lean, LEAN_LDC_PATCHES, "");
    let text = with(&text, "driven_by_pool = 1\n", "");
    let text = with(&text, "nack_window_ms = 450\n", "");
    with(&text, "nack_max_bytes = 57344\n", "")
}

/// Replaces `from` (which must be there) by `to`.
fn with(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the policy has no `{from}`");
    text.replacen(from, to, 1)
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    /// Writes a policy file outside the output root (so snapshots do not see it).
    fn policy(&self, text: &str) -> PathBuf {
        let dir = self.root().with_extension("policies");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
    /// Every file under the root with its bytes: what "nothing was written" compares.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        walkdir::WalkDir::new(self.root())
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().strip_prefix(self.root()).unwrap().to_path_buf(), std::fs::read(e.path()).unwrap()))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.root().with_extension("policies"));
    }
}

fn plan_of(text: &str) -> Plan {
    let scratch = Scratch::new();
    let path = scratch.policy(text);
    plan(scratch.root(), &path).unwrap_or_else(|e| panic!("plan failed: {e}"))
}

fn file(plan: &Plan, component: &str, name: &str) -> String {
    String::from_utf8(plan.components[component].files[Path::new(name)].clone()).unwrap()
}

fn defaults(plan: &Plan) -> String {
    String::from_utf8(plan.files[Path::new("sdkconfig.defaults")].clone()).unwrap()
}

fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(0)
}

#[test]
fn lean_lays_out_every_component_with_its_upstream_sources() {
    let plan = plan_of(&shipped("lean"));
    // A root other than this project (as every scratch root is) also gets our own components.
    assert_eq!(plan.components.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut g = [components::generated(), components::ours()].concat();
        g.sort();
        g
    });
    for (name, tree) in plan.components.iter().filter(|(name, _)| components::generated().contains(&name.as_str())) {
        for f in ["CMakeLists.txt", "Kconfig", "idf_component.yml"] {
            assert!(tree.files.contains_key(Path::new(f)), "{name} lacks {f}");
        }
        let cmake = file(&plan, name, "CMakeLists.txt");
        assert!(cmake.contains("idf_component_register("), "{name}");
        // Every source the CMakeLists names is in the staged upstream copy.
        let sources: Vec<&str> = cmake
            .split_whitespace()
            .filter(|w| w.starts_with("upstream/") && (w.ends_with(".c") || w.ends_with(".cpp")))
            .collect();
        if name != "plog" {
            assert!(sources.len() > 10, "{name}: only {} sources listed", sources.len());
        }
        for src in sources {
            assert!(
                tree.files.contains_key(Path::new(src)),
                "{name}: CMakeLists.txt lists {src}, which upstream does not have"
            );
        }
        // Each include directory exists too.
        for dir in cmake
            .split_whitespace()
            .map(|w| w.trim_end_matches(')'))
            .filter(|w| w.starts_with("upstream/") && !w.contains('.'))
        {
            assert!(tree.files.keys().any(|k| k.starts_with(dir)), "{name}: include dir {dir} is empty");
        }
    }
    let ldc = file(&plan, "libdatachannel", "CMakeLists.txt");
    for needed in [
        "USE_MBEDTLS=1",
        "RTC_ENABLE_MEDIA=1",
        "RTC_ENABLE_WEBSOCKET=0",
        "REQUIRES esp_dc_port",
        "mbedtls",
        "esp_netif",
    ] {
        assert!(ldc.contains(needed), "libdatachannel CMakeLists lacks {needed}");
    }
    let sctp = file(&plan, "usrsctp", "CMakeLists.txt");
    for needed in ["__Userspace__", "SCTP_SIMPLE_ALLOCATOR", "SCTP_PROCESS_LEVEL_LOCKS"] {
        assert!(sctp.contains(needed), "usrsctp lacks {needed}");
    }
    assert!(file(&plan, "libsrtp", "CMakeLists.txt").contains("aes_gcm_mbedtls.c"));
}

#[test]
fn libsrtp_is_redirected_under_lean_and_not_under_stock() {
    let lean = plan_of(&shipped("lean"));
    let stock = plan_of(&shipped("stock"));
    // The CMakeLists reads the choice from Kconfig; the policy sets it in sdkconfig.defaults.
    let srtp = file(&lean, "libsrtp", "CMakeLists.txt");
    let redirect = srtp.find("if(CONFIG_ESP_DC_LIBSRTP_REDIRECT_MALLOC)").expect("redirect option");
    assert!(srtp[redirect..].contains("--include=${esp_dc_port_dir}/include/esp_dc_alloc_redirect.h"), "{srtp}");
    let psram = srtp.find("if(CONFIG_ESP_DC_LIBSRTP_HEAP_PSRAM)").expect("heap choice");
    assert!(srtp[psram..]
        .starts_with("if(CONFIG_ESP_DC_LIBSRTP_HEAP_PSRAM)\n    set(esp_dc_alloc_caps \"(MALLOC_CAP_SPIRAM)\")"));
    assert!(srtp.contains("\"ESP_DC_ALLOC_CAPS=${esp_dc_alloc_caps}\""));
    assert!(defaults(&lean).contains("\nCONFIG_ESP_DC_LIBSRTP_REDIRECT_MALLOC=y\nCONFIG_ESP_DC_LIBSRTP_HEAP_PSRAM=y\n"));
    assert!(defaults(&stock)
        .contains("\n# CONFIG_ESP_DC_LIBSRTP_REDIRECT_MALLOC is not set\nCONFIG_ESP_DC_LIBSRTP_HEAP_DEFAULT=y\n"));
    // stock stays unpatched.
    assert!(!String::from_utf8(
        stock.components["libdatachannel"].files[Path::new("upstream/src/impl/internals.hpp")].clone()
    )
    .unwrap()
    .contains("RTC_ESP_SCTP_MAX_STREAMS"));
}

#[test]
fn lean_patches_apply_to_components_and_to_the_whole_stack() {
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let sources = upstream::locate().unwrap();
    let ldc = upstream::stage_component(&sources, &lean, "libdatachannel").unwrap().unwrap();
    let text = |t: &Tree, p: &str| String::from_utf8(t.files[Path::new(p)].clone()).unwrap();
    assert!(text(&ldc, "src/impl/internals.hpp").contains("#ifdef RTC_ESP_SCTP_MAX_STREAMS"));
    assert!(text(&ldc, "src/impl/internals.hpp").contains("#ifdef RTC_ESP_RECV_QUEUE_LIMIT"));
    assert!(text(&ldc, "src/impl/init.cpp").contains("RTC_ESP_THREADPOOL_SIZE"));
    assert!(text(&ldc, "src/impl/sctptransport.cpp").contains("RTC_ESP_SCTP_RECV_CHUNK_BYTES"));
    let juice = upstream::stage_component(&sources, &lean, "libjuice").unwrap().unwrap();
    assert!(text(&juice, "src/ice.h").contains("#ifndef ICE_MAX_CANDIDATES_COUNT"));
    assert!(text(&juice, "src/agent.h").contains("ICE_MAX_STUN_SERVERS_COUNT"));
    // usrsctp guards its hash sizes upstream, so its knobs need no patch.
    let sctp = upstream::stage_component(&sources, &lean, "usrsctp").unwrap().unwrap();
    let constants = text(&sctp, "usrsctplib/netinet/sctp_constants.h");
    assert!(constants.contains("#ifndef SCTP_TCBHASHSIZE") && constants.contains("#ifndef SCTP_PCBHASHSIZE"));
    // The ESP-IDF port patches reach every policy's component tree and the host tree alike: the
    // lab compiles what idf.py compiles (the RNG hunks are inert there, ESP_PLATFORM being unset).
    for name in ["lean", "stock"] {
        let plan = plan_of(&shipped(name));
        let env = String::from_utf8(
            plan.components["usrsctp"].files[Path::new("upstream/usrsctplib/user_environment.c")].clone(),
        )
        .unwrap();
        assert!(env.contains("#elif defined(ESP_PLATFORM)") && env.contains("esp_fill_random"), "{name}");
        let juice =
            String::from_utf8(plan.components["libjuice"].files[Path::new("upstream/src/random.c")].clone()).unwrap();
        assert!(juice.contains("#elif defined(ESP_PLATFORM)") && juice.contains("esp_fill_random"), "{name}");
    }
    // The lab builds the whole tree with the same policy patches at deps/ paths.
    let stack = upstream::stage_stack(&sources, &lean).unwrap();
    assert!(text(&stack, "deps/libjuice/src/ice.h").contains("#ifndef ICE_MAX_CANDIDATES_COUNT"));
    assert!(text(&stack, "src/impl/internals.hpp").contains("#ifdef RTC_ESP_SCTP_MAX_STREAMS"));
    assert!(text(&stack, "deps/usrsctp/usrsctplib/user_environment.c").contains("#elif defined(ESP_PLATFORM)"));
    assert!(text(&stack, "src/impl/certificate.cpp").contains("mbedtls_x509write_crt_set_serial_raw"));
}

/// Sets a knob in the policy text, inserting it into the component's knob table if absent.
fn set_knob(text: &str, component: &str, name: &str, value: i64) -> String {
    let header = format!("[components.{component}.knobs]\n");
    let mut out: Vec<String> = Vec::new();
    let mut in_table = false;
    let mut seen_header = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_table = format!("{line}\n") == header;
            if in_table {
                seen_header = true;
                out.push(line.to_string());
                out.push(format!("{name} = {value}"));
                continue;
            }
        }
        if in_table && line.split('=').next().map(str::trim) == Some(name) {
            continue;
        }
        out.push(line.to_string());
    }
    if !seen_header {
        out.push(header.trim_end().to_string());
        out.push(format!("{name} = {value}"));
    }
    out.join("\n") + "\n"
}

#[test]
fn every_knob_reaches_kconfig_sdkconfig_and_cmake() {
    let lean_text = shipped("lean");
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    for spec in KNOBS {
        let current = lean.knob_value(spec);
        // The DTLS read buffer may not go below mbedtls.ssl_in_content_len (policy check): go up.
        let new = if current == spec.min || spec.name == "dtls_recv_buffer_bytes" { spec.max } else { spec.min };
        let plan = plan_of(&set_knob(&lean_text, spec.component, spec.name, new));
        let symbol = spec.kconfig_symbol();
        assert!(defaults(&plan).contains(&format!("\nCONFIG_{symbol}={new}\n")), "{symbol} not in sdkconfig.defaults");
        let kconfig = file(&plan, spec.component, "Kconfig");
        let at = kconfig.find(&format!("config {symbol}\n")).unwrap_or_else(|| panic!("{symbol} not in Kconfig"));
        // Kconfig's default is upstream's value for every policy; the policy's is in sdkconfig.defaults.
        let entry = &kconfig[at..kconfig[at + 1..].find("\n    config ").map(|e| at + 1 + e).unwrap_or(kconfig.len())];
        assert!(entry.contains(&format!("default {}\n", spec.stock)), "{symbol}: Kconfig default is not upstream's");
        assert!(kconfig[at..].contains(spec.help.split_whitespace().next().unwrap()), "{symbol}: help missing");
        if let crate::policy::KnobEffect::Define(define) = spec.effect {
            let cmake = file(&plan, spec.component, "CMakeLists.txt");
            assert!(
                cmake.contains(&format!("\"{define}=${{CONFIG_{symbol}}}\"")),
                "{symbol}: no definition in CMakeLists.txt"
            );
        }
    }
}

/// For each typed field: the policy text change and what must then appear in which output.
#[test]
fn every_policy_field_has_an_effect() {
    let lean = shipped("lean");
    let sd = "sdkconfig.defaults";
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("policy.name", with(&lean, "name = \"lean\"", "name = \"mine\""), STAMP, "policy = \"mine\""),
        ("policy.description", with(&lean, "description = \"All", "description = \"Zebra"), sd, "# Policy `lean`: Zebra"),
        ("components.libsrtp.placement", with(&lean, "[components.libsrtp]\nplacement = \"psram\"", "[components.libsrtp]\nplacement = \"internal\""), sd, "\nCONFIG_ESP_DC_LIBSRTP_HEAP_INTERNAL=y\n"),
        ("components.usrsctp.placement", with(&lean, "[components.usrsctp]\nplacement = \"psram\"", "[components.usrsctp]\nplacement = \"default\""), sd, "\nCONFIG_ESP_DC_USRSCTP_HEAP_DEFAULT=y\n"),
        ("components.plog.placement", with(&lean, "[components.plog]\nplacement = \"psram\"", "[components.plog]\nplacement = \"internal\""), sd, "placement `internal` has no option"),
        ("components.esp_dc_port.placement", with(&lean, "[components.esp_dc_port]\nplacement = \"psram\"", "[components.esp_dc_port]\nplacement = \"internal\""), sd, "CONFIG_ESP_DC_PORT_OWN_PLACEMENT_INTERNAL=y"),
        ("components.libjuice.force_include", with(&lean, "[components.libjuice]\nplacement = \"psram\"\nforce_include = \"esp_dc_alloc_redirect.h\"", "[components.libjuice]\nplacement = \"psram\"\nforce_include = \"\""), sd, "\n# CONFIG_ESP_DC_LIBJUICE_REDIRECT_MALLOC is not set\n"),
        ("components.usrsctp.definitions", with(&lean, "[components.usrsctp]\n", "[components.usrsctp]\ndefinitions = { SCTP_DEBUG_LEVEL = 3, NAME = \"x\" }\n"), sd, "\nCONFIG_ESP_DC_USRSCTP_EXTRA_DEFINITIONS=\"NAME=x;SCTP_DEBUG_LEVEL=3\"\n"),
        ("components.libdatachannel.patches", without_ldc_patches(&lean), STAMP, "patches = [\"libjuice/knobs.patch\", \"libjuice/ice-field-knobs.patch\", \"libjuice/driven-by-pool.patch\", \"usrsctp/no-iterator-thread.patch\"]"),
        ("components.libdatachannel.threads.stack_bytes", with(&lean, "stack_bytes = 15360", "stack_bytes = 12288"), sd, "CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES=12288"),
        ("pthread.stack_placement + threads.placement", with(&with(&lean, "stack_placement = \"psram\"", "stack_placement = \"internal\""), "stack_bytes = 15360, placement = \"psram\"", "stack_bytes = 15360, placement = \"internal\""), sd, "CONFIG_ESP_DC_PORT_THREAD_STACK_INTERNAL=y\n"),
        ("memory.spiram", with(&lean.replace("\"psram\"", "\"internal\""), "spiram = true", "spiram = false"), sd, "# CONFIG_SPIRAM is not set"),
        ("memory.spiram_malloc", with(&lean, "spiram_malloc = \"malloc\"", "spiram_malloc = \"caps-only\""), sd, "CONFIG_SPIRAM_USE_CAPS_ALLOC=y"),
        ("memory.always_internal_bytes", with(&lean, "always_internal_bytes = 512", "always_internal_bytes = 1024"), sd, "CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL=1024"),
        ("memory.reserve_internal_bytes", with(&lean, "reserve_internal_bytes = 32768", "reserve_internal_bytes = 65536"), sd, "CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL=65536"),
        ("mbedtls.allocator", with(&lean, "allocator = \"external\"", "allocator = \"custom\""), sd, "CONFIG_MBEDTLS_CUSTOM_MEM_ALLOC=y"),
        ("mbedtls.ssl_in_content_len", with(&with(&lean, "ssl_in_content_len = 1536", "ssl_in_content_len = 8192"), "dtls_recv_buffer_bytes = 1536", "dtls_recv_buffer_bytes = 8192"), sd, "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=8192"),
        ("mbedtls.ssl_out_content_len", with(&lean, "ssl_out_content_len = 1536", "ssl_out_content_len = 4096"), sd, "CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN=4096"),
        ("mbedtls.dynamic_buffer", with(&lean, "dynamic_buffer = false", "dynamic_buffer = true"), sd, "CONFIG_MBEDTLS_DYNAMIC_BUFFER=y"),
        ("pthread.default_stack_bytes", with(&lean, "default_stack_bytes = 8192", "default_stack_bytes = 6144"), sd, "CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT=6144"),
        ("pthread.stack_placement (no threads entry)", with(&with(&lean, "threads = { stack_bytes = 15360, placement = \"psram\" }\n", ""), "stack_placement = \"psram\"", "stack_placement = \"default\""), sd, "# CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM is not set"),
        ("cxx.new_placement", with(&lean, "new_placement = \"psram\"", "new_placement = \"internal\""), sd, "CONFIG_ESP_DC_PORT_NEW_PLACEMENT_INTERNAL=y"),
        ("cxx.emergency_pool_bytes", with(&lean, "emergency_pool_bytes = 0", "emergency_pool_bytes = 1024"), sd, "CONFIG_COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE=1024"),
        ("cxx.shared_ptr_lock_policy (sdkconfig)", with(&lean, "shared_ptr_lock_policy = \"atomic\"", "shared_ptr_lock_policy = \"mutex\""), sd, "CONFIG_ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX=y"),
        ("sync.placement", with(&lean, "[sync]\nplacement = \"with_owner\"", "[sync]\nplacement = \"internal\""), sd, "CONFIG_ESP_DC_PORT_SYNC_PLACEMENT_INTERNAL=y"),
        ("components.libsrtp.static_placement (sdkconfig)", lean.replace("static_placement = \"psram\"\n", ""), sd, "# CONFIG_SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY"),
        ("components.usrsctp.static_placement (CMake)", with(&lean, "[components.usrsctp]\nplacement = \"psram\"\nforce_include = \"esp_dc_alloc_redirect.h\"\n# .bss (zero-initialised statics) linked into PSRAM (extram_bss); .data stays internal.\nstatic_placement = \"psram\"", "[components.usrsctp]\nplacement = \"psram\"\nforce_include = \"esp_dc_alloc_redirect.h\"\nstatic_placement = \"internal\""), sd, "\nCONFIG_ESP_DC_USRSCTP_STATIC_INTERNAL=y\n"),
        ("heap_tracing.enabled", with(&lean, "enabled = false", "enabled = true"), sd, "CONFIG_HEAP_TRACING_STANDALONE=y"),
        ("heap_tracing.stack_depth", with(&with(&lean, "enabled = false", "enabled = true"), "stack_depth = 10", "stack_depth = 6"), sd, "CONFIG_HEAP_TRACING_STACK_DEPTH=6"),
        ("heap_tracing.records", with(&lean, "records = 1000", "records = 250"), sd, "CONFIG_ESP_DC_PORT_HEAP_TRACE_RECORDS=250"),
        ("sdkconfig_extra", with(&lean, "[sdkconfig_extra]\n", "[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"16\"\n"), sd, "\nCONFIG_LWIP_MAX_SOCKETS=16\n"),
    ];
    let base = plan_of(&lean);
    for (field, text, output, expected) in cases {
        let plan = plan_of(&text);
        let (base_text, got) = if plan.files.contains_key(Path::new(output)) {
            let get = |p: &Plan| String::from_utf8(p.files[Path::new(output)].clone()).unwrap();
            (get(&base), get(&plan))
        } else {
            let (component, name) = output.split_once('/').unwrap();
            (file(&base, component, name), file(&plan, component, name))
        };
        assert!(got.contains(expected), "{field}: {output} lacks `{expected}`:\n{got}");
        assert!(
            !base_text.contains(expected),
            "{field}: `{expected}` is in lean's {output} already; the case proves nothing"
        );
    }

    // The patch list also changes the code: without the patch the knob is not compiled in.
    let unpatched = plan_of(&without_ldc_patches(&lean));
    let internals = |p: &Plan| {
        String::from_utf8(p.components["libdatachannel"].files[Path::new("upstream/src/impl/internals.hpp")].clone())
            .unwrap()
    };
    assert!(
        internals(&base).contains("RTC_ESP_SCTP_MAX_STREAMS")
            && !internals(&unpatched).contains("RTC_ESP_SCTP_MAX_STREAMS")
    );

    // Fields other commands read (lab, size-check, audit) do not change the tree.
    let lab_only = plan_of(&with(
        &with(&lean, "stack_margin_percent = 25", "stack_margin_percent = 40"),
        "\ninit_bytes = ",
        "\ninit_bytes = 1",
    ));
    assert_eq!(lab_only.components, base.components);
    assert_eq!(defaults(&lab_only), defaults(&base));
}

#[test]
fn static_placement_psram_links_the_bss_into_external_ram() {
    let lean = plan_of(&shipped("lean"));
    let stock = plan_of(&shipped("stock"));
    for component in crate::policy::STATIC_PLACEABLE {
        // One fragment for every policy; the component's Kconfig choice decides.
        let fragment = file(&lean, component, "linker.lf");
        assert_eq!(fragment, file(&stock, component, "linker.lf"));
        assert!(fragment.contains(&format!("archive: lib{component}.a")), "{component}:\n{fragment}");
        let prefix = component.to_uppercase();
        assert!(fragment.contains(&format!(
            "    if ESP_DC_{prefix}_STATIC_PSRAM = y && ESP_ALLOW_BSS_SEG_EXTERNAL_MEMORY = y:\n        * (esp_dc_extram_bss)\n"
        )));
        assert!(file(&lean, component, "CMakeLists.txt").contains("LDFRAGMENTS linker.lf"));
        assert!(defaults(&lean).contains(&format!("\nCONFIG_ESP_DC_{prefix}_STATIC_PSRAM=y\n")));
        assert!(defaults(&stock).contains(&format!("\nCONFIG_ESP_DC_{prefix}_STATIC_INTERNAL=y\n")));
    }
    assert!(!lean.components["plog"].files.contains_key(Path::new("linker.lf")));
    // The scheme they name is esp_dc_port's, in every build that has the stack: ESP-IDF's own
    // extram_bss lives in esp_wifi's fragment, which a chip without Wi-Fi (the P4) never reads.
    let port = crate::fsutil::project_root().join("components/esp_dc_port");
    let scheme = std::fs::read_to_string(port.join("linker.lf")).unwrap();
    assert!(scheme.contains("[scheme:esp_dc_extram_bss]\nentries:\n    bss -> extern_ram\n    common -> extern_ram\n    legacy_bss -> extern_ram\n"));
    let port_cmake = std::fs::read_to_string(port.join("CMakeLists.txt")).unwrap();
    assert!(port_cmake.contains("LDFRAGMENTS linker.lf"), "{port_cmake}");
    assert!(
        port_cmake.contains("set(network_requires lwip esp_netif esp_psram)\nif(target STREQUAL \"linux\")"),
        "{port_cmake}"
    );
    assert!(defaults(&lean).contains("CONFIG_SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY=y"));
    assert!(defaults(&stock).contains("# CONFIG_SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY is not set"));

    // plog and esp_dc_port have no generated library of their own; without PSRAM nothing can move.
    let refused = |text: String, key: &str| {
        let err = Policy::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    };
    let lean_text = shipped("lean");
    refused(
        with(
            &lean_text,
            "[components.plog]\nplacement = \"psram\"\n",
            "[components.plog]\nplacement = \"psram\"\nstatic_placement = \"psram\"\n",
        ),
        "components.plog.static_placement",
    );
    refused(
        with(
            &lean_text.replace("\"psram\"", "\"internal\""),
            "static_placement = \"internal\"\n",
            "static_placement = \"psram\"\n",
        )
        .replace("spiram = true", "spiram = false"),
        "static_placement: `psram` needs `memory.spiram = true`",
    );
}

/// The generated build files depend on the component only: lean and stock configured into two
/// applications give byte-identical CMakeLists.txt, Kconfig, linker.lf and idf_component.yml, and
/// the policies differ only in sdkconfig.defaults (and the patched upstream sources).
#[test]
fn lean_and_stock_generate_identical_component_build_files() {
    let (a, b) = (Scratch::new(), Scratch::new());
    configure_into(a.root(), &Policy::path_for("lean"), false, true).unwrap();
    configure_into(b.root(), &Policy::path_for("stock"), false, true).unwrap();
    for component in components::generated() {
        let dir = Path::new("components").join(component);
        let names =
            ["CMakeLists.txt", "Kconfig", "linker.lf", "idf_component.yml", crate::render::RUNTIME_KNOBS_HEADER];
        let read = |root: &Path, name: &str| std::fs::read(root.join(&dir).join(name)).ok();
        for name in names {
            let lean = read(a.root(), name);
            assert_eq!(lean, read(b.root(), name), "{component}/{name} differs between lean and stock");
            let expected = match name {
                "linker.lf" => crate::policy::STATIC_PLACEABLE.contains(&component),
                crate::render::RUNTIME_KNOBS_HEADER => component == "libdatachannel",
                _ => true,
            };
            assert_eq!(lean.is_some(), expected, "{component}/{name}");
            let text = String::from_utf8(lean.unwrap_or_default()).unwrap();
            assert!(!text.contains("lean") && !text.contains("stock"), "{component}/{name} names a policy:\n{text}");
        }
    }
    let sd = |s: &Scratch| std::fs::read_to_string(s.root().join("sdkconfig.defaults")).unwrap();
    assert_ne!(sd(&a), sd(&b));
    // A force_include the Kconfig's bool cannot express is refused with file, line and key.
    let lean = shipped("lean");
    let text = with(
        &lean,
        "[components.usrsctp]\nplacement = \"psram\"\nforce_include = \"esp_dc_alloc_redirect.h\"",
        "[components.usrsctp]\nplacement = \"psram\"\nforce_include = \"esp_dc_port.h\"",
    );
    let path = a.policy(&text);
    let err = plan(a.root(), &path).unwrap_err();
    let line = text.lines().position(|l| l.contains("\"esp_dc_port.h\"")).unwrap() + 1;
    assert_eq!(exit_code_of(&err), 2);
    assert!(
        err.to_string()
            .starts_with(&format!("{}:{line}: components.usrsctp.force_include: `esp_dc_port.h`", path.display())),
        "{err}"
    );
}

#[test]
fn configure_is_idempotent_and_check_detects_drift() {
    let scratch = Scratch::new();
    let lean = Policy::path_for("lean");
    assert_eq!(configure_into(scratch.root(), &lean, false, true).unwrap(), ExitCode::SUCCESS);
    assert!(scratch.root().join("components/libdatachannel/upstream/src/impl/init.cpp").is_file());
    let stamp = read_stamp(scratch.root()).unwrap().expect("stamp written");
    let lean_policy = Policy::load(&lean).unwrap();
    assert_eq!(stamp.policy, "lean");
    assert_eq!(stamp.path, "policies/lean.toml");
    assert_eq!(
        stamp.patches,
        vec![
            "libdatachannel/knobs.patch".to_string(),
            "libdatachannel/inline-constants.patch".to_string(),
            "libdatachannel/lazy-log-counters.patch".to_string(),
            "libdatachannel/fewer-locks.patch".to_string(),
            "libdatachannel/lazy-queues.patch".to_string(),
            "libdatachannel/juice-driven-by-pool.patch".to_string(),
            "libdatachannel/nack-window.patch".to_string(),
            "libjuice/knobs.patch".to_string(),
            "libjuice/ice-field-knobs.patch".to_string(),
            "libjuice/driven-by-pool.patch".to_string(),
            "usrsctp/no-iterator-thread.patch".to_string(),
        ]
    );
    assert_eq!(stamp.hash, policy_hash(&lean_policy, &shipped("lean")).unwrap());
    let stock_policy = Policy::load(&Policy::path_for("stock")).unwrap();
    assert_ne!(stamp.hash, policy_hash(&stock_policy, &shipped("stock")).unwrap());
    assert_eq!(read_stamp(Scratch::new().root()).unwrap(), None);
    let first = scratch.snapshot();
    // Second run: nothing to change, nothing touched.
    let plan = plan(scratch.root(), &lean).unwrap();
    assert!(drift(&plan, scratch.root()).unwrap().is_empty());
    assert!(apply(&plan, scratch.root()).unwrap().is_empty());
    assert_eq!(scratch.snapshot(), first);
    assert_eq!(configure_into(scratch.root(), &lean, true, true).unwrap(), ExitCode::SUCCESS);

    // Drift: an edited generated file, a stray upstream file, and another policy.
    std::fs::write(scratch.root().join("components/usrsctp/Kconfig"), "edited").unwrap();
    std::fs::write(scratch.root().join("components/plog/upstream/stray.h"), "x").unwrap();
    let before = scratch.snapshot();
    let drifted = drift(&plan, scratch.root()).unwrap();
    assert_eq!(
        drifted,
        vec![PathBuf::from("components/plog/upstream/stray.h"), PathBuf::from("components/usrsctp/Kconfig")]
    );
    assert_eq!(configure_into(scratch.root(), &lean, true, true).unwrap(), ExitCode::from(1));
    assert_eq!(configure_into(scratch.root(), &Policy::path_for("stock"), true, true).unwrap(), ExitCode::from(1));
    assert_eq!(scratch.snapshot(), before, "--check wrote something");

    // Leftovers of an interrupted run (a half-written staging copy) are swept, not swapped in.
    for leftover in ["components/.usrsctp.configure-new/upstream", "components/.libsrtp.configure-old/upstream"] {
        std::fs::create_dir_all(scratch.root().join(leftover)).unwrap();
        std::fs::write(scratch.root().join(leftover).join("half.c"), "int").unwrap();
    }
    // A run refuses to delete the file it did not write (issue 27), naming it; without it, a
    // real run repairs exactly the rest and leaves no staging directories behind.
    let with_leftovers = scratch.snapshot();
    let err = apply(&plan, scratch.root()).unwrap_err();
    assert!(
        err.to_string()
            .contains("components/plog: 1 file(s) configure did not write (not listed in its stamp): upstream/stray.h"),
        "{err}"
    );
    assert!(scratch.snapshot() == with_leftovers, "a refused run wrote something");
    std::fs::remove_file(scratch.root().join("components/plog/upstream/stray.h")).unwrap();
    assert_eq!(apply(&plan, scratch.root()).unwrap(), drifted[1..]);
    assert_eq!(scratch.snapshot(), first);
    let leftovers: Vec<_> = std::fs::read_dir(scratch.root().join("components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("configure-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_inputs_exit_2_with_file_line_key_and_write_nothing() {
    let scratch = Scratch::new();
    configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap();
    let before = scratch.snapshot();
    let lean = shipped("lean");
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let syntax = with(&lean, "ssl_in_content_len = 1536", "ssl_in_content_len = = 1536");
    let unknown_component = lean.clone() + "\n[components.libfoo]\nplacement = \"psram\"\n";
    let unknown_key = with(&lean, "[components.libsrtp]\n", "[components.libsrtp]\nplacment = \"psram\"\n");
    let bad_placement =
        with(&lean, "[components.libsrtp]\nplacement = \"psram\"", "[components.libsrtp]\nplacement = \"flash\"");
    let bad_patch =
        with(&lean, "[components.plog]\n", "[components.plog]\npatches = [\"libdatachannel/knobs.patch\"]\n");
    let stray_threads = with(
        &lean,
        "[components.usrsctp]\n",
        "[components.usrsctp]\nthreads = { stack_bytes = 4096, placement = \"psram\" }\n",
    );
    let split_threads =
        with(&lean, "stack_bytes = 15360, placement = \"psram\"", "stack_bytes = 15360, placement = \"internal\"");
    let cases = [
        (&syntax, line_of(&syntax, "= = 1536"), "ssl_in_content_len: TOML syntax error"),
        (
            &unknown_component,
            line_of(&unknown_component, "[components.libfoo]"),
            "components.libfoo: unknown component `libfoo`",
        ),
        (&unknown_key, line_of(&unknown_key, "placment"), "components.libsrtp.placment: unknown field `placment`"),
        (&bad_placement, line_of(&bad_placement, "\"flash\""), "components.libsrtp.placement: unknown variant `flash`"),
        (&bad_patch, 0, ""),
        (
            &stray_threads,
            line_of(&stray_threads, "stack_bytes = 4096"),
            "components.usrsctp.threads: only components.libdatachannel.threads",
        ),
        (
            &split_threads,
            line_of(&split_threads, "placement = \"internal\" }"),
            "components.libdatachannel.threads.placement: `internal` differs",
        ),
    ];
    for (text, line, expected) in cases {
        let path = scratch.policy(text);
        let err = configure_into(scratch.root(), &path, false, true).unwrap_err();
        let message = err.to_string();
        assert_eq!(exit_code_of(&err), 2, "{message}");
        if expected.is_empty() {
            // The patch case: the line is that of `patches` in [components.plog].
            let line = line_of(text, "[components.plog]") + 1;
            assert!(message.starts_with(&format!("{}:{line}: components.plog.patches: ", path.display())), "{message}");
            assert!(message.contains("does not apply") && message.contains("no file `src/impl/init.cpp`"), "{message}");
        } else {
            assert!(
                message.starts_with(&format!("{}:{line}: {expected}", path.display())),
                "expected `{expected}` at line {line}:\n{message}"
            );
        }
        assert_eq!(scratch.snapshot(), before, "a failed run wrote something: {message}");
    }
}

#[test]
fn sdkconfig_defaults_keeps_user_lines_and_swaps_the_block() {
    let scratch = Scratch::new();
    let user_before = "# my board\nCONFIG_ESPTOOLPY_FLASHSIZE_8MB=y\n";
    std::fs::write(scratch.root().join("sdkconfig.defaults"), user_before).unwrap();
    configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap();
    let mut text = std::fs::read_to_string(scratch.root().join("sdkconfig.defaults")).unwrap();
    assert!(text.starts_with(user_before), "{text}");
    assert!(text.contains(BLOCK_BEGIN) && text.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536"));
    text.push_str("CONFIG_LOG_DEFAULT_LEVEL_WARN=y\n");
    std::fs::write(scratch.root().join("sdkconfig.defaults"), &text).unwrap();

    configure_into(scratch.root(), &Policy::path_for("stock"), false, true).unwrap();
    let text = std::fs::read_to_string(scratch.root().join("sdkconfig.defaults")).unwrap();
    assert!(text.starts_with(user_before), "{text}");
    assert!(text.ends_with(&format!("{BLOCK_END}\nCONFIG_LOG_DEFAULT_LEVEL_WARN=y\n")), "{text}");
    assert_eq!(text.matches(BLOCK_BEGIN).count(), 1);
    assert!(
        text.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384")
            && !text.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536")
    );

    // A half block is refused, naming the line, and nothing changes.
    let broken = format!("CONFIG_A=y\n{BLOCK_BEGIN}\nCONFIG_B=y\n");
    std::fs::write(scratch.root().join("sdkconfig.defaults"), &broken).unwrap();
    let before = scratch.snapshot();
    let err = configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap_err();
    assert_eq!(exit_code_of(&err), 2);
    assert!(err.to_string().starts_with("sdkconfig.defaults:2: policy block:"), "{err}");
    assert_eq!(scratch.snapshot(), before);
}

#[test]
fn template_placeholders_must_all_be_filled() {
    let err = render::fill("x/CMakeLists.txt", "a {{known}} b {{unknown}}", &[("known", "1".into())]).unwrap_err();
    assert_eq!(exit_code_of(&err), 2);
    assert!(err.to_string().contains("templates/x/CMakeLists.txt: placeholder `{{unknown}}`"), "{err}");
}

/// The venv scripts/setup.sh creates, or a failure telling how to get it.
fn kconfgen_python() -> PathBuf {
    let venv = std::env::var_os("ESP_DC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/esp-dc/venv"));
    let python = venv.join("bin/python");
    let sh = xshell::Shell::new().unwrap();
    let ok = xshell::cmd!(sh, "{python} -m kconfgen --help").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    assert!(
        ok,
        "kconfgen is not available in {}: run `source scripts/setup.sh` (installs esp-idf-kconfig into the venv)",
        venv.display()
    );
    python
}

#[test]
fn generated_kconfig_parses_with_kconfgen_and_carries_the_policy() {
    let python = kconfgen_python();
    for policy_name in ["lean", "stock"] {
        let scratch = Scratch::new();
        configure_into(scratch.root(), &Policy::path_for(policy_name), false, true).unwrap();
        let policy = Policy::load(&Policy::path_for(policy_name)).unwrap();
        // One top-level Kconfig sourcing every component's, as ESP-IDF's build does.
        let mut top = String::from("mainmenu \"esp-libdatachannel\"\n");
        for name in components::generated() {
            top.push_str(&format!(
                "source \"{}\"\n",
                scratch.root().join("components").join(name).join("Kconfig").display()
            ));
        }
        top.push_str(&format!("source \"{}\"\n", project_root().join("components/esp_dc_port/Kconfig").display()));
        // Espressif's style checker, as ESP-IDF's CI runs it on components.
        let mut kconfigs: Vec<PathBuf> =
            components::generated().iter().map(|n| scratch.root().join("components").join(n).join("Kconfig")).collect();
        kconfigs.push(project_root().join("components/esp_dc_port/Kconfig"));
        let sh = xshell::Shell::new().unwrap();
        let check = xshell::cmd!(sh, "{python} -m kconfcheck --check syntax {kconfigs...}")
            .quiet()
            .ignore_status()
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "kconfcheck:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let out = scratch.root().join("kconfgen");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("Kconfig"), top).unwrap();
        let header = out.join("sdkconfig.h");
        let (kconfig, sdkconfig, defaults) =
            (out.join("Kconfig"), out.join("sdkconfig"), scratch.root().join("sdkconfig.defaults"));
        let result = xshell::cmd!(
            sh,
            "{python} -m kconfgen --kconfig {kconfig} --config {sdkconfig} --defaults {defaults} --output header {header} --output config {sdkconfig}"
        )
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "kconfgen failed for {policy_name}:\n{stderr}");
        let h = std::fs::read_to_string(&header).unwrap();
        for spec in KNOBS {
            let line = format!("#define CONFIG_{} {}\n", spec.kconfig_symbol(), policy.knob_value(spec));
            assert!(h.contains(&line), "{policy_name}: header lacks `{}`", line.trim());
        }
        let new_choice = match policy.cxx.new_placement {
            crate::policy::Placement::Psram => "PSRAM",
            crate::policy::Placement::Internal => "INTERNAL",
            crate::policy::Placement::Default => "DEFAULT",
        };
        assert!(
            h.contains(&format!("#define CONFIG_ESP_DC_PORT_NEW_PLACEMENT_{new_choice} 1\n")),
            "{policy_name}:\n{h}"
        );
        let stack = policy.component("libdatachannel").threads.as_ref().map(|t| t.stack_bytes).unwrap();
        assert!(h.contains(&format!("#define CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES {stack}\n")), "{policy_name}");
        assert!(h.contains(&format!("#define CONFIG_ESP_DC_PORT_HEAP_TRACE_RECORDS {}\n", policy.heap_tracing.records)));
        // Each generated component's placement reaches sdkconfig.h through its Kconfig choice.
        for component in ["libdatachannel", "libjuice", "usrsctp", "libsrtp"] {
            let spec = policy.component(component);
            let member = match spec.placement {
                crate::policy::Placement::Psram => "PSRAM",
                crate::policy::Placement::Internal => "INTERNAL",
                crate::policy::Placement::Default => "DEFAULT",
            };
            let prefix = format!("CONFIG_ESP_DC_{}", component.to_uppercase());
            assert!(h.contains(&format!("#define {prefix}_HEAP_{member} 1\n")), "{policy_name}: {component}\n{h}");
            assert_eq!(
                h.contains(&format!("#define {prefix}_REDIRECT_MALLOC 1\n")),
                !spec.force_include.is_empty(),
                "{policy_name}: {component}"
            );
        }
        // A symbol of ours that the block sets but Kconfig does not define would be dropped silently.
        for line in std::fs::read_to_string(scratch.root().join("sdkconfig.defaults")).unwrap().lines() {
            if let Some(symbol) = line.strip_prefix("CONFIG_ESP_DC_").and_then(|l| l.split('=').next()) {
                assert!(
                    h.contains(&format!("CONFIG_ESP_DC_{symbol} ")),
                    "{policy_name}: CONFIG_ESP_DC_{symbol} is not a Kconfig symbol"
                );
            }
        }
    }
    assert_eq!(
        knob("libdatachannel", "sctp_max_streams").unwrap().kconfig_symbol(),
        "ESP_DC_LIBDATACHANNEL_SCTP_MAX_STREAMS"
    );
}

/// The header the mutex lock policy force-includes really switches libstdc++ (host g++, same
/// libstdc++ mechanism as ESP-IDF's toolchains), and is inert without the definition.
#[test]
fn lock_policy_header_switches_shared_ptr_to_mutex() {
    let header = project_root().join("components/esp_dc_port/include/esp_dc_lock_policy.h");
    let compile = |definition: Option<&str>, expected: &str| {
        let source = format!(
            "#include <memory>\nstatic_assert(__gnu_cxx::__default_lock_policy == __gnu_cxx::{expected}, \"policy\");\nint main() {{ return *std::make_shared<int>(0); }}\n"
        );
        let sh = xshell::Shell::new().unwrap();
        let include = format!("--include={}", header.display());
        let define = definition.map(|d| format!("-D{d}"));
        let out = xshell::cmd!(sh, "g++ -std=c++17 -fsyntax-only -x c++ - {include} {define...}")
            .stdin(source)
            .quiet()
            .ignore_status()
            .output()
            .expect("g++ (run scripts/setup.sh)");
        assert!(out.status.success(), "{definition:?} -> {expected}: {}", String::from_utf8_lossy(&out.stderr));
    };
    compile(Some("ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX=1"), "_S_mutex");
    compile(None, "_S_atomic");
}

#[test]
fn a_stack_resident_64k_receive_buffer_with_small_stacks_is_warned_about() {
    let lean = shipped("lean");
    let fixed = plan_of(&lean);
    assert!(fixed.warnings.is_empty(), "lean must not warn: {:?}", fixed.warnings);
    let warned = plan_of(&set_knob(&lean, "libdatachannel", "sctp_recv_chunk_bytes", 65536));
    assert!(warned.warnings.iter().any(|w| w.contains("64 KB receive buffer")), "{:?}", warned.warnings);
    let unpatched = plan_of(&without_ldc_patches(&set_knob(&lean, "libdatachannel", "sctp_recv_chunk_bytes", 4096)));
    assert!(unpatched.warnings.iter().any(|w| w.contains("knobs.patch not applied")));
}

/// The knob patches keep upstream's code when a knob holds upstream's value: the patched tree
/// (lean's patches, as the lab stages it) and the pristine tree, preprocessed with every Define
/// knob at its stock value, are token-for-token the same.
#[test]
fn knobs_at_stock_values_preprocess_to_upstream_code() {
    let sources = upstream::locate().unwrap();
    let mut lean = Policy::load(&Policy::path_for("lean")).unwrap();
    // Only the knob patches must be inert at stock values; a fix such as inline-constants.patch changes code on purpose.
    for c in lean.components.values_mut() {
        c.patches.retain(|p| p.ends_with("knobs.patch"));
    }
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let patched = dir.path().join("patched");
    let pristine = dir.path().join("pristine");
    upstream::stage_stack(&sources, &lean).unwrap().write(&patched).unwrap();
    upstream::stage_stack(&sources, &stock).unwrap().write(&pristine).unwrap();
    let defines: Vec<String> = KNOBS
        .iter()
        .filter_map(|k| match k.effect {
            crate::policy::KnobEffect::Define(name) => Some(format!("-D{name}={}", k.stock)),
            crate::policy::KnobEffect::Runtime(..) => None,
        })
        .collect();
    let preprocess = |root: &Path, compiler: &str, file: &str, defines: &[String]| -> String {
        let includes = [
            "include",
            "include/rtc",
            "src",
            "deps/usrsctp/usrsctplib",
            "deps/plog/include",
            "deps/libjuice/include",
            "deps/libjuice/include/juice",
            "deps/libsrtp/include",
            "deps/libsrtp/crypto/include",
        ];
        // Log statements carry __LINE__, which the patch's extra lines shift; pin it.
        let flags = [
            "-E",
            "-P",
            "-Wno-builtin-macro-redefined",
            "-D__LINE__=0",
            "-DUSE_MBEDTLS=1",
            "-DUSE_GNUTLS=0",
            "-DRTC_ENABLE_MEDIA=1",
            "-DRTC_ENABLE_WEBSOCKET=0",
            "-DRTC_SYSTEM_SRTP=0",
            "-DUSE_NICE=0",
            "-DRTC_STATIC",
            "-D__Userspace__",
        ];
        let standard = (compiler == "g++").then_some("-std=c++17");
        let mut include_flags: Vec<String> =
            includes.iter().map(|inc| format!("-I{}", root.join(inc).display())).collect();
        include_flags.push(format!("-I{}", sources.mbedtls.join("include").display()));
        let source = root.join(file);
        let sh = xshell::Shell::new().unwrap();
        let cmd = xshell::cmd!(sh, "{compiler} {flags...} {standard...} {defines...} {include_flags...} {source}");
        let out = cmd.quiet().ignore_status().output().expect("gcc/g++ (run scripts/setup.sh)");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        // Paths differ between the two trees only in `__FILE__`-free places; blank lines are noise.
        String::from_utf8_lossy(&out.stdout)
            .replace(&root.display().to_string(), "ROOT")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (compiler, file) in [
        ("g++", "src/impl/sctptransport.cpp"),
        ("g++", "src/impl/init.cpp"),
        ("g++", "src/impl/datachannel.cpp"),
        ("gcc", "deps/libjuice/src/agent.c"),
        ("gcc", "deps/libjuice/src/stun.c"),
    ] {
        let a = preprocess(&patched, compiler, file, &defines);
        let b = preprocess(&pristine, compiler, file, &defines);
        assert!(a.len() > 1000, "{file}: preprocessing produced almost nothing");
        assert!(a == b, "{file}: knobs at stock values change the code");
    }
    // The comparison can fail: a lean value does change the code.
    let mut lean_chunk = defines.clone();
    lean_chunk.push("-DRTC_ESP_SCTP_RECV_CHUNK_BYTES=4096".into());
    assert!(
        preprocess(&patched, "g++", "src/impl/sctptransport.cpp", &lean_chunk)
            != preprocess(&pristine, "g++", "src/impl/sctptransport.cpp", &defines)
    );
}

/// The examples use the component tree and sdkconfig.defaults configure writes, call
/// esp_dc_port_init() before their first PeerConnection, and only call rtc* functions the pinned
/// libdatachannel declares.
#[test]
fn examples_use_the_configured_tree_and_the_pinned_c_api() {
    let sources = upstream::locate().unwrap();
    let rtc_h = std::fs::read_to_string(sources.libdatachannel.join("include/rtc/rtc.h")).unwrap();
    let examples = project_root().join("examples");
    for example in ["datachannel_echo", "h264_sender"] {
        let dir = examples.join(example);
        let cmake = std::fs::read_to_string(dir.join("CMakeLists.txt")).unwrap();
        assert!(cmake.contains("${CMAKE_CURRENT_LIST_DIR}/../../components"), "{example}: EXTRA_COMPONENT_DIRS");
        assert!(cmake.contains("${CMAKE_CURRENT_LIST_DIR}/../../sdkconfig.defaults"), "{example}: SDKCONFIG_DEFAULTS");
        let main = std::fs::read_to_string(dir.join(format!("main/{example}_main.c"))).unwrap();
        let init = main.find("esp_dc_port_init()").unwrap_or_else(|| panic!("{example} never calls esp_dc_port_init"));
        assert!(
            init < main.find("rtcCreatePeerConnection(").unwrap(),
            "{example}: esp_dc_port_init after the first PeerConnection"
        );
        let mut sources_text = main.clone();
        sources_text.push_str(
            &std::fs::read_to_string(examples.join("common_components/dc_console_signaling/dc_console_signaling.c"))
                .unwrap(),
        );
        for (at, _) in sources_text.match_indices("rtc") {
            let name: String =
                sources_text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if sources_text[at + name.len()..].starts_with('(')
                && name.len() > 3
                && name.as_bytes()[3].is_ascii_uppercase()
            {
                assert!(rtc_h.contains(&format!(" {name}(")), "{example}: {name} is not in the pinned rtc.h");
            }
        }
    }
    let h264 = std::fs::read_to_string(examples.join("h264_sender/main/h264_sender_main.c")).unwrap();
    assert!(h264.contains("esp_dc_port_chain_nack_responder(track)"));
}

/// The H.264 test source builds on the host and emits SPS, PPS and an IDR slice per frame in
/// Annex-B form within the advertised bound (the stream was also decoded with FFmpeg while
/// writing it: 30/30 frames, Constrained Baseline, 128x96).
#[test]
fn h264_test_source_emits_annex_b_frames() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.c");
    std::fs::write(
        &main,
        "#include <stdio.h>\n#include <stdlib.h>\n#include \"h264_testsrc.h\"\nint main(void) { size_t cap = h264_testsrc_max_frame_bytes(); unsigned char *b = malloc(cap);\n for (unsigned i = 0; i < 3; ++i) { size_t n = h264_testsrc_frame(i, b, cap); if (!n) return 1; fwrite(b, 1, n, stdout); } return 0; }\n",
    )
    .unwrap();
    let src = project_root().join("examples/common_components/h264_testsrc");
    let exe = dir.path().join("testsrc");
    let sh = xshell::Shell::new().unwrap();
    let (include, source) = (src.join("include"), src.join("h264_testsrc.c"));
    let status = xshell::cmd!(sh, "gcc -O1 -Wall -Werror -o {exe} -I{include} {main} {source}").quiet().run();
    assert!(status.is_ok(), "gcc (run scripts/setup.sh): {status:?}");
    let out = xshell::cmd!(sh, "{exe}").quiet().ignore_status().output().unwrap();
    assert!(out.status.success());
    let stream = out.stdout;
    // NAL unit types after each 4-byte start code.
    let types: Vec<u8> = stream.windows(5).filter(|w| w[..4] == [0, 0, 0, 1]).map(|w| w[4] & 0x1f).collect();
    assert_eq!(types, vec![7, 8, 5, 7, 8, 5, 7, 8, 5]);
    // profile_idc 66, constraint flags 0xE0, level 31: profile-level-id 42e01f as the SDP says.
    assert_eq!(&stream[5..8], &[0x42, 0xe0, 0x1f]);
    // No start-code emulation inside a NAL: 00 00 0x (x <= 2) occurs only in real start codes.
    let emulations = stream
        .windows(4)
        .enumerate()
        .filter(|(i, w)| {
            w[0] == 0
                && w[1] == 0
                && w[2] <= 2
                && !(w[2] == 0 && w[3] == 1)
                && !(*i > 0 && stream[i - 1] == 0 && w[2] == 1)
        })
        .count();
    assert_eq!(emulations, 0);
}

/// With the mutex lock policy the lock-policy header is reached through esp_dc_port's directory,
/// which must be looked up before use even when libdatachannel's malloc is not redirected.
#[test]
fn mutex_lock_policy_finds_esp_dc_port_without_the_redirect() {
    let text = with(
        &with(&shipped("stock"), "shared_ptr_lock_policy = \"atomic\"", "shared_ptr_lock_policy = \"mutex\""),
        "[components.libdatachannel]\nplacement = \"psram\"\nforce_include = \"esp_dc_alloc_redirect.h\"",
        "[components.libdatachannel]\nplacement = \"psram\"\nforce_include = \"\"",
    );
    let plan = plan_of(&text);
    let cmake = file(&plan, "libdatachannel", "CMakeLists.txt");
    let lookup = cmake.find("idf_component_get_property(esp_dc_port_dir esp_dc_port COMPONENT_DIR)").expect("lookup");
    let redirect = cmake.find("if(CONFIG_ESP_DC_LIBDATACHANNEL_REDIRECT_MALLOC)").expect("redirect");
    let mutex = cmake.find("if(CONFIG_ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX)").expect("mutex option");
    let use_ = cmake.find("${esp_dc_port_dir}/include/esp_dc_lock_policy.h").expect("use");
    // The lookup is unconditional, ahead of both conditional uses.
    assert!(lookup < redirect && redirect < mutex && mutex < use_, "{cmake}");
    assert_eq!(cmake.matches("idf_component_get_property(").count(), 1);
    assert!(cmake[mutex..]
        .contains("target_compile_definitions(${COMPONENT_LIB} PUBLIC ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX=1)"));
    let sd = defaults(&plan);
    assert!(sd.contains("\n# CONFIG_ESP_DC_LIBDATACHANNEL_REDIRECT_MALLOC is not set\n"), "{sd}");
    assert!(sd.contains("\nCONFIG_ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX=y\n"), "{sd}");
}

/// The committed sdkconfig.defaults carries the default (lean) policy's current block: a user
/// who builds without running configure first gets what the policy says.
#[test]
fn committed_sdkconfig_defaults_follows_the_lean_policy() {
    let root = crate::fsutil::project_root();
    let plan = plan(&root, &Policy::path_for("lean")).unwrap();
    let committed = std::fs::read_to_string(root.join("sdkconfig.defaults")).unwrap();
    assert_eq!(committed, defaults(&plan), "run `cargo xtask configure` and commit sdkconfig.defaults");
}

/// The shipped policies' blocks pass the key check (every key listed or ours) with no warning
/// about unchecked keys, and the block carries no old name of an ESP-IDF rename.
#[test]
fn shipped_policies_write_only_known_kconfig_keys() {
    for name in ["lean", "stock"] {
        let plan = plan_of(&shipped(name));
        assert!(plan.warnings.iter().all(|w| !w.starts_with("sdkconfig_extra")), "{name}: {:?}", plan.warnings);
        let text = defaults(&plan);
        let keys: Vec<&str> = text.lines().filter_map(render::line_key).collect();
        assert!(keys.len() > 20, "{name}: {keys:?}");
        assert!(
            keys.contains(&"CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM")
                || name == "stock"
                || !text.contains("CONFIG_SPIRAM=y"),
            "{name}"
        );
        assert!(!text.contains("SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY"), "{name}");
    }
}

/// kconfgen maps CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY silently through freertos's
/// sdkconfig.rename: re-adding it through sdkconfig_extra fails with the new name, as does an
/// unknown or malformed key, naming the policy line; nothing is written.
#[test]
fn sdkconfig_extra_old_unknown_or_malformed_keys_exit_2_with_file_line_key() {
    let scratch = Scratch::new();
    configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap();
    let before = scratch.snapshot();
    let lean = shipped("lean");
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let extra = |lines: &str| with(&lean, "[sdkconfig_extra]\n", &format!("[sdkconfig_extra]\n{lines}"));

    let renamed = extra("CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY = \"y\"\n");
    let lower = extra("CONFIG_lwip_max_sockets = \"8\"\n");
    let cases = [
        (&renamed, "CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY", "an old name: ESP-IDF 5.5 renamed it to CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM (components/freertos/sdkconfig.rename)"),
        (&lower, "CONFIG_lwip_max_sockets", "not an ESP-IDF symbol: they are upper case (did you mean `CONFIG_LWIP_MAX_SOCKETS`?)"),
    ];
    for (text, key, expected) in cases {
        let path = scratch.policy(text);
        let err = configure_into(scratch.root(), &path, false, true).unwrap_err();
        let message = err.to_string();
        assert_eq!(exit_code_of(&err), 2, "{message}");
        let line = line_of(text, &format!("{key} ="));
        assert!(
            message.starts_with(&format!("{}:{line}: sdkconfig_extra.{key}: {expected}", path.display())),
            "line {line}:\n{message}"
        );
        assert_eq!(scratch.snapshot(), before, "a failed run wrote something: {message}");
    }

    // Our own symbols pass; an ESP-IDF key outside the list is accepted with a warning unless an
    // ESP-IDF tree is at hand (IDF_PATH), where it must exist.
    let ours = extra("CONFIG_ESP_DC_PORT_SHIM_RANDOM = \"y\"\nCONFIG_ESP_MEMTRACK_ENABLE = \"y\"\nCONFIG_LWIP_MAX_SOCKETS = \"16\"\n");
    match plan(scratch.root(), &scratch.policy(&ours)) {
        Ok(p) => {
            let text = defaults(&p);
            assert!(
                text.contains("CONFIG_ESP_DC_PORT_SHIM_RANDOM=y\n") && text.contains("CONFIG_LWIP_MAX_SOCKETS=16\n"),
                "{text}"
            );
            if kconfig_keys::idf_tree_from_env().is_none() {
                assert!(
                    p.warnings.iter().any(|w| w.starts_with("sdkconfig_extra: CONFIG_LWIP_MAX_SOCKETS not checked")),
                    "{:?}",
                    p.warnings
                );
            }
        }
        Err(e) => panic!("our keys and an ESP-IDF option were refused: {e}"),
    }
}

/// With an ESP-IDF tree, a key no Kconfig file declares is refused naming the tree; the same
/// check on keys `render` writes blames render.rs and asks for the list or the right name.
#[test]
fn unknown_keys_are_refused_against_an_esp_idf_tree_and_in_rendered_lines() {
    let known = kconfig_keys::Known::new(["ESP_DC_PORT_THREAD_STACK_BYTES".to_string()]);
    let extra = BTreeMap::new();
    for (line, expected) in [
        ("CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY=y", "write `CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM` instead"),
        (
            "# CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY is not set",
            "write `CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM` instead",
        ),
        ("CONFIG_LWIP_MAX_SOCKETS=16", "rendered, but neither in xtask/src/kconfig_keys.txt"),
    ] {
        let err = render::check_sdkconfig_keys(&[line.to_string()], &extra, &known, "", "p.toml").unwrap_err();
        assert_eq!(exit_code_of(&err), 2);
        assert!(
            err.to_string().starts_with("xtask/src/render.rs: CONFIG_") && err.to_string().contains(expected),
            "{err}"
        );
    }
    let ok = [
        "# [memory]".to_string(),
        "CONFIG_SPIRAM_USE_MALLOC=y".into(),
        "CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES=15360".into(),
    ];
    assert!(render::check_sdkconfig_keys(&ok, &extra, &known, "", "p.toml").unwrap().is_empty());

    let Some(root) = crate::idf::tree_for_tests() else {
        crate::idf::say_skipped("unknown_keys_are_refused_against_an_esp_idf_tree_and_in_rendered_lines");
        return;
    };
    let known = known.with_tree(&kconfig_keys::scan_tree(&root).unwrap());
    let text = "[policy]\nname = \"x\"\n\n[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"16\"\n\"CONFIG_LWIP_MAX_SOCKET\" = \"16\"\n";
    let extra: BTreeMap<String, String> = [("CONFIG_LWIP_MAX_SOCKETS", "16"), ("CONFIG_LWIP_MAX_SOCKET", "16")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let err = render::check_sdkconfig_keys(&[], &extra, &known, text, "policies/x.toml").unwrap_err();
    let message = err.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with(&format!("policies/x.toml:6: sdkconfig_extra.CONFIG_LWIP_MAX_SOCKET: unknown kconfig symbol: no Kconfig file under {}", root.display())), "{message}");
}

/// Issue 18: a hostile description or definition used to land in sdkconfig.defaults and
/// CMakeLists.txt. Now refused before anything is written; and the stamp quotes the policy's
/// path as TOML (a quote in a file name made it unreadable).
#[test]
fn hostile_policy_strings_write_nothing_and_the_stamp_quotes_its_path() {
    let scratch = Scratch::new();
    configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap();
    let before = scratch.snapshot();
    let lean = shipped("lean");
    for (text, key) in [
        (
            with(&lean, "description = \"All", "description = \"x\\n# ---- end ----\\nCONFIG_EVIL=y\\nAll"),
            "policy.description",
        ),
        (
            with(
                &lean,
                "[components.plog]\n",
                "[components.plog]\ndefinitions = { EVIL = \"1\\\")\\nexecute_process(COMMAND touch evil)\\n#\" }\n",
            ),
            "components.plog.definitions.EVIL",
        ),
        (with(&lean, "name = \"lean\"", "name = \"../../x\""), "policy.name"),
    ] {
        let err = configure_into(scratch.root(), &scratch.policy(&text), false, true).unwrap_err();
        assert_eq!(exit_code_of(&err), 2, "{err}");
        assert!(err.to_string().contains(&format!(": {key}: ")), "{err}");
        assert_eq!(scratch.snapshot(), before, "a refused policy wrote something: {err}");
    }
    let odd = scratch.root().with_extension("policies").join("we\"ird.toml");
    std::fs::write(&odd, &lean).unwrap();
    configure_into(scratch.root(), &odd, false, true).unwrap();
    let stamp = read_stamp(scratch.root()).unwrap().expect("stamp written");
    assert_eq!((stamp.policy.as_str(), stamp.path.as_str()), ("lean", odd.display().to_string().as_str()));
}

/// Issue 18: two configure runs at once shared one staging directory and swept each other's
/// copies; the tree then matched neither policy. With the project lock the second run waits:
/// after every round the tree is exactly what `--check` expects of the policy the stamp names.
#[test]
fn two_configures_at_once_always_leave_a_tree_check_accepts() {
    let scratch = Scratch::new();
    let root = scratch.root();
    let (lean, stock) = (Policy::path_for("lean"), Policy::path_for("stock"));
    for round in 0..20 {
        let (first, second) = if round % 2 == 0 { (&lean, &stock) } else { (&stock, &lean) };
        std::thread::scope(|s| {
            let runs = [first, second]
                .map(|policy| s.spawn(move || configure_into(root, policy, false, true).map_err(|e| format!("{e:#}"))));
            for run in runs {
                assert_eq!(run.join().unwrap().unwrap(), ExitCode::SUCCESS, "round {round}");
            }
        });
        let stamp = read_stamp(root).unwrap().expect("stamp written");
        let named = project_root().join(&stamp.path);
        assert_eq!(
            configure_into(root, &named, true, true).unwrap(),
            ExitCode::SUCCESS,
            "round {round}: the tree drifted from `{}`, the policy its stamp names",
            stamp.policy
        );
        let staging: Vec<_> = std::fs::read_dir(root.join("components"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("configure-"))
            .collect();
        assert!(staging.is_empty(), "round {round}: {staging:?}");
    }
}

/// `configure --into` an existing application: our components and the policy block land there,
/// the application's own files stay byte for byte, a second run changes nothing, `--check`
/// works there, and a directory that is no application is refused before anything is written.
#[test]
fn into_an_application_writes_only_ours_and_checks_there() {
    let app = tempfile::tempdir().unwrap();
    let a = app.path();
    let own: &[(&str, &str)] = &[
        ("CMakeLists.txt", "cmake_minimum_required(VERSION 3.16)\ninclude($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(camera)\n"),
        ("main/CMakeLists.txt", "idf_component_register(SRCS main.c PRIV_REQUIRES libdatachannel esp_dc_init)\n"),
        ("main/main.c", "void app_main(void) {}\n"),
        ("components/sensor/CMakeLists.txt", "idf_component_register()\n"),
        ("sdkconfig.defaults", "CONFIG_CAMERA_FPS=30\n"),
    ];
    for (rel, text) in own {
        std::fs::create_dir_all(a.join(rel).parent().unwrap()).unwrap();
        std::fs::write(a.join(rel), text).unwrap();
    }
    let root = application_root(a).unwrap();
    let lean = Policy::path_for("lean");
    assert_eq!(configure_into(&root, &lean, false, false).unwrap(), ExitCode::SUCCESS);
    for (rel, text) in own.iter().filter(|(rel, _)| *rel != "sdkconfig.defaults") {
        assert_eq!(&std::fs::read_to_string(a.join(rel)).unwrap(), text, "{rel} was touched");
    }
    let defaults = std::fs::read_to_string(a.join("sdkconfig.defaults")).unwrap();
    assert!(defaults.starts_with("CONFIG_CAMERA_FPS=30\n"), "{defaults}");
    assert!(defaults.contains(BLOCK_BEGIN) && defaults.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536"));
    for component in components::generated().into_iter().chain(components::ours()) {
        assert!(a.join("components").join(component).join("CMakeLists.txt").is_file(), "{component} missing");
    }
    assert_eq!(
        std::fs::read(a.join("components/esp_dc_init/src/esp_dc_port_init.c")).unwrap(),
        std::fs::read(project_root().join("components/esp_dc_init/src/esp_dc_port_init.c")).unwrap()
    );
    assert!(apply(&plan(&root, &lean).unwrap(), &root).unwrap().is_empty(), "a second run changes nothing");
    assert_eq!(configure_into(&root, &lean, true, false).unwrap(), ExitCode::SUCCESS);
    std::fs::write(a.join("components/esp_dc_init/src/esp_dc_port_init.c"), "edited\n").unwrap();
    assert_eq!(configure_into(&root, &lean, true, false).unwrap(), ExitCode::from(1), "--check sees our files drift");
    assert_eq!(configure_into(&root, &lean, false, false).unwrap(), ExitCode::SUCCESS);
    assert_eq!(configure_into(&root, &lean, true, false).unwrap(), ExitCode::SUCCESS);

    let not_an_app = tempfile::tempdir().unwrap();
    let err = application_root(not_an_app.path()).unwrap_err();
    assert_eq!(err.downcast_ref::<exit::Failure>().map(|f| f.code), Some(2));
    assert!(err.to_string().contains("not an ESP-IDF application"), "{err}");
    assert!(std::fs::read_dir(not_an_app.path()).unwrap().next().is_none(), "nothing written");
}

/// An ESP-IDF application of its own, for `--into` (issue 27).
fn application(files: &[(&str, &str)]) -> tempfile::TempDir {
    let app = tempfile::tempdir().unwrap();
    let cmake =
        "cmake_minimum_required(VERSION 3.16)\ninclude($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(camera)\n";
    for (rel, text) in [("CMakeLists.txt", cmake)].iter().chain(files) {
        let path = app.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    app
}

/// Every file and symbolic link under `root` with its bytes (links as their target's text).
pub(crate) fn tree_of(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let bytes = if e.path_is_symlink() {
                std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (e.path().strip_prefix(root).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

fn options() -> Options {
    Options::default()
}

/// Issue 27, class 1: `--into` deleted a user's hand port of libdatachannel and their file in
/// esp_dc_port and listed them as "written". A folder configure did not write is now refused
/// (exit 2, named, nothing written); --dry-run writes nothing; --replace moves it to a dated
/// backup beside components/ first; a file of one's own inside a stamped folder is refused too.
#[test]
fn into_refuses_a_folder_it_did_not_write_and_replace_keeps_it_in_a_backup() {
    let hand_port: &[(&str, &str)] = &[
        ("main/main.c", "void app_main(void) {}\n"),
        ("components/libdatachannel/CMakeLists.txt", "idf_component_register(SRCS src/peerconnection.cpp)\n"),
        ("components/libdatachannel/src/peerconnection.cpp", "// my own change to libdatachannel\n"),
        ("components/libdatachannel/src/mine.cpp", "int mine;\n"),
        ("components/esp_dc_port/my_shim.c", "int shim;\n"),
    ];
    let app = application(hand_port);
    let root = application_root(app.path()).unwrap();
    let lean = Policy::path_for("lean");
    let before = tree_of(&root);

    let err = configure_with(&root, &lean, &options()).unwrap_err();
    let message = err.to_string();
    assert_eq!(exit_code_of(&err), 2, "{message}");
    for needle in [
        "components/libdatachannel: no .esp_dc_component stamp",
        "components/esp_dc_port: no .esp_dc_component stamp",
        "--replace",
        BACKUP_PREFIX,
    ] {
        assert!(message.contains(needle), "`{needle}` missing:\n{message}");
    }
    assert_eq!(tree_of(&root), before, "a refused run wrote something");
    let dry = Options { dry_run: true, ..options() };
    assert_eq!(exit_code_of(&configure_with(&root, &lean, &dry).unwrap_err()), 2, "a dry run refuses as the run would");
    let dry_replace = Options { dry_run: true, replace: true, ..options() };
    assert_eq!(configure_with(&root, &lean, &dry_replace).unwrap(), ExitCode::SUCCESS);
    assert_eq!(tree_of(&root), before, "--dry-run wrote something");

    let replace = Options { replace: true, ..options() };
    assert_eq!(configure_with(&root, &lean, &replace).unwrap(), ExitCode::SUCCESS);
    let backups: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(BACKUP_PREFIX))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    for (rel, text) in hand_port.iter().filter(|(rel, _)| rel.starts_with("components/")) {
        let kept = backups[0].join(rel.strip_prefix("components/").unwrap());
        assert_eq!(&std::fs::read_to_string(&kept).unwrap(), text, "{} lost", kept.display());
    }
    assert_eq!(std::fs::read_to_string(root.join("main/main.c")).unwrap(), "void app_main(void) {}\n");
    assert!(root.join("components/libdatachannel").join(COMPONENT_STAMP).is_file());
    assert!(!root.join("components/libdatachannel/src/mine.cpp").exists());
    assert_eq!(configure_with(&root, &lean, &Options { check: true, ..options() }).unwrap(), ExitCode::SUCCESS);

    // Inside a folder of ours: a new file of the user's is refused, an edited file of ours replaced.
    std::fs::create_dir_all(root.join("components/libdatachannel/src")).unwrap();
    std::fs::write(root.join("components/libdatachannel/src/extra.cpp"), "int extra;\n").unwrap();
    std::fs::write(root.join("components/libdatachannel/CMakeLists.txt"), "edited\n").unwrap();
    let err = configure_with(&root, &lean, &options()).unwrap_err();
    assert_eq!(exit_code_of(&err), 2);
    assert!(
        err.to_string().contains(
            "components/libdatachannel: 1 file(s) configure did not write (not listed in its stamp): src/extra.cpp"
        ),
        "{err}"
    );
    std::fs::remove_file(root.join("components/libdatachannel/src/extra.cpp")).unwrap();
    assert_eq!(configure_with(&root, &lean, &options()).unwrap(), ExitCode::SUCCESS);
    assert_ne!(std::fs::read_to_string(root.join("components/libdatachannel/CMakeLists.txt")).unwrap(), "edited\n");
}

/// Issue 27, class 5: `--into APP --policy BAD` created APP/components/ and the lock file
/// before it failed. Now nothing exists after any exit 2 (bad policy, with and without --check).
#[test]
fn a_bad_policy_into_an_application_creates_nothing() {
    let app = application(&[("main/main.c", "void app_main(void) {}\n")]);
    let root = application_root(app.path()).unwrap();
    let before = tree_of(&root);
    let scratch = Scratch::new();
    let bad = scratch.policy(&with(&shipped("lean"), "ssl_in_content_len = 1536", "ssl_in_content_len = 100"));
    for check in [false, true] {
        let err = configure_with(&root, &bad, &Options { check, ..options() }).unwrap_err();
        assert_eq!(exit_code_of(&err), 2, "{err}");
        assert_eq!(tree_of(&root), before, "check={check}: an exit 2 wrote something");
        assert!(!root.join("components").exists());
    }
}

/// Issue 27, class 6: a generated component's files lost their mode and links on rewrite
/// (CMakeLists.txt 0600 came back 0644, an upstream 0755 file became 0644, a symlinked Kconfig
/// became a file). Now the rules of sdkconfig.defaults hold in components/ too.
#[test]
fn component_files_keep_their_mode_and_links_and_upstream_execute_bits() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let scratch = Scratch::new();
    let root = scratch.root();
    let lean = Policy::path_for("lean");
    configure_into(root, &lean, false, true).unwrap();
    let planned = plan(root, &lean).unwrap();
    let (script, upstream_mode) = planned
        .components
        .values()
        .flat_map(|t| t.modes.iter().map(move |(rel, m)| (t, rel, *m)))
        .next()
        .map(|(_, rel, m)| (rel.clone(), m))
        .expect("the pinned sources have files with execute bits (usrsctp's)");
    let owner = planned.components.iter().find(|(_, t)| t.modes.contains_key(&script)).unwrap().0.clone();
    let on_disk = root.join("components").join(&owner).join(&script);
    assert_ne!(mode(&on_disk) & 0o111, 0, "{} lost its execute bits (upstream {upstream_mode:o})", on_disk.display());

    let cmake = root.join("components/libdatachannel/CMakeLists.txt");
    std::fs::write(&cmake, "edited\n").unwrap();
    std::fs::set_permissions(&cmake, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = root.join("shared-kconfig");
    let kconfig = root.join("components/libjuice/Kconfig");
    std::fs::write(&shared, "stale\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_file(&kconfig).unwrap();
    std::os::unix::fs::symlink("../../shared-kconfig", &kconfig).unwrap();
    assert_eq!(configure_into(root, &lean, true, true).unwrap(), ExitCode::from(1));
    configure_into(root, &lean, false, true).unwrap();

    assert_eq!(mode(&cmake), 0o600);
    assert_eq!(std::fs::read(&cmake).unwrap(), planned.components["libdatachannel"].files[Path::new("CMakeLists.txt")]);
    assert!(std::fs::symlink_metadata(&kconfig).unwrap().file_type().is_symlink(), "the Kconfig link became a file");
    assert_eq!(std::fs::read(&shared).unwrap(), planned.components["libjuice"].files[Path::new("Kconfig")]);
    assert_eq!(mode(&shared), 0o640);
    assert_ne!(mode(&on_disk) & 0o111, 0);
    assert_eq!(configure_into(root, &lean, true, true).unwrap(), ExitCode::SUCCESS);
}

/// Issue 27, class 2: an application's own CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384 and
/// CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT=4096 were overridden by the block appended after
/// them, without a word; a stale block after ours won and --check said 0. Now a conflict is
/// listed with both values and the winner and refused; --keep-sdkconfig keeps the user's line.
#[test]
fn sdkconfig_conflicts_are_listed_and_yours_is_kept_only_when_asked() {
    let user = "CONFIG_FREERTOS_HZ=1000\nCONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384\nCONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT=4096\n";
    let app = application(&[("sdkconfig.defaults", user)]);
    let root = application_root(app.path()).unwrap();
    let lean = Policy::path_for("lean");
    let before = tree_of(&root);
    let err = configure_with(&root, &lean, &options()).unwrap_err();
    let message = err.to_string();
    assert_eq!(exit_code_of(&err), 2, "{message}");
    assert!(message.contains("sdkconfig.defaults:2: CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN: yours 16384, the policy's 1536; the build would see the policy's"), "{message}");
    assert!(
        message.contains("sdkconfig.defaults:3: CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT: yours 4096, the policy's 8192"),
        "{message}"
    );
    assert!(message.contains("--keep-sdkconfig"), "{message}");
    assert_eq!(tree_of(&root), before);

    let keep = |keys: &[&str]| Options { keep_sdkconfig: keys.iter().map(|k| k.to_string()).collect(), ..options() };
    let both = keep(&["CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN", "CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT"]);
    assert_eq!(
        exit_code_of(&configure_with(&root, &lean, &keep(&["CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN"])).unwrap_err()),
        2
    );
    assert_eq!(configure_with(&root, &lean, &both).unwrap(), ExitCode::SUCCESS);
    let text = std::fs::read_to_string(root.join("sdkconfig.defaults")).unwrap();
    assert!(text.starts_with(user), "{text}");
    assert!(
        !text.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536")
            && !text.contains("CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT=8192"),
        "{text}"
    );
    assert!(
        text.contains(
            "# CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN: your own line decides (--keep-sdkconfig); the policy says 1536"
        ),
        "{text}"
    );
    assert_eq!(configure_with(&root, &lean, &Options { check: true, ..both.clone() }).unwrap(), ExitCode::SUCCESS);
    let err = configure_with(&root, &lean, &Options { check: true, ..options() }).unwrap_err();
    assert_eq!(exit_code_of(&err), 2, "--check without the keeps reports the conflict: {err}");
    let unknown = keep(&[
        "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN",
        "CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT",
        "CONFIG_NOT_IN_THE_BLOCK",
    ]);
    assert!(configure_with(&root, &lean, &unknown).unwrap_err().to_string().contains("nothing to keep"));

    // After the block a differing line of the user's would win: refused as well.
    let app = application(&[("sdkconfig.defaults", "")]);
    let root = application_root(app.path()).unwrap();
    configure_with(&root, &lean, &options()).unwrap();
    let path = root.join("sdkconfig.defaults");
    let configured = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{configured}CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=4096\n")).unwrap();
    let err = configure_with(&root, &lean, &options()).unwrap_err();
    assert!(
        err.to_string().contains("yours 4096, the policy's 1536; the build would see yours (it comes after the block)"),
        "{err}"
    );
    // A stale second block after ours: an error for a run and for --check (it said 0 before).
    let stale = configured.replace("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536", "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384");
    std::fs::write(&path, format!("{configured}{stale}")).unwrap();
    let before = tree_of(&root);
    for check in [false, true] {
        let err = configure_with(&root, &lean, &Options { check, ..options() }).unwrap_err();
        assert_eq!(exit_code_of(&err), 2);
        assert!(err.to_string().contains("found 4 marker line(s)"), "{err}");
    }
    assert_eq!(tree_of(&root), before);
    // A marker of another version counts as a block too.
    std::fs::write(&path, "# >>> esp-libdatachannel policy (old) >>>\nCONFIG_X=y\n").unwrap();
    assert_eq!(exit_code_of(&configure_with(&root, &lean, &options()).unwrap_err()), 2);
}

/// Issue 27, class 3: `[sdkconfig_extra]` bypassed every check: out-of-range values passed
/// (kconfgen then builds with the default), `${...}` and `;` reached CMake, and a key the typed
/// sections set was written twice. Each is now exit 2 with file:line:key, nothing written.
#[test]
fn sdkconfig_extra_is_held_to_kconfig_types_ranges_and_characters() {
    let scratch = Scratch::new();
    configure_into(scratch.root(), &Policy::path_for("lean"), false, true).unwrap();
    let before = scratch.snapshot();
    let lean = shipped("lean");
    let cases = [
        ("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN = \"100\"", "the policy's [mbedtls] already sets it"),
        (
            "CONFIG_ESP_DC_LIBDATACHANNEL_SCTP_MAX_STREAMS = \"0\"",
            "the policy's components.libdatachannel.knobs.sctp_max_streams already sets it",
        ),
        ("CONFIG_ESP_DC_PORT_THREAD_PRIORITY = \"99\"", "99 is out of range 1..=24"),
        ("CONFIG_ESP_MEMTRACK_MAX_TASKS = \"2\"", "2 is out of range 4..=256"),
        ("CONFIG_ESP_DC_PORT_SHIM_RANDOM = \"5\"", "a bool option takes y or n"),
        ("CONFIG_ESP_DC_PORT_THREAD_PRIORITY = \"0x5\"", "an int option takes a decimal number"),
        (
            "CONFIG_ESP_DC_PORT_NEW_PLACEMENT_INTERNAL = \"y\"",
            "a member of the same Kconfig choice as CONFIG_ESP_DC_PORT_NEW_PLACEMENT_PSRAM",
        ),
        ("CONFIG_LWIP_LOCAL_HOSTNAME = '\"a${CMAKE_COMMAND}\"'", "the string contains '$'"),
        ("CONFIG_LWIP_LOCAL_HOSTNAME = '\"a;b\"'", "the string contains ';'"),
        ("CONFIG_LWIP_LOCAL_HOSTNAME = 'unquoted text'", "is not a value kconfgen reads"),
    ];
    for (line, expected) in cases {
        let text = with(&lean, "[sdkconfig_extra]\n", &format!("[sdkconfig_extra]\n{line}\n"));
        let path = scratch.policy(&text);
        let err = configure_into(scratch.root(), &path, false, true).unwrap_err();
        let message = err.to_string();
        let key = line.split(' ').next().unwrap();
        let at = text.lines().position(|l| l == line).unwrap() + 1;
        assert_eq!(exit_code_of(&err), 2, "{line}: {message}");
        assert!(message.starts_with(&format!("{}:{at}: sdkconfig_extra.{key}: ", path.display())), "{line}: {message}");
        assert!(message.contains(expected), "{line}: `{expected}` missing: {message}");
        assert_eq!(scratch.snapshot(), before, "{line}: written");
    }
    let fine = with(
        &lean,
        "[sdkconfig_extra]\n",
        "[sdkconfig_extra]\nCONFIG_ESP_DC_PORT_THREAD_PRIORITY = \"24\"\nCONFIG_ESP_MEMTRACK_MAX_TASKS = \"4\"\n",
    );
    assert!(defaults(&plan(scratch.root(), &scratch.policy(&fine)).unwrap())
        .contains("CONFIG_ESP_DC_PORT_THREAD_PRIORITY=24\n"));

    // Ranges of ESP-IDF's own options come from the tree in use.
    let Some(idf) = crate::idf::tree_for_tests() else {
        crate::idf::say_skipped("sdkconfig_extra_is_held_to_kconfig_types_ranges_and_characters (ESP-IDF ranges)");
        return;
    };
    let known = kconfig_keys::Known::new(Vec::new()).with_tree(&kconfig_keys::scan_tree(&idf).unwrap());
    let text = "[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"300\"\n";
    let extra: BTreeMap<String, String> = [("CONFIG_LWIP_MAX_SOCKETS".to_string(), "300".to_string())].into();
    let err = render::check_sdkconfig_keys(&[], &extra, &known, text, "p.toml").unwrap_err();
    assert!(
        err.to_string().starts_with("p.toml:2: sdkconfig_extra.CONFIG_LWIP_MAX_SOCKETS: 300 is out of range 1..=253"),
        "{err}"
    );
    let extra: BTreeMap<String, String> = [("CONFIG_LWIP_MAX_SOCKETS".to_string(), "16".to_string())].into();
    render::check_sdkconfig_keys(&[], &extra, &known, text, "p.toml").unwrap();
}
