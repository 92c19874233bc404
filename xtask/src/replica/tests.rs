//! The replica's build: ESP-IDF's warning options, the content cache key, artifacts written whole.

use super::build_recorder;
use super::tools::compiler;
use crate::fsutil::project_root;
use crate::policy::Policy;
use std::path::{Path, PathBuf};

/// ESP-IDF's common compile options (tools/cmake/build.cmake), with the top CMakeLists.txt's
/// -Werror -> -Werror=all, are exactly what the lab gives the stack.
#[test]
fn lab_warning_flags_are_esp_idf_build_cmake_compile_options() {
    use crate::render::host::{IDF_C_WARNING_FLAGS, IDF_WARNING_FLAGS};
    let Some(idf) = crate::idf::tree_for_tests() else {
        crate::idf::say_skipped("lab_warning_flags_are_esp_idf_build_cmake_compile_options");
        return;
    };
    let build = std::fs::read_to_string(idf.join("tools/cmake/build.cmake")).unwrap();
    let function = &build
        [build.find("function(__build_set_default_build_specifications)").expect("the function in build.cmake")..];
    let start = function.find("list(APPEND compile_options").expect("list(APPEND compile_options in build.cmake")
        + "list(APPEND compile_options".len();
    let body = &function[start..];
    // Quoted options up to the closing parenthesis, comments dropped.
    let mut options = Vec::new();
    for line in body.lines() {
        let code = line.split('#').next().unwrap();
        let mut rest = code;
        while let Some(a) = rest.find('"') {
            let b = rest[a + 1..].find('"').unwrap() + a + 1;
            options.push(rest[a + 1..b].to_string());
            rest = &rest[b + 1..];
        }
        if rest.contains(')') {
            break;
        }
    }
    let top = std::fs::read_to_string(idf.join("CMakeLists.txt")).unwrap();
    assert!(
        top.contains(r#"idf_build_replace_option_from_property(COMPILE_OPTIONS "-Werror" "-Werror=all")"#),
        "the -Werror=all replacement moved"
    );
    let expected: Vec<String> = options
        .into_iter()
        .filter(|o| o.starts_with("-W"))
        .map(|o| if o == "-Werror" { "-Werror=all".to_string() } else { o })
        .collect();
    assert_eq!(IDF_WARNING_FLAGS, expected.iter().map(String::as_str).collect::<Vec<_>>().as_slice());
    for c in IDF_C_WARNING_FLAGS {
        assert!(
            top.contains(&format!("list(APPEND c_compile_options \"{c}\")")),
            "{c} is not in ESP-IDF's CMakeLists.txt"
        );
    }
    // And esp_config.h still removes the deprecated APIs the lab's mbedTLS config removes.
    let esp_config = std::fs::read_to_string(idf.join("components/mbedtls/port/include/mbedtls/esp_config.h")).unwrap();
    assert!(esp_config.lines().any(|l| l.trim() == "#define MBEDTLS_DEPRECATED_REMOVED"));
}

/// Every stack project gets ESP-IDF's warning options and its own template's, and only its own;
/// the lab's mbedTLS removes the deprecated APIs as esp_config.h does.
#[test]
fn stack_projects_get_esp_idf_warning_flags_and_their_template_options() {
    use crate::render::host::{component_flags, mbedtls_config_lines, project_include_cmake, IDF_WARNING_FLAGS};
    let policy = Policy::load(&Policy::path_for("lean")).unwrap();
    let flags =
        component_flags(&policy, &project_root(), &project_root().join("components/esp_dc_port/include")).unwrap();
    let text = project_include_cmake(&flags);
    let block = |project: &str| -> String {
        let start = text
            .find(&format!("if(PROJECT_NAME STREQUAL \"{project}\")"))
            .unwrap_or_else(|| panic!("no block for {project}:\n{text}"));
        let end = text[start..].find("endif()").unwrap() + start;
        text[start..end].to_string()
    };
    for (_, project) in crate::components::host_projects() {
        let b = block(project);
        assert!(b.contains(&IDF_WARNING_FLAGS.join(" ")), "{project}: {b}");
        assert!(b.contains("$<$<COMPILE_LANGUAGE:C>:-Wno-old-style-declaration>"), "{project}: {b}");
    }
    assert!(block("usrsctplib").contains(
        "-Wno-address-of-packed-member -Wno-deprecated-declarations -Wno-unused-variable -Wno-unused-but-set-variable"
    ));
    assert!(block("libdatachannel").contains("-Wno-missing-field-initializers"));
    assert!(
        !block("libjuice").contains("-Wno-missing-field-initializers")
            && !block("libsrtp2").contains("-Wno-address-of-packed-member")
    );
    // A subproject drops its parent's warning options before adding its own.
    assert!(text.contains("(^|:)-W"), "{text}");
    let mbed = mbedtls_config_lines(&policy);
    assert!(
        mbed.contains("#define MBEDTLS_DEPRECATED_REMOVED\n") && mbed.contains("#undef MBEDTLS_SSL_PROTO_TLS1_3\n"),
        "{mbed}"
    );
}

/// Issue 30: libjuice keeps a `struct sockaddr_storage` in every candidate and STUN entry of its
/// agent; on the chip that is lwIP's 28 bytes, on glibc 128. Under every policy the replica
/// compiles libjuice (and only libjuice) with lab/recorder/lwip_sockaddr.h, whose static
/// assertions hold it at lwIP's size, so the lab does not count ~5 KB per agent the chip never has.
#[test]
fn libjuice_is_compiled_with_lwips_sockaddr_storage_size() {
    use crate::render::host::component_flags;
    let header = std::fs::read_to_string(project_root().join("lab/recorder/lwip_sockaddr.h")).unwrap();
    assert!(header.contains("sizeof(struct esp_dc_lwip_sockaddr_storage) == 28"), "{header}");
    assert!(header.contains("#define sockaddr_storage esp_dc_lwip_sockaddr_storage"), "{header}");
    // lwIP's struct as ESP-IDF ships it, when the tree is at hand: 1 + 1 + 2 + 3*4 + 3*4 (IPv6) bytes.
    if let Ok(idf) = std::env::var("IDF_PATH") {
        let lwip = Path::new(&idf).join("components/lwip/lwip/src/include/lwip/sockets.h");
        if let Ok(text) = std::fs::read_to_string(&lwip) {
            let start = text.find("struct sockaddr_storage {").expect("lwIP defines sockaddr_storage");
            let body = &text[start..start + text[start..].find("};").unwrap()];
            for field in [
                "u8_t        s2_len;",
                "sa_family_t ss_family;",
                "char        s2_data1[2];",
                "u32_t       s2_data2[3];",
                "u32_t       s2_data3[3];",
            ] {
                assert!(body.contains(field), "lwIP's sockaddr_storage changed ({field}): {body}");
            }
        }
    }
    for name in ["lean", "stock"] {
        let policy = Policy::load(&Policy::path_for(name)).unwrap();
        let flags =
            component_flags(&policy, &project_root(), &project_root().join("components/esp_dc_port/include")).unwrap();
        for (project, f) in &flags {
            let has = f.c_only.iter().any(|o| o.starts_with("-include") && o.ends_with("lab/recorder/lwip_sockaddr.h"));
            assert_eq!(has, *project == "libjuice", "{name}: {project}: {:?}", f.c_only);
        }
    }
}

/// Cache keys must not change with the Rust release or the clone's path: a second clone (CI's
/// scratch copy) reuses the lab's builds. FNV-1a of known input, fixed forever.
#[test]
fn cache_keys_are_stable_across_toolchains() {
    use super::cache::hash_of;
    assert_eq!(hash_of(&[]), "cbf29ce484222325");
    assert_eq!(hash_of(&[b"a", b"b"]), hash_of(&[b"a", b"b"]));
    assert_ne!(hash_of(&[b"ab"]), hash_of(&[b"a", b"b"]), "part boundaries count");
}

/// Issue 17: the host-build key held the clone's absolute path, so a second clone rebuilt both
/// policies. Two copies of the key's inputs at different paths must give one key, and a change
/// to any input (a port header, port_host.c, a template, a staged source) a different one.
#[test]
fn two_clones_at_different_paths_share_the_host_cache_key() {
    use super::cache::cache_key;
    use crate::upstream::Tree;
    let real = project_root();
    let clone = |dir: &Path| {
        let mut files = vec![
            "lab/recorder/port_host.c".to_string(),
            "lab/recorder/lwip_sockaddr.h".to_string(),
            "upstream/Cargo.toml".to_string(),
        ];
        for (row, _) in crate::components::host_projects() {
            files.push(format!("templates/{}/CMakeLists.txt", row.name));
        }
        for entry in std::fs::read_dir(real.join("components/esp_dc_port/include")).unwrap() {
            files.push(format!("components/esp_dc_port/include/{}", entry.unwrap().file_name().to_string_lossy()));
        }
        for f in files {
            std::fs::create_dir_all(dir.join(&f).parent().unwrap()).unwrap();
            std::fs::copy(real.join(&f), dir.join(&f)).unwrap();
        }
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b_root = b.path().join("deeper/esp-libdatachannel");
    clone(a.path());
    clone(&b_root);
    let mut stack = Tree::default();
    stack.files.insert(PathBuf::from("src/peerconnection.cpp"), b"int x;\n".to_vec());
    stack.files.insert(PathBuf::from("deps/usrsctp/fix.patch"), b"--- a\n+++ b\n".to_vec());
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    let key = |root: &Path, policy: &Policy, stack: &Tree| cache_key(root, policy, stack).unwrap();
    let first = key(a.path(), &lean, &stack);
    assert_eq!(first, key(&b_root, &lean, &stack), "same content at another path");
    assert_ne!(first, key(a.path(), &stock, &stack), "another policy");
    let mut patched = stack.clone();
    patched.files.get_mut(Path::new("src/peerconnection.cpp")).unwrap().push(b' ');
    assert_ne!(first, key(a.path(), &lean, &patched), "a patched source");
    // A template counts through the warning options it adds (all the host build takes from it).
    for (f, extra) in [
        ("lab/recorder/port_host.c", "\n"),
        ("lab/recorder/lwip_sockaddr.h", "\n"),
        ("components/esp_dc_port/include/esp_dc_alloc_redirect.h", "\n"),
        ("templates/usrsctp/CMakeLists.txt", "\ntarget_compile_options(${COMPONENT_LIB} PRIVATE -Wno-format)\n"),
    ] {
        let path = b_root.join(f);
        let original = std::fs::read(&path).unwrap();
        std::fs::write(&path, [original.as_slice(), extra.as_bytes()].concat()).unwrap();
        assert_ne!(first, key(&b_root, &lean, &stack), "{f} changed");
        std::fs::write(&path, original).unwrap();
    }
    assert_eq!(first, key(&b_root, &lean, &stack));
}

/// Issue 17: cached artifacts were compiled straight to their final name and reused when that
/// name existed, so a second writer (parallel tests, a second process) could take a half-written
/// library. Builders racing for one artifact must each get it whole, with no partial files left.
#[test]
fn concurrent_builders_of_one_artifact_each_get_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let recorder_dir = project_root().join("lab/recorder");
    let libs: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (dir, recorder_dir) = (dir.path(), &recorder_dir);
                s.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(300 * i));
                    let lib = build_recorder(dir, recorder_dir).unwrap();
                    // Whole: the section headers an ELF file ends with are all there.
                    let bytes = std::fs::read(&lib).unwrap();
                    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
                    assert_eq!(&bytes[..5], b"\x7fELF\x01", "a 32-bit ELF file");
                    assert!(u32_at(0x20) + u16_at(0x2e) * u16_at(0x30) <= bytes.len(), "{} cut short", lib.display());
                    lib
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(libs.windows(2).all(|w| w[0] == w[1]));
    let leftovers: Vec<_> = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A failed artifact build says why: no compiler (and how to get one), or the compiler's own
/// error, never only "failed".
#[test]
fn a_failed_artifact_build_names_its_cause() {
    use super::tools::compile_artifact;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lib/libx.so");
    let sh = xshell::Shell::new().unwrap();
    let err =
        compile_artifact(&out, "libx.so", |_| xshell::cmd!(sh, "/nonexistent/cc").into()).unwrap_err().to_string();
    assert!(err.contains("no compiler `/nonexistent/cc`") && err.contains("scripts/setup.sh"), "{err}");
    let bad = dir.path().join("bad.c");
    std::fs::write(&bad, "int broken(void) { return undeclared_name; }\n").unwrap();
    let err = compile_artifact(&out, "libx.so", |to| {
        compiler(&sh, false).args(["-shared", "-fPIC", "-o"]).arg(to).arg(&bad).into()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("building libx.so failed") && err.contains("undeclared_name"), "{err}");
    assert!(!out.exists() && std::fs::read_dir(out.parent().unwrap()).unwrap().next().is_none(), "nothing left behind");
}

/// A feature the device's component leaves out is left out of the replica too: libjuice's
/// template defines NO_SERVER, so the host build must configure it with NO_SERVER=ON (otherwise
/// audit and the host's flash figures count server.c, which the device never compiles).
#[test]
fn replica_leaves_out_what_the_device_components_define_away() {
    let template = std::fs::read_to_string(project_root().join("templates/libjuice/CMakeLists.txt")).unwrap();
    let definitions = template
        .lines()
        .find(|l| l.trim_start().starts_with("target_compile_definitions"))
        .expect("libjuice's template sets compile definitions");
    let device_defines = definitions.split_whitespace().any(|w| w == "NO_SERVER");
    let replica_sets = super::STACK_OPTIONS.contains(&("NO_SERVER", "ON"));
    assert_eq!(device_defines, replica_sets, "NO_SERVER: device defines {device_defines}, replica sets {replica_sets}");
}
