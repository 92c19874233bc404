use super::validate::*;
use super::*;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(Policy::path_for(name)).unwrap()
}

fn parse_err(text: &str) -> String {
    Policy::parse(text, Path::new("p.toml")).unwrap_err().to_string()
}

#[test]
fn shipped_policies_parse() {
    for name in ["lean", "stock"] {
        let p = Policy::load(&Policy::path_for(name)).unwrap();
        assert_eq!(p.policy.name, name);
        assert_eq!(p.components.len(), components::placed().len());
    }
}

#[test]
fn lean_redirects_libsrtp_and_stock_does_not() {
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    assert_eq!(lean.component("libsrtp").placement, Placement::Psram);
    assert!(!lean.component("libsrtp").force_include.is_empty());
    assert!(stock.component("libsrtp").force_include.is_empty(), "the seed forgot libsrtp");
}

/// Issue 27, class 4: a quoted dotted table name was reported at line 1; a key holding a
/// line break printed a second, forged `error:` line; escape sequences reached the terminal.
#[test]
fn errors_name_the_real_line_and_show_keys_escaped() {
    let lean = shipped("lean");
    let text = format!("{lean}\n[components.\"lib.x\"]\nplacement = \"psram\"\n");
    let line = text.lines().position(|l| l.starts_with("[components.\"lib.x\"]")).unwrap() + 1;
    let err = parse_err(&text);
    assert!(err.starts_with(&format!("p.toml:{line}: components.lib.x: unknown component")), "{err}");

    let forged = lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\n\"CONFIG_A\\nerror: all good\" = \"y\"\n", 1);
    let line = forged.lines().position(|l| l.starts_with("\"CONFIG_A")).unwrap() + 1;
    let err = parse_err(&forged);
    assert_eq!(err.lines().count(), 1, "a forged line: {err}");
    assert!(
        err.starts_with(&format!("p.toml:{line}: sdkconfig_extra.CONFIG_A\\nerror: all good: not a Kconfig symbol")),
        "{err}"
    );
    let escape = lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\n\"CONFIG_\\u001b[2J\" = \"y\"\n", 1);
    let err = parse_err(&escape);
    assert!(!err.contains('\u{1b}') && err.contains("sdkconfig_extra.CONFIG_\\u{1b}[2J: "), "{err:?}");
    let value = lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\nCONFIG_X = \"\\u001b]0;x\\u0007\"\n", 1);
    let err = parse_err(&value);
    assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err:?}");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = shipped("lean").replacen("[components.libsrtp]\n", "[components.libsrtp]\nplacment = \"psram\"\n", 1);
    let line = text.lines().position(|l| l.starts_with("placment")).unwrap() + 1;
    let err = parse_err(&text);
    assert!(err.starts_with(&format!("p.toml:{line}: components.libsrtp")), "{err}");
    assert!(err.contains("placment"), "{err}");
}

#[test]
fn invalid_placement_names_its_line() {
    let text = shipped("lean");
    let start = text.find("[components.libsrtp]").unwrap();
    let rel = text[start..].find("placement = \"psram\"").unwrap();
    let mut bad = text.clone();
    bad.replace_range(start + rel..start + rel + "placement = \"psram\"".len(), "placement = \"flash\"");
    let line = line_of_offset(&bad, start + rel);
    let err = parse_err(&bad);
    assert!(err.starts_with(&format!("p.toml:{line}: components.libsrtp.placement: ")), "{err}");
    assert!(err.contains("flash"), "{err}");
}

#[test]
fn unknown_component_and_knob_are_refused() {
    let text = shipped("lean") + "\n[components.libfoo]\nplacement = \"psram\"\n";
    let err = parse_err(&text);
    assert!(err.contains(": components.libfoo: unknown component `libfoo`"), "{err}");

    let text =
        shipped("lean").replacen("[components.libjuice.knobs]\n", "[components.libjuice.knobs]\nwarp_factor = 9\n", 1);
    let line = text.lines().position(|l| l.starts_with("warp_factor")).unwrap() + 1;
    let err = parse_err(&text);
    assert!(err.starts_with(&format!("p.toml:{line}: components.libjuice.knobs.warp_factor: unknown knob")), "{err}");
}

#[test]
fn knob_out_of_range_and_missing_patch() {
    let lean = shipped("lean");
    let line = lean.lines().find(|l| l.starts_with("max_candidates =")).expect("lean sets max_candidates");
    let text = lean.replacen(line, "max_candidates = 0", 1);
    assert!(parse_err(&text).contains("0 is out of range 2..=64"));
    let text = shipped("lean").replacen("[components.plog]\n", "[components.plog]\npatches = [\"nope.patch\"]\n", 1);
    let err = parse_err(&text);
    assert!(err.contains("components.plog.patches: no patch `nope.patch`"), "{err}");
}

#[test]
fn syntax_error_names_line() {
    let text = "[policy]\nname = \"x\"\ndescription = \n";
    let err = parse_err(text);
    assert!(err.starts_with("p.toml:3: description: TOML syntax error"), "{err}");
}

#[test]
fn knob_value_defaults_to_stock() {
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let spec = knob("libdatachannel", "sctp_max_streams").unwrap();
    assert_eq!(stock.knob_value(spec), 1024);
    assert!(lean.knob_value(spec) < 1024);
    assert_eq!(spec.kconfig_symbol(), "ESP_DC_LIBDATACHANNEL_SCTP_MAX_STREAMS");
}

/// docs/policy.md's knob table has one row per knob of KNOBS and no other: lean's and stock's
/// values as shipped, and how it acts as the row says (the definition, or the C API field).
#[test]
fn knob_table_in_docs_follows_the_policies() {
    let doc = std::fs::read_to_string(crate::fsutil::project_root().join("docs/policy.md")).unwrap();
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| knob | how it acts |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), KNOBS.len(), "docs/policy.md's knob table: {} rows for {} knobs", table.len(), KNOBS.len());
    for spec in KNOBS {
        let key = format!("| `{}.{}` |", spec.component, spec.name);
        let row =
            table.iter().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("docs/policy.md has no row {key}"));
        let cells: Vec<&str> = row.trim_end_matches('|').rsplitn(3, '|').map(str::trim).collect();
        assert_eq!(cells[1], lean.knob_value(spec).to_string(), "{key} lean");
        assert_eq!(cells[0], stock.knob_value(spec).to_string(), "{key} stock");
        let how = match spec.effect {
            KnobEffect::Define(name) => format!("| Define `{name}`"),
            KnobEffect::Runtime(api, field) => format!("| Runtime: `{}`", api.target(field)),
        };
        assert!(row[key.len() - 1..].starts_with(&how), "{key}: how it acts should start with {how}");
    }
}

/// esp_dc_port_init.c and the lab's driver expand the generated list and name no run-time
/// knob themselves: a knob added to KNOBS reaches both without touching either.
#[test]
fn runtime_knob_consumers_name_no_knob() {
    let root = crate::fsutil::project_root();
    let expanders = [root.join("components/esp_dc_init/src/esp_dc_port_init.c"), root.join("lab/driver/knobs.cpp")];
    let mut files = expanders.to_vec();
    files.extend(crate::replica::driver_files(&root.join("lab/driver")).unwrap());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if expanders.contains(&file) {
            assert!(text.contains("ESP_DC_RUNTIME_KNOBS("), "{} does not expand the list", file.display());
        }
        for k in KNOBS.iter().filter(|k| matches!(k.effect, KnobEffect::Runtime(..))) {
            let KnobEffect::Runtime(_, field) = k.effect else { unreachable!() };
            for word in [k.name.to_string(), k.lab_env(), k.kconfig_symbol(), field.to_string()] {
                assert!(!text.contains(&word), "{} names {word} by hand", file.display());
            }
        }
    }
}

/// Every run-time knob reaches libdatachannel through esp_dc_init: for each API a row uses,
/// esp_dc_port_init.c expands the rows of that API into an assignment or a call (the SCTP
/// settings in esp_dc_port_init(), rtcConfiguration in esp_dc_port_configure(), the NACK
/// responder in esp_dc_port_chain_nack_responder()). An API whose expansion is empty
/// everywhere would drop its knobs silently; the examples call the two functions
/// (configure::tests and the ESP-IDF e2e tests build and run them).
#[test]
fn every_runtime_api_is_applied_by_esp_dc_init() {
    let path = crate::fsutil::project_root().join("components/esp_dc_init/src/esp_dc_port_init.c");
    let source = std::fs::read_to_string(&path).unwrap();
    let mut apis: Vec<RuntimeApi> = KNOBS
        .iter()
        .filter_map(|k| if let KnobEffect::Runtime(api, _) = k.effect { Some(api) } else { None })
        .collect();
    apis.dedup();
    assert!(apis.len() >= 3, "SCTP settings, rtcConfiguration and the NACK responder carry knobs");
    for api in apis {
        let define = format!("#define {}(field, name, kconfig)", api.token());
        let applied = source.lines().filter_map(|l| l.trim().strip_prefix(&define)).any(|rest| !rest.trim().is_empty());
        assert!(applied, "esp_dc_port_init.c never applies the {} rows (`{define} <something>`)", api.token());
    }
    for (example, call) in [
        ("datachannel_echo", "esp_dc_port_configure(&config)"),
        ("h264_sender", "esp_dc_port_configure(&config)"),
        ("h264_sender", "esp_dc_port_chain_nack_responder(track)"),
        ("whep_camera", "esp_dc_port_configure(&config)"),
        ("whep_camera", "esp_dc_port_chain_nack_responder(track)"),
    ] {
        let main = crate::fsutil::project_root().join(format!("examples/{example}/main/{example}_main.c"));
        assert!(std::fs::read_to_string(&main).unwrap().contains(call), "{example} does not call {call}");
    }
}

#[test]
fn dtls_read_buffer_must_hold_a_record() {
    let text = shipped("lean").replacen(
        "[components.libdatachannel.knobs]\n",
        "[components.libdatachannel.knobs]\ndtls_recv_buffer_bytes = 1024\n",
        1,
    );
    let text = text.lines().filter(|l| !l.starts_with("dtls_recv_buffer_bytes = 1536")).collect::<Vec<_>>().join("\n");
    let err = parse_err(&text);
    assert!(
        err.contains(
            "components.libdatachannel.knobs.dtls_recv_buffer_bytes: 1024 is below mbedtls.ssl_in_content_len (1536)"
        ),
        "{err}"
    );
}

#[test]
fn driven_by_pool_needs_both_of_its_patches() {
    let lean = shipped("lean");
    assert!(lean.contains("driven_by_pool = 1"), "lean drives libjuice from the pool");
    for patch in ["\"libjuice/driven-by-pool.patch\"", "\"libdatachannel/juice-driven-by-pool.patch\","] {
        let text = lean.replacen(patch, "", 1);
        assert_ne!(text, lean, "{patch} is listed in lean");
        let err = parse_err(&text);
        assert!(err.contains("components.libjuice.knobs.driven_by_pool: 1 needs"), "{err}");
    }
}

#[test]
fn the_nack_window_needs_its_patch() {
    let lean = shipped("lean");
    let text = lean.replacen("\"libdatachannel/nack-window.patch\",", "", 1);
    assert_ne!(text, lean, "lean lists nack-window.patch");
    let err = parse_err(&text);
    assert!(
        err.contains("components.libdatachannel.knobs.nack_window_ms: 450 needs `libdatachannel/nack-window.patch`"),
        "{err}"
    );
}

/// Issue 18: numbers past their Kconfig option's range passed and kconfgen then dropped
/// them. Each is refused at its line, before anything is written.
#[test]
fn numbers_outside_their_kconfig_range_are_refused_at_their_line() {
    let lean = shipped("lean");
    for (from, to, says) in [
        ("stack_bytes = 15360", "stack_bytes = 4294967295", "components.libdatachannel.threads.stack_bytes: 4294967295 is out of range 2048..=131072 of CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES"),
        ("emergency_pool_bytes = 0", "emergency_pool_bytes = 2147483648", "cxx.emergency_pool_bytes: 2147483648 is out of range 0..=2147483647 of CONFIG_COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE"),
        ("reserve_internal_bytes = 32768", "reserve_internal_bytes = 4294967295", "memory.reserve_internal_bytes: 4294967295 is out of range 0..=262144 of CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL"),
        ("always_internal_bytes = ", "always_internal_bytes = 131073 #", "memory.always_internal_bytes: 131073 is out of range 0..=131072"),
        ("stack_depth = ", "stack_depth = 33 #", "heap_tracing.stack_depth: 33 is out of range 0..=32"),
        ("records = ", "records = 100001 #", "heap_tracing.records: 100001 is out of range 0..=100000"),
        ("ssl_in_content_len = ", "ssl_in_content_len = 16385 #", "mbedtls.ssl_in_content_len: 16385 is out of range 512..=16384"),
        ("default_stack_bytes = 8192", "default_stack_bytes = 2147483648", "pthread.default_stack_bytes: 2147483648 is out of range 2048..=2147483647"),
    ] {
        assert!(lean.contains(from), "lean has no `{from}`");
        let text = lean.replacen(from, to, 1);
        let line = text.lines().position(|l| l.contains(to.trim_end_matches(" #"))).unwrap() + 1;
        let err = parse_err(&text);
        assert!(err.starts_with(&format!("p.toml:{line}: {says}")), "{err}");
    }
    // The pthread default stands in for libdatachannel's threads when those are not set.
    let text = lean.replacen("threads = { stack_bytes = 15360, placement = \"psram\" }\n", "", 1).replacen(
        "default_stack_bytes = 8192",
        "default_stack_bytes = 262144",
        1,
    );
    assert!(parse_err(&text).contains("pthread.default_stack_bytes: 262144 is out of range 2048..=131072 of CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES"), "{}", parse_err(&text));
    // A stack for another component's threads does not reach the Kconfig option.
    assert!(Policy::parse(
        &lean.replacen("default_stack_bytes = 8192", "default_stack_bytes = 262144", 1),
        Path::new("p.toml")
    )
    .is_ok());
}

/// Issue 18: policy strings reached generated files unescaped. Each reproducer is refused
/// with `file:line: key: what`.
#[test]
fn strings_that_would_break_generated_files_are_refused_at_their_line() {
    let lean = shipped("lean");
    let description = "description = \"All allocations placed, upstream's desktop sizes cut to MCU sizes\"";
    let cases = [
        (
            description,
            "description = \"x\\n# ---- end of policy block ----\\nCONFIG_EVIL=y\"",
            "policy.description: contains the control character '\\n'",
        ),
        (
            description,
            "description = \"x\\rCONFIG_EVIL=y\"",
            "policy.description: contains the control character '\\r'",
        ),
        ("name = \"lean\"", "name = \"le\\\"an\"", "policy.name: `le\\\"an` is not a safe policy name"),
        ("name = \"lean\"", "name = \"../../x\"", "policy.name: `../../x` is not a safe policy name"),
        (
            "[components.plog]\n",
            "[components.plog]\ndefinitions = { EVIL = \"1\\\")\\nexecute_process(COMMAND touch /tmp/evil)\\n#\" }\n",
            "components.plog.definitions.EVIL: the value contains '\"'",
        ),
        (
            "[components.plog]\n",
            "[components.plog]\ndefinitions = { EVIL = \"${CMAKE_COMMAND}\" }\n",
            "components.plog.definitions.EVIL: the value contains '$'",
        ),
        (
            "[components.plog]\n",
            "[components.plog]\ndefinitions = { EVIL = \"a;b\" }\n",
            "components.plog.definitions.EVIL: the value contains ';'",
        ),
        (
            "force_include = \"\"",
            "force_include = \"../../../README.md\"",
            "components.esp_dc_port.force_include: `../../../README.md` must be a relative path",
        ),
        (
            "force_include = \"\"",
            "force_include = \"/etc/hostname\"",
            "components.esp_dc_port.force_include: `/etc/hostname` must be a relative path",
        ),
        (
            "force_include = \"\"",
            "force_include = \"a\\\"b.h\"",
            "components.esp_dc_port.force_include: only letters, digits",
        ),
        (
            "[components.plog]\n",
            "[components.plog]\npatches = [\"../README.md\"]\n",
            "components.plog.patches: `../README.md`: `../README.md` must be a relative path",
        ),
        (
            "[components.plog]\n",
            "[components.plog]\npatches = [\"x\\n.patch\"]\n",
            "components.plog.patches: `x\\n.patch`: only letters, digits",
        ),
    ];
    for (from, to, says) in cases {
        assert!(lean.contains(from), "lean has no `{from}`");
        let text = lean.replacen(from, to, 1);
        let first = to.lines().last().filter(|_| to.starts_with('[')).unwrap_or(to);
        let line = text.lines().position(|l| l == first.trim_end_matches('\n')).unwrap() + 1;
        let err = parse_err(&text);
        assert!(err.starts_with(&format!("p.toml:{line}: {says}")), "expected `{says}` at line {line}:\n{err}");
    }
    let text = lean.replacen(
        "[sdkconfig_extra]\n",
        "[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"16\\nCONFIG_EVIL=y\"\n",
        1,
    );
    let line = text.lines().position(|l| l.starts_with("CONFIG_LWIP_MAX_SOCKETS")).unwrap() + 1;
    assert!(
        parse_err(&text).starts_with(&format!(
            "p.toml:{line}: sdkconfig_extra.CONFIG_LWIP_MAX_SOCKETS: contains the control character"
        )),
        "{}",
        parse_err(&text)
    );
    // Plain definitions, names and the shipped policies pass.
    assert_eq!(unsafe_definition(&DefinitionValue::Str("-O2 x=1,y:2 (a+b)*c/d <e> 'f' # g".into())), None);
    assert_eq!(unsafe_name("lean-2_b"), None);
    assert!(unsafe_name("").is_some() && unsafe_name("-x").is_some() && unsafe_name(&"a".repeat(65)).is_some());
}

/// A relative path that is fine as text but leads out through a symbolic link is refused too.
#[test]
fn a_symbolic_link_out_of_the_base_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("include");
    std::fs::create_dir_all(base.join("ok")).unwrap();
    std::fs::write(base.join("ok/a.h"), "").unwrap();
    std::os::unix::fs::symlink(dir.path(), base.join("out")).unwrap();
    std::fs::write(dir.path().join("secret.h"), "").unwrap();
    assert_eq!(unsafe_path("ok/a.h", &base), None);
    assert!(
        unsafe_path("out/secret.h", &base).unwrap().contains("leads outside"),
        "{:?}",
        unsafe_path("out/secret.h", &base)
    );
    assert!(unsafe_path("ok//a.h", &base).is_some() && unsafe_path("./ok/a.h", &base).is_some());
}
