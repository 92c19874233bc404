//! What the replica compiles the stack with, rendered from the policy: per component the
//! force-include, caps and id, definitions and warning options (ESP-IDF's and the component
//! template's); the knob definitions; mbedTLS's configuration lines; the CMake include that
//! hands them to each project. (The build's content key is `replica::cache`'s.)

use crate::components;
use crate::policy::{KnobEffect, Policy, KNOBS};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// mbedTLS as ESP-IDF 5.5 configures it (components/mbedtls/port/include/mbedtls/esp_config.h
/// read with the sdkconfig our policies render: CONFIG_MBEDTLS_SSL_PROTO_DTLS and
/// CONFIG_MBEDTLS_SSL_DTLS_SRTP on, everything else ESP-IDF's default), as far as it decides WHICH
/// APIs exist: code using something esp_config.h leaves out must fail here as it fails in idf.py.
/// (Its memory/platform hooks - PLATFORM_MEMORY, MD5_ALT, ROM tables - change no API the stack
/// sees and are the lab's to measure.) Then the policy's record lengths.
pub(crate) fn mbedtls_config_lines(policy: &Policy) -> String {
    format!(
        "\n/* esp-libdatachannel lab: what ESP-IDF 5.5's esp_config.h decides about which APIs exist */\n\
         #define MBEDTLS_SSL_DTLS_SRTP\n\
         /* esp_config.h line ~3101, unconditional: deprecated APIs are gone (mbedtls_ssl_conf_max_version, \
         mbedtls_x509write_crt_set_serial, ...) */\n\
         #define MBEDTLS_DEPRECATED_REMOVED\n\
         /* CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 off: no TLS 1.3 (mbedtls_ssl_conf_tls13_*, TLS 1.3 suites) */\n\
         #undef MBEDTLS_SSL_PROTO_TLS1_3\n#undef MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE\n\
         #undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_ENABLED\n#undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED\n\
         #undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_EPHEMERAL_ENABLED\n\
         /* DTLS/TLS features ESP-IDF leaves off: mbedtls_ssl_export_keying_material, mbedtls_ssl_set_cid, \
         mbedtls_ssl_context_save/load, mbedtls_debug_*, mbedtls_timing_*, mbedtls_net_*, wall-clock dates */\n\
         #undef MBEDTLS_SSL_KEYING_MATERIAL_EXPORT\n#undef MBEDTLS_SSL_DTLS_CONNECTION_ID\n\
         #undef MBEDTLS_SSL_DTLS_CONNECTION_ID_COMPAT\n#undef MBEDTLS_SSL_CONTEXT_SERIALIZATION\n\
         #undef MBEDTLS_DEBUG_C\n#undef MBEDTLS_TIMING_C\n#undef MBEDTLS_NET_C\n#undef MBEDTLS_HAVE_TIME_DATE\n\
         /* Ciphers, hashes and key exchanges ESP-IDF leaves off (also what DTLS can negotiate) */\n\
         #undef MBEDTLS_CHACHAPOLY_C\n#undef MBEDTLS_CHACHA20_C\n#undef MBEDTLS_POLY1305_C\n\
         #undef MBEDTLS_CAMELLIA_C\n#undef MBEDTLS_DES_C\n#undef MBEDTLS_CMAC_C\n#undef MBEDTLS_HKDF_C\n\
         #undef MBEDTLS_NIST_KW_C\n#undef MBEDTLS_SHA3_C\n#undef MBEDTLS_RIPEMD160_C\n#undef MBEDTLS_ECJPAKE_C\n\
         #undef MBEDTLS_ECP_DP_CURVE448_ENABLED\n#undef MBEDTLS_DHM_C\n\
         #undef MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED\n#undef MBEDTLS_KEY_EXCHANGE_DHE_PSK_ENABLED\n\
         #undef MBEDTLS_KEY_EXCHANGE_PSK_ENABLED\n#undef MBEDTLS_KEY_EXCHANGE_ECDHE_PSK_ENABLED\n\
         #undef MBEDTLS_KEY_EXCHANGE_RSA_PSK_ENABLED\n\
         /* the policy's record buffers */\n\
         #undef MBEDTLS_SSL_IN_CONTENT_LEN\n#define MBEDTLS_SSL_IN_CONTENT_LEN {}\n\
         #undef MBEDTLS_SSL_OUT_CONTENT_LEN\n#define MBEDTLS_SSL_OUT_CONTENT_LEN {}\n",
        policy.mbedtls.ssl_in_content_len, policy.mbedtls.ssl_out_content_len
    )
}

/// The warning options ESP-IDF 5.5 compiles every component with: the `compile_options` of
/// tools/cmake/build.cmake `__build_set_default_build_specifications`, with "-Werror" replaced by
/// "-Werror=all" as the top CMakeLists.txt does under CONFIG_COMPILER_DISABLE_DEFAULT_ERRORS=y
/// (ESP-IDF's default). The stack (libdatachannel, libjuice, usrsctp, libsrtp) gets them, so a lab
/// build fails where idf.py fails; mbedTLS itself and our lab code (recorder, driver, port_host)
/// keep `-w`. lab::tests checks this list against the ESP-IDF tree.
pub const IDF_WARNING_FLAGS: &[&str] = &[
    "-Wall",
    "-Werror=all",
    "-Wno-error=unused-function",
    "-Wno-error=unused-variable",
    "-Wno-error=unused-but-set-variable",
    "-Wno-error=deprecated-declarations",
    "-Wextra",
    "-Wno-error=extra",
    "-Wno-unused-parameter",
    "-Wno-sign-compare",
    "-Wno-enum-conversion",
];

/// C only: ESP-IDF's top CMakeLists.txt adds this to `c_compile_options` for GCC.
pub const IDF_C_WARNING_FLAGS: &[&str] = &["-Wno-old-style-declaration"];

/// Each component's own warning options: the `-W...` arguments of every `target_compile_options`
/// in templates/<component>/CMakeLists.txt, which is what the ESP-IDF component adds after
/// ESP-IDF's own (e.g. usrsctp's -Wno-address-of-packed-member).
pub fn template_warning_options(root: &Path, component: &str) -> Result<Vec<String>> {
    let path = root.join("templates").join(component).join("CMakeLists.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(warning_options_in(&text))
}

fn warning_options_in(cmake: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cmake;
    while let Some(start) = rest.find("target_compile_options(") {
        let body = &rest[start + "target_compile_options(".len()..];
        let end = body.find(')').unwrap_or(body.len());
        out.extend(body[..end].split_whitespace().filter(|w| w.starts_with("-W")).map(str::to_string));
        rest = &body[end..];
    }
    out
}

/// What a component's sources get: C-only options (force-include, caps, id), definitions, and
/// warning options (ESP-IDF's, then the component template's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectFlags {
    pub c_only: Vec<String>,
    pub definitions: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compile flags for each component, from the policy: force-include, caps, id, definitions, and
/// ESP-IDF's warning options plus the component template's (read from the clone at `root`).
pub(crate) fn component_flags(
    policy: &Policy,
    root: &Path,
    include_dir: &Path,
) -> Result<BTreeMap<&'static str, ProjectFlags>> {
    let mut out = BTreeMap::new();
    for (row, project) in components::host_projects() {
        let component = row.name;
        let spec = policy.component(component);
        let mut c_only = Vec::new();
        if !spec.force_include.is_empty() {
            c_only.push(format!("-include{}", include_dir.join(&spec.force_include).display()));
            c_only.push(format!("-DESP_DC_ALLOC_CAPS={}", super::caps_bits(spec.placement)));
            c_only.push(format!("-DESP_DC_COMPONENT_ID={}", row.id));
        }
        let definitions: Vec<String> = spec.definitions.iter().map(|(k, v)| format!("{k}={}", v.render())).collect();
        let mut warnings: Vec<String> = IDF_WARNING_FLAGS.iter().map(|f| f.to_string()).collect();
        warnings.extend(template_warning_options(root, component)?);
        out.insert(project, ProjectFlags { c_only, definitions, warnings });
    }
    Ok(out)
}

/// Knob definitions apply to every subproject: usrsctp's own_threads is read by libdatachannel,
/// and the names are distinct, so one global list is both simplest and what the ESP-IDF tree does
/// with PUBLIC definitions.
pub(crate) fn knob_definitions(policy: &Policy) -> Vec<String> {
    KNOBS
        .iter()
        .filter_map(|k| match k.effect {
            KnobEffect::Define(name) if policy.knob_value(k) != k.stock => {
                Some(format!("-D{name}={}", policy.knob_value(k)))
            }
            _ => None,
        })
        .collect()
}

pub(crate) fn project_include_cmake(flags: &BTreeMap<&'static str, ProjectFlags>) -> String {
    let mut s = String::from(
        "# Generated by `cargo xtask lab`: included after every project() of the stack\n\
         # (CMAKE_PROJECT_INCLUDE) to give each component the policy's flags and ESP-IDF's warning\n\
         # options, as the ESP-IDF component tree does (build.cmake + target_compile_options).\n\
         # A subproject inherits its parent directory's options: drop the parent's redirect so\n\
         # a dependency without one (libsrtp under `stock`) allocates as on the device, and the\n\
         # parent's warning options so each component gets only its own template's.\n\
         get_property(_esp_dc_options DIRECTORY PROPERTY COMPILE_OPTIONS)\n\
         list(FILTER _esp_dc_options EXCLUDE REGEX \"ESP_DC_ALLOC_CAPS|ESP_DC_COMPONENT_ID|esp_dc_alloc_redirect|(^|:)-W\")\n\
         set_property(DIRECTORY PROPERTY COMPILE_OPTIONS \"${_esp_dc_options}\")\n",
    );
    for (project, f) in flags {
        s.push_str(&format!("if(PROJECT_NAME STREQUAL \"{project}\")\n"));
        if !f.warnings.is_empty() {
            s.push_str(&format!("  add_compile_options({})\n", f.warnings.join(" ")));
        }
        for w in IDF_C_WARNING_FLAGS {
            s.push_str(&format!("  add_compile_options($<$<COMPILE_LANGUAGE:C>:{w}>)\n"));
        }
        for c in &f.c_only {
            s.push_str(&format!("  add_compile_options($<$<COMPILE_LANGUAGE:C>:{c}>)\n"));
        }
        for d in &f.definitions {
            s.push_str(&format!("  add_compile_definitions({d})\n"));
        }
        s.push_str("endif()\n");
    }
    s
}
