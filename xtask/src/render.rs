//! Pure functions to file contents: the generated components' CMakeLists.txt, Kconfig, linker.lf
//! and idf_component.yml (from `templates/`; they depend on the component only, so every policy
//! gets the same files and reads its choices through Kconfig), the policy block of
//! sdkconfig.defaults (where a policy lands), and the stamp. Nothing here touches the tree;
//! `configure` decides what to write.

use crate::components;
use crate::exit;
use crate::kconfig_keys::{self, Known, Verdict};
use crate::policy::{
    KnobEffect, MbedtlsAllocator, Placement, Policy, RuntimeApi, SharedPtrLockPolicy, SpiramMalloc, StaticPlacement,
    SyncPlacement, KNOBS, RUNTIME_KNOBS_HEADER, STATIC_PLACEABLE,
};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const BLOCK_BEGIN: &str = "# >>> esp-libdatachannel policy (cargo xtask configure) >>>";
pub const BLOCK_END: &str = "# <<< esp-libdatachannel policy (cargo xtask configure) <<<";

/// `ESP_DC_COMPONENT_ID` of a component: its row's id in `components::REGISTRY` (esp_dc_port_alloc.h
/// lists the same numbers; a test there holds them together).
pub fn component_id(component: &str) -> u8 {
    components::known(component).id
}

/// What idf_component.yml says about a generated component: its registry row's upstream facts.
fn upstream_info(component: &str) -> components::Upstream {
    components::known(component).upstream.unwrap_or_else(|| unreachable!("{component} is not generated"))
}

pub fn caps_expression(placement: Placement) -> &'static str {
    match placement {
        Placement::Psram => "(MALLOC_CAP_SPIRAM)",
        Placement::Internal => "(MALLOC_CAP_INTERNAL|MALLOC_CAP_8BIT)",
        // esp_dc_port_malloc hands MALLOC_CAP_DEFAULT to plain malloc(), so ESP-IDF's
        // CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL threshold decides as it would without redirection.
        Placement::Default => "(MALLOC_CAP_DEFAULT)",
    }
}

/// Replaces every `{{key}}`; a placeholder left over is a template error, not silent output.
pub fn fill(template_name: &str, template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").map(|e| start + e + 2).unwrap_or(out.len().min(start + 30));
        return Err(exit::bad_input(format!(
            "templates/{template_name}: placeholder `{}` has no value; the template and xtask/src/configure/render.rs disagree",
            &out[start..end]
        )));
    }
    Ok(out)
}

/// The Kconfig prefix of a generated component's own options: `ESP_DC_<COMPONENT>`.
pub fn kconfig_prefix(component: &str) -> String {
    format!("ESP_DC_{}", component.to_uppercase())
}

/// `CONFIG_<prefix>_HEAP_<choice>`: the member of the heap placement choice a placement selects.
fn heap_choice(component: &str, placement: Placement) -> String {
    let member = match placement {
        Placement::Psram => "PSRAM",
        Placement::Internal => "INTERNAL",
        Placement::Default => "DEFAULT",
    };
    format!("{}_HEAP_{member}", kconfig_prefix(component))
}

/// The header a component's redirect force-includes (the only one: configure refuses others).
pub const REDIRECT_HEADER: &str = "esp_dc_alloc_redirect.h";

/// The part of a generated component's CMakeLists.txt that reads the policy from Kconfig. It
/// depends on the component only, never on a policy: every policy gets the same file, and
/// `idf.py menuconfig` changes what the policy chose (sdkconfig.defaults) without a configure.
pub fn cmake_kconfig_block(component: &str) -> String {
    let prefix = kconfig_prefix(component);
    let header_only = component == "plog";
    let mut b = String::new();
    b.push_str(
        "# ---- Policy, read from Kconfig (this component's Kconfig). `cargo xtask configure` writes the\n\
         # policy's choices into sdkconfig.defaults; `idf.py menuconfig` overrides them. ----\n",
    );
    // esp_dc_port_dir: the redirect header, the lock-policy header.
    b.push_str("idf_component_get_property(esp_dc_port_dir esp_dc_port COMPONENT_DIR)\n");
    if header_only {
        // An INTERFACE library compiles nothing; placement and the redirect would land on its
        // consumers' C sources. Its allocations are operator new in libdatachannel's C++ code.
        b.push_str("# plog is header-only: its allocations are C++ `new` inside libdatachannel and follow\n");
        b.push_str("# ESP_DC_PORT_NEW_PLACEMENT; there is no heap placement or redirect of its own.\n");
    } else {
        let _ = write!(
            b,
            "if(CONFIG_{prefix}_HEAP_PSRAM)
    set(esp_dc_alloc_caps \"{psram}\")
elseif(CONFIG_{prefix}_HEAP_INTERNAL)
    set(esp_dc_alloc_caps \"{internal}\")
else()
    set(esp_dc_alloc_caps \"{default}\")
endif()
target_compile_definitions(${{COMPONENT_LIB}} PRIVATE
    \"ESP_DC_ALLOC_CAPS=${{esp_dc_alloc_caps}}\"
    ESP_DC_COMPONENT_ID={id}  # ESP_DC_COMPONENT_{upper} in esp_dc_port_alloc.h
)
if(CONFIG_{prefix}_REDIRECT_MALLOC)
    # Every C source sees the redirect before its first line (the header is inert in C++).
    # `--include=` is GCC's joined spelling of `-include`: CMake de-duplicates repeated options,
    # and two `-include` flags on one target would lose their arguments' pairing.
    target_compile_options(${{COMPONENT_LIB}} PRIVATE \"--include=${{esp_dc_port_dir}}/include/{REDIRECT_HEADER}\")
endif()
",
            psram = caps_expression(Placement::Psram),
            internal = caps_expression(Placement::Internal),
            default = caps_expression(Placement::Default),
            id = component_id(component),
            upper = component.to_uppercase(),
        );
    }
    let scope = if header_only { "INTERFACE" } else { "PRIVATE" };
    let _ = write!(
        b,
        "if(CONFIG_{prefix}_EXTRA_DEFINITIONS)
    # components.{component}.definitions: NAME=value items, `;`-separated (a CMake list).
    target_compile_definitions(${{COMPONENT_LIB}} {scope} ${{CONFIG_{prefix}_EXTRA_DEFINITIONS}})
endif()
"
    );
    let defines: Vec<_> = KNOBS
        .iter()
        .filter(|k| k.component == component)
        .filter_map(|k| match k.effect {
            KnobEffect::Define(name) => Some((k, name)),
            KnobEffect::Runtime(..) => None,
        })
        .collect();
    // RTC_ESP_* knobs of other components are read by libdatachannel's knobs.patch (usrsctp's
    // own_threads decides how libdatachannel initialises usrsctp), so they travel PUBLIC.
    let (public, private): (Vec<_>, Vec<_>) =
        defines.into_iter().partition(|(_, name)| component != "libdatachannel" && name.starts_with("RTC_ESP_"));
    for (list, scope, why) in [
        (private, scope, "# Knobs (each an option of this component's Kconfig).\n"),
        (public, "PUBLIC", "# Knobs read by libdatachannel's knobs.patch (PUBLIC so libdatachannel sees them).\n"),
    ] {
        if list.is_empty() {
            continue;
        }
        b.push_str(why);
        let _ = writeln!(b, "target_compile_definitions(${{COMPONENT_LIB}} {scope}");
        for (spec, name) in list {
            let _ = writeln!(b, "    \"{name}=${{CONFIG_{}}}\"", spec.kconfig_symbol());
        }
        b.push_str(")\n");
    }
    if component == "libdatachannel" {
        let runtime: Vec<_> =
            KNOBS.iter().filter(|k| k.component == component && matches!(k.effect, KnobEffect::Runtime(..))).collect();
        if !runtime.is_empty() {
            let names: Vec<_> = runtime.iter().map(|k| k.name).collect();
            let _ = writeln!(
                b,
                "# Run-time knobs ({}): the list {} that esp_dc_port_init() (esp_dc_init) applies.",
                names.join(", "),
                RUNTIME_KNOBS_HEADER
            );
        }
        // libstdc++ picks __default_lock_policy in <ext/concurrence.h>: _S_single without
        // __GTHREADS, _S_atomic when bits/c++config.h defines _GLIBCXX_HAVE_ATOMIC_LOCK_POLICY
        // (a toolchain configure result, #defined unconditionally), else _S_mutex. A -D or -U
        // on the command line cannot win against c++config.h, so esp_dc_lock_policy.h includes
        // c++config.h first and then #undefs the macro. It must be PUBLIC: std::shared_ptr<T>
        // mangles without the policy, so two TUs disagreeing would share one symbol with two
        // control-block layouts (an ODR violation, not a link error).
        b.push_str(
            "# cxx.shared_ptr_lock_policy = mutex forces _S_mutex for every C++ user of libdatachannel's headers
# (PUBLIC; see components/esp_dc_port/include/esp_dc_lock_policy.h for why a -D alone cannot).
if(CONFIG_ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX)
    target_compile_definitions(${COMPONENT_LIB} PUBLIC ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX=1)
    target_compile_options(${COMPONENT_LIB} PUBLIC
        \"$<$<COMPILE_LANGUAGE:CXX>:--include=${esp_dc_port_dir}/include/esp_dc_lock_policy.h>\")
endif()
",
        );
    }
    b
}

/// The ESP-IDF linker fragment of a component whose `.bss` the policy may move
/// (`policy::STATIC_PLACEABLE`), else None. It names `esp_dc_extram_bss`, esp_dc_port's own
/// scheme (`bss` and `common` to `extern_ram`, components/esp_dc_port/linker.lf), not ESP-IDF's
/// `extram_bss`: that one is defined by esp_wifi's linker.lf, and on a chip without Wi-Fi (the
/// ESP32-P4) ldgen drops every mapping naming it without a word. The condition tests
/// ESP_ALLOW_BSS_SEG_EXTERNAL_MEMORY (SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY selects it; it exists
/// on every target, so the condition evaluates without PSRAM too); otherwise the default scheme
/// keeps `.bss` in `dram0_bss`. `.data` has no such scheme: initialised data stays in DRAM.
/// ldgen evaluates `&&` with kconfiglib (components/esp_hw_support/linker.lf uses it).
pub fn linker_fragment(component: &str) -> Option<String> {
    if !STATIC_PLACEABLE.contains(&component) {
        return None;
    }
    let prefix = kconfig_prefix(component);
    Some(format!(
        "# Generated by `cargo xtask configure` (the same for every policy). With {prefix}_STATIC_PSRAM
# (components.{component}.static_placement = \"psram\", or menuconfig) and
# SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY, the library's zero-initialised data (.bss, COMMON) is
# linked into PSRAM (.ext_ram.bss) through esp_dc_port's scheme, which unlike ESP-IDF's
# extram_bss does not need Wi-Fi. Initialised data (.data) cannot move: it is copied from flash
# at boot.
[mapping:{component}]
archive: lib{component}.a
entries:
    if {prefix}_STATIC_PSRAM = y && ESP_ALLOW_BSS_SEG_EXTERNAL_MEMORY = y:
        * (esp_dc_extram_bss)
"
    ))
}

pub fn cmakelists(component: &str, template: &str) -> Result<String> {
    let info = upstream_info(component);
    fill(
        &format!("{component}/CMakeLists.txt"),
        template,
        &[("version", info.version.to_string()), ("kconfig", cmake_kconfig_block(component))],
    )
}

pub fn idf_component_yml(component: &str, template: &str) -> Result<String> {
    let info = upstream_info(component);
    fill(
        "idf_component.yml",
        template,
        &[
            ("component", component.to_string()),
            ("version", info.version.to_string()),
            ("description", info.description.to_string()),
            ("url", info.url.to_string()),
            ("license", info.licence.to_string()),
        ],
    )
}

/// Kconfig help text under an entry indented by `indent` spaces: wrapped, no line that Kconfig
/// would mistake for syntax.
fn help_at(indent: usize, text: &str) -> String {
    let pad = " ".repeat(indent + 4);
    let mut out = format!("{}help\n", " ".repeat(indent));
    for paragraph in text.split("\n\n") {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > 88 {
                let _ = writeln!(out, "{pad}{line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            let _ = writeln!(out, "{pad}{line}");
        }
        out.push('\n');
    }
    out.pop();
    out
}

fn help_block(text: &str) -> String {
    help_at(8, text)
}

/// A Kconfig `choice` at menu level: (symbol suffix, prompt, help) per member, the first the default.
fn choice(prefix: &str, name: &str, prompt: &str, help: &str, members: &[(&str, &str, &str)]) -> String {
    let mut c = format!(
        "\n    choice {prefix}_{name}\n        prompt \"{prompt}\"\n        default {prefix}_{name}_{}\n{}",
        members[0].0,
        help_block(help)
    );
    for (member, prompt, help) in members {
        let _ = write!(
            c,
            "\n        config {prefix}_{name}_{member}\n            bool \"{prompt}\"\n{}",
            help_at(12, help)
        );
    }
    c.push_str("    endchoice\n");
    c
}

/// A generated component's Kconfig. It depends on the component only: the defaults are
/// upstream's behaviour (malloc not redirected, ESP-IDF's heap, `.bss` in internal RAM, upstream's
/// sizes) and the policy's values come through sdkconfig.defaults, so lean and stock get the same
/// file and menuconfig shows each setting where the policy put it.
pub fn kconfig(component: &str, template: &str) -> Result<String> {
    let prefix = kconfig_prefix(component);
    let mut options = String::new();
    if component != "plog" {
        let _ = write!(
            options,
            "\n    config {prefix}_REDIRECT_MALLOC\n        bool \"Redirect {component}'s malloc/calloc/realloc/free through esp_dc_port\"\n        default n\n{}",
            help_block(&format!(
                "Force-includes esp_dc_port's {REDIRECT_HEADER} into every C source of {component}, so its heap \
                 allocations go to the placement chosen below and the host lab can attribute them \
                 (policy: components.{component}.force_include = \"{REDIRECT_HEADER}\"). C++ code is \
                 untouched: operator new follows ESP_DC_PORT_NEW_PLACEMENT."
            ))
        );
        options.push_str(&choice(
            &prefix,
            "HEAP",
            &format!("Heap placement of {component}'s allocations"),
            &format!(
                "Where the redirected allocations of {component} go (policy: components.{component}.placement). \
                 Without the redirect nothing reads it."
            ),
            &[
                (
                    "DEFAULT",
                    "ESP-IDF default (plain malloc)",
                    "malloc(): CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL decides by size (policy: default).",
                ),
                (
                    "PSRAM",
                    "PSRAM (MALLOC_CAP_SPIRAM)",
                    "heap_caps_malloc(MALLOC_CAP_SPIRAM), falling back per ESP_DC_PORT_ALLOC_FALLBACK (policy: psram).",
                ),
                (
                    "INTERNAL",
                    "Internal RAM (MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT)",
                    "Fast internal RAM (policy: internal).",
                ),
            ],
        ));
    }
    if STATIC_PLACEABLE.contains(&component) {
        options.push_str(&choice(
            &prefix,
            "STATIC",
            &format!("Placement of {component}'s zero-initialised static data (.bss)"),
            &format!(
                "Where the linker puts {component}'s .bss and COMMON (policy: \
                 components.{component}.static_placement), through this component's linker.lf. PSRAM needs \
                 SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY; without it .bss stays internal. Initialised data \
                 (.data) always stays in internal RAM."
            ),
            &[
                ("INTERNAL", "Internal RAM (ESP-IDF's default)", "DRAM, as every library (policy: internal)."),
                (
                    "PSRAM",
                    "PSRAM (.ext_ram.bss)",
                    "esp_dc_port's esp_dc_extram_bss scheme maps .bss and COMMON to external RAM (policy: psram).",
                ),
            ],
        ));
    }
    let _ = write!(
        options,
        "\n    config {prefix}_EXTRA_DEFINITIONS\n        string \"Extra compile definitions of {component}\"\n        default \"\"\n{}",
        help_block(&format!(
            "NAME=value items separated by `;` (a CMake list), added to {component}'s compile definitions \
             (policy: components.{component}.definitions). Empty: none."
        ))
    );
    for knob in KNOBS.iter().filter(|k| k.component == component) {
        let how = match knob.effect {
            KnobEffect::Define(name) => format!(
                "Compiled in as {name} (a value other than upstream's needs the knob patches listed in the policy)."
            ),
            KnobEffect::Runtime(api, field) => {
                let target = api.target(field);
                match api {
                    RuntimeApi::SctpSettings => format!(
                        "Applied at run time as {target} by esp_dc_port_init() (component esp_dc_init), before the \
                         first PeerConnection."
                    ),
                    RuntimeApi::Configuration => format!(
                        "Applied at run time as {target} by esp_dc_port_configure() (esp_dc_init.h), which the \
                         application calls on each PeerConnection's configuration."
                    ),
                    RuntimeApi::NackResponder => format!(
                        "Applied at run time as {target} by esp_dc_port_chain_nack_responder() (esp_dc_init.h), \
                         which the application calls for each video track."
                    ),
                }
            }
        };
        let help = format!(
            "{}\n\n{how} Policy: components.{component}.knobs.{}; the default is upstream's value.",
            knob.help, knob.name
        );
        let _ = write!(
            options,
            "\n    config {}\n        int \"{}\"\n        range {} {}\n        default {}\n{}",
            knob.kconfig_symbol(),
            knob.name,
            knob.min,
            knob.max,
            knob.stock,
            help_block(&help)
        );
    }
    fill("Kconfig", template, &[("component", component.to_string()), ("options", options)])
}

fn yes(symbol: &str, on: bool) -> String {
    if on {
        format!("CONFIG_{symbol}=y")
    } else {
        format!("# CONFIG_{symbol} is not set")
    }
}

fn placement_choice(prefix: &str, placement: Placement) -> String {
    let chosen = match placement {
        Placement::Psram => "PSRAM",
        Placement::Internal => "INTERNAL",
        Placement::Default => "DEFAULT",
    };
    format!("CONFIG_{prefix}_{chosen}=y")
}

/// The lines between the markers in sdkconfig.defaults: what the policy's fields render, then
/// `[sdkconfig_extra]` verbatim. `check_sdkconfig_keys` holds every key to a Kconfig symbol.
pub fn sdkconfig_lines(policy: &Policy) -> Vec<String> {
    let mut l = policy_lines(policy);
    if !policy.sdkconfig_extra.is_empty() {
        l.push("# [sdkconfig_extra]".into());
        for (key, value) in &policy.sdkconfig_extra {
            l.push(format!("{key}={value}"));
        }
    }
    l
}

/// The rendered part of the block. ESP-IDF symbols must be in xtask/src/kconfig_keys.txt (the
/// names of ESP-IDF 5.5's Kconfig files, not old names from an sdkconfig.rename); ESP_DC_PORT_*
/// are esp_dc_port's own (components/esp_dc_port/Kconfig), knob symbols those of `kconfig`.
pub fn policy_lines(policy: &Policy) -> Vec<String> {
    let mut l = Vec::new();
    let p = policy;
    l.push(format!("# Policy `{}`: {}", p.policy.name, p.policy.description));
    l.push("# Rewritten by every `cargo xtask configure`; add your own lines outside this block.".into());
    for section in [memory_lines, mbedtls_lines, pthread_lines, cxx_lines, heap_tracing_lines, sync_lines] {
        section(p, &mut l);
    }
    component_lines(p, &mut l);
    l.push("# Knobs (each an option of its component's Kconfig, whose default is upstream's value)".into());
    for knob in KNOBS {
        l.push(format!("CONFIG_{}={}", knob.kconfig_symbol(), policy.knob_value(knob)));
    }
    l
}

fn memory_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [memory]".into());
    l.push(yes("SPIRAM", p.memory.spiram));
    if p.memory.spiram {
        l.push(match p.memory.spiram_malloc {
            SpiramMalloc::Malloc => "CONFIG_SPIRAM_USE_MALLOC=y".into(),
            SpiramMalloc::CapsOnly => "CONFIG_SPIRAM_USE_CAPS_ALLOC=y".into(),
            SpiramMalloc::Off => "CONFIG_SPIRAM_USE_MEMMAP=y".into(),
        });
        l.push(format!("CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL={}", p.memory.always_internal_bytes));
        l.push(format!("CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL={}", p.memory.reserve_internal_bytes));
    }
}

fn mbedtls_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [mbedtls] (DTLS and DTLS-SRTP are what WebRTC needs, whatever the policy)".into());
    l.push(
        match p.mbedtls.allocator {
            MbedtlsAllocator::Internal => "CONFIG_MBEDTLS_INTERNAL_MEM_ALLOC=y",
            MbedtlsAllocator::External => "CONFIG_MBEDTLS_EXTERNAL_MEM_ALLOC=y",
            MbedtlsAllocator::Default => "CONFIG_MBEDTLS_DEFAULT_MEM_ALLOC=y",
            MbedtlsAllocator::Custom => "CONFIG_MBEDTLS_CUSTOM_MEM_ALLOC=y",
        }
        .into(),
    );
    l.push("CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN=y".into());
    l.push(format!("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN={}", p.mbedtls.ssl_in_content_len));
    l.push(format!("CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN={}", p.mbedtls.ssl_out_content_len));
    l.push(yes("MBEDTLS_DYNAMIC_BUFFER", p.mbedtls.dynamic_buffer));
    l.push("CONFIG_MBEDTLS_SSL_PROTO_DTLS=y".into());
    l.push("CONFIG_MBEDTLS_SSL_DTLS_SRTP=y".into());
}

fn pthread_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [pthread] and components.libdatachannel.threads (esp_pthread_cfg_t set by esp_dc_port_init)".into());
    l.push(format!("CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT={}", p.pthread.default_stack_bytes));
    let threads = p.component("libdatachannel").threads.as_ref();
    let thread_stack = threads.map(|t| t.stack_bytes).unwrap_or(p.pthread.default_stack_bytes);
    if p.memory.spiram {
        l.push(yes("FREERTOS_TASK_CREATE_ALLOW_EXT_MEM", p.pthread.stack_placement == Placement::Psram));
    }
    l.push(placement_choice("ESP_DC_PORT_THREAD_STACK", p.pthread.stack_placement));
    l.push(format!("CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES={thread_stack}"));
}

fn cxx_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [cxx]".into());
    l.push("CONFIG_COMPILER_CXX_EXCEPTIONS=y".into());
    l.push(format!("CONFIG_COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE={}", p.cxx.emergency_pool_bytes));
    l.push("CONFIG_COMPILER_CXX_RTTI=y".into());
    l.push("CONFIG_ESP_DC_PORT_REPLACE_OPERATOR_NEW=y".into());
    l.push(placement_choice("ESP_DC_PORT_NEW_PLACEMENT", p.cxx.new_placement));
    l.push(yes("ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX", p.cxx.shared_ptr_lock_policy == SharedPtrLockPolicy::Mutex));
}

fn heap_tracing_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [heap_tracing]".into());
    if p.heap_tracing.enabled {
        l.push("CONFIG_HEAP_TRACING_STANDALONE=y".into());
        l.push(format!("CONFIG_HEAP_TRACING_STACK_DEPTH={}", p.heap_tracing.stack_depth));
    } else {
        l.push("CONFIG_HEAP_TRACING_OFF=y".into());
    }
    l.push(format!("CONFIG_ESP_DC_PORT_HEAP_TRACE_RECORDS={}", p.heap_tracing.records));
}

/// `[sync]`, and static_placement's switch for .bss in PSRAM.
fn sync_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# [sync] (esp_dc_port: FreeRTOS objects of pthread mutexes and condition variables)".into());
    l.push(
        match p.sync.placement {
            SyncPlacement::WithOwner => "CONFIG_ESP_DC_PORT_SYNC_PLACEMENT_WITH_OWNER=y",
            SyncPlacement::Internal => "CONFIG_ESP_DC_PORT_SYNC_PLACEMENT_INTERNAL=y",
        }
        .into(),
    );
    let psram_bss: Vec<&str> = p
        .components
        .iter()
        .filter(|(name, c)| STATIC_PLACEABLE.contains(&name.as_str()) && c.static_placement == StaticPlacement::Psram)
        .map(|(name, _)| name.as_str())
        .collect();
    if p.memory.spiram {
        if !psram_bss.is_empty() {
            l.push(format!(
                "# static_placement = psram ({}): their .bss through esp_dc_extram_bss",
                psram_bss.join(", ")
            ));
        }
        l.push(yes("SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY", !psram_bss.is_empty()));
    }
}

/// esp_dc_port's own placement, then what each generated component's Kconfig reads.
fn component_lines(p: &Policy, l: &mut Vec<String>) {
    l.push("# components.esp_dc_port (the port's own allocations: interface lists, shim buffers)".into());
    l.push(placement_choice("ESP_DC_PORT_OWN_PLACEMENT", p.component("esp_dc_port").placement));

    // Each generated component's Kconfig (the same file for every policy) reads these.
    for component in components::generated() {
        let spec = p.component(component);
        let prefix = kconfig_prefix(component);
        if component == "plog" {
            l.push(format!(
                "# components.plog: header-only, its allocations follow cxx.new_placement ({}); placement `{}` has no option",
                p.cxx.new_placement.as_str(),
                spec.placement.as_str()
            ));
        } else {
            l.push(format!("# components.{component}"));
            l.push(yes(&format!("{prefix}_REDIRECT_MALLOC"), !spec.force_include.is_empty()));
            l.push(format!("CONFIG_{}=y", heap_choice(component, spec.placement)));
        }
        if STATIC_PLACEABLE.contains(&component) {
            let member = match spec.static_placement {
                StaticPlacement::Psram => "PSRAM",
                StaticPlacement::Internal => "INTERNAL",
            };
            l.push(format!("CONFIG_{prefix}_STATIC_{member}=y"));
        }
        let definitions: Vec<String> =
            spec.definitions.iter().map(|(name, value)| format!("{name}={}", value.render())).collect();
        l.push(format!("CONFIG_{prefix}_EXTRA_DEFINITIONS=\"{}\"", definitions.join(";")));
    }
}

/// The key a line of the block sets: `CONFIG_X=...` or `# CONFIG_X is not set`; None for comments.
pub fn line_key(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# ") {
        return rest.strip_suffix(" is not set").filter(|k| k.starts_with("CONFIG_"));
    }
    if line.starts_with('#') {
        return None;
    }
    line.split_once('=').map(|(key, _)| key.trim())
}

/// Checks every key of the policy block before anything is written (kconfgen would drop an
/// unknown key and silently remap an old one). `rendered` are `policy_lines`: a bad key there is
/// a bug of this file, reported against it. `extra` keys are the user's: the error names the
/// policy file and line. What passes where is `kconfig_keys`'s doc. Returns warnings for extra
/// keys that could not be checked (no ESP-IDF tree).
pub fn check_sdkconfig_keys(
    rendered: &[String],
    extra: &BTreeMap<String, String>,
    known: &Known,
    policy_text: &str,
    shown_policy: &str,
) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    for key in rendered.iter().filter_map(|l| line_key(l)) {
        match known.check(key) {
            Ok(Verdict::Listed | Verdict::Ours) => {}
            Ok(_) => errors.push(format!(
                "xtask/src/configure/render.rs: {key}: rendered, but neither in xtask/src/kconfig_keys.txt nor declared by our Kconfig files; add it to the list with the ESP-IDF 5.5 Kconfig file that declares it, or fix the name"
            )),
            Err(what) => errors.push(format!("xtask/src/configure/render.rs: {key}: {what}")),
        }
    }
    let mut warnings = Vec::new();
    // Which typed section renders each key (the `# [section]` comment above it in the block).
    let mut typed: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    let mut section = String::from("the policy");
    for line in rendered {
        if let Some(title) = line.strip_prefix("# [").and_then(|t| t.split(']').next()) {
            section = format!("[{title}]");
        } else if let Some(name) = line.strip_prefix("# components.") {
            section = format!("[components.{}]", name.split([' ', ':']).next().unwrap_or(name));
        }
        if let Some(key) = line_key(line) {
            let owner = KNOBS
                .iter()
                .find(|k| key.strip_prefix("CONFIG_") == Some(k.kconfig_symbol().as_str()))
                .map(|k| format!("components.{}.knobs.{}", k.component, k.name))
                .unwrap_or_else(|| section.clone());
            typed.insert(key, (owner, line.as_str()));
        }
    }
    let choice_of = |key: &str| known.facts(key.strip_prefix("CONFIG_")?)?.choice.clone();
    let mut unchecked = Vec::new();
    for (key, value) in extra {
        let at = |what: String| {
            format!(
                "{shown_policy}:{}: sdkconfig_extra.{}: {what}",
                extra_key_line(policy_text, key),
                crate::fsutil::shown(key)
            )
        };
        match known.check(key) {
            Ok(Verdict::Unchecked) => unchecked.push(key.as_str()),
            Ok(_) => {}
            Err(what) => {
                errors.push(at(what));
                continue;
            }
        }
        if let Some((owner, line)) = typed.get(key.as_str()) {
            errors.push(at(format!(
                "the policy's {owner} already sets it (`{line}` in the block); two settings of one option would leave the build to whichever line comes last. Set it through {owner} and remove it here"
            )));
            continue;
        }
        // A member of a choice the block already picks: kconfgen would keep one of the two.
        if let Some(choice) = choice_of(key) {
            if let Some((other, (owner, _))) =
                typed.iter().find(|(other, _)| **other != key.as_str() && choice_of(other).as_ref() == Some(&choice))
            {
                errors.push(at(format!(
                    "a member of the same Kconfig choice as {other}, which the policy's {owner} sets; set the choice through {owner} and remove it here"
                )));
                continue;
            }
        }
        if let Some(facts) = key.strip_prefix("CONFIG_").and_then(|symbol| known.facts(symbol)) {
            if let Err(what) = kconfig_keys::check_value(facts, value) {
                errors.push(at(crate::fsutil::shown(&what)));
            }
        }
    }
    if !errors.is_empty() {
        return Err(exit::bad_input(errors.join("\n")));
    }
    if !unchecked.is_empty() {
        warnings.push(format!(
            "sdkconfig_extra: {} not checked against ESP-IDF's Kconfig files (no ESP-IDF tree: set IDF_PATH); kconfgen ignores a misspelt key silently, so check the build log for `unknown kconfig symbol`",
            unchecked.join(", ")
        ));
    }
    Ok(warnings)
}

/// Line of `key` in the policy's `[sdkconfig_extra]` table (any TOML spelling of it), else of
/// the table, else 1: errors point where the user has to edit.
fn extra_key_line(text: &str, key: &str) -> usize {
    crate::layout::toml_key_line(text, &["sdkconfig_extra"], key)
}

/// The value a line of sdkconfig.defaults gives its key: `# CONFIG_X is not set` is `n`, as
/// kconfgen reads it.
fn line_value(line: &str) -> Option<(&str, &str)> {
    let key = line_key(line)?;
    if line.starts_with('#') {
        return Some((key, "n"));
    }
    Some((key, line.split_once('=').map(|(_, v)| v.trim()).unwrap_or("")))
}

/// A marker line of ours or of another version of it (`# >>> esp-libdatachannel ...`).
fn marker_kind(line: &str) -> Option<bool> {
    let line = line.trim_end();
    if line == BLOCK_BEGIN || line.starts_with("# >>> esp-libdatachannel") {
        Some(true)
    } else if line == BLOCK_END || line.starts_with("# <<< esp-libdatachannel") {
        Some(false)
    } else {
        None
    }
}

/// sdkconfig.defaults with the policy block replaced (or appended); every other line is kept.
///
/// kconfgen reads the file top to bottom and the last line for a key wins, so a line of the
/// user's that sets a key of the block to another value decides the build by where it stands,
/// and a second (stale) block after ours would win over ours. Both are refused (exit 2), each
/// conflict listed with both values and which one the build would see; a key in `keep`
/// (`--keep-sdkconfig`) is left out of the block, so the user's line decides it.
pub fn merge_sdkconfig_defaults(existing: &str, lines: &[String], shown_path: &str, keep: &[String]) -> Result<String> {
    use crate::fsutil::shown;
    let all: Vec<&str> = existing.split_inclusive('\n').collect();
    let markers: Vec<(usize, bool)> =
        all.iter().enumerate().filter_map(|(i, l)| marker_kind(l).map(|begin| (i, begin))).collect();
    let exact = |i: usize, begin: bool| all[i].trim_end() == if begin { BLOCK_BEGIN } else { BLOCK_END };
    let span = match markers.as_slice() {
        [] => None,
        [(b, true), (e, false)] if exact(*b, true) && exact(*e, false) => Some((*b, *e)),
        _ => {
            let listed: Vec<String> = markers
                .iter()
                .map(|(i, begin)| format!("{shown_path}:{}: {}", i + 1, if *begin { "begin" } else { "end" }))
                .collect();
            return Err(exit::bad_input(format!(
                "{shown_path}:{}: policy block: expected one `{BLOCK_BEGIN}` followed by one `{BLOCK_END}`, found {} marker line(s) ({}); a second or stale block would win over the current one (kconfgen reads the last line of a key). Delete every block but one (or all: configure appends a fresh one) and run configure again",
                markers[0].0 + 1,
                markers.len(),
                listed.join(", ")
            )));
        }
    };

    let block_values: BTreeMap<&str, &str> = lines.iter().filter_map(|l| line_value(l)).collect();
    for key in keep {
        if !block_values.contains_key(key.as_str()) {
            return Err(exit::bad_input(format!(
                "--keep-sdkconfig {}: the policy block does not set this option, so there is nothing to keep; name a key of the block (see sdkconfig.defaults)",
                shown(key)
            )));
        }
    }
    // The user's lines: before and after the block (or all of them when there is none yet, in
    // which case the block goes at the end).
    let (block_at, after_from) = span.map(|(b, e)| (b, e + 1)).unwrap_or((all.len(), all.len()));
    let mut conflicts = Vec::new();
    let mut kept_seen = std::collections::BTreeSet::new();
    for (i, line) in all.iter().enumerate().filter(|(i, _)| *i < block_at || *i >= after_from) {
        let Some((key, yours)) = line_value(line.trim_end_matches(['\n', '\r'])) else { continue };
        let Some(policy) = block_values.get(key) else { continue };
        if keep.iter().any(|k| k == key) {
            kept_seen.insert(key.to_string());
            continue;
        }
        if yours != *policy {
            let winner =
                if i < block_at { "the policy's (the block comes later)" } else { "yours (it comes after the block)" };
            conflicts.push(format!(
                "  {shown_path}:{}: {}: yours {}, the policy's {}; the build would see {winner}",
                i + 1,
                shown(key),
                shown(yours),
                shown(policy)
            ));
        }
    }
    if !conflicts.is_empty() {
        return Err(exit::bad_input(format!(
            "{shown_path}: your lines set options the policy block also sets, to other values:\n{}\nDelete your line to take the policy's value, or keep yours with `--keep-sdkconfig KEY` (the block then leaves the option out); nothing was written",
            conflicts.join("\n")
        )));
    }
    if let Some(unused) = keep.iter().find(|k| !kept_seen.contains(*k)) {
        return Err(exit::bad_input(format!(
            "--keep-sdkconfig {}: no line of yours outside the policy block sets it, so the block's value would be lost; add your line to {shown_path} or drop the option",
            shown(unused)
        )));
    }

    let mut block = String::new();
    block.push_str(BLOCK_BEGIN);
    block.push('\n');
    for line in lines {
        match line_key(line).filter(|key| keep.iter().any(|k| k == key)) {
            Some(key) => {
                let _ = writeln!(
                    block,
                    "# {key}: your own line decides (--keep-sdkconfig); the policy says {}",
                    block_values[key]
                );
            }
            None => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    block.push_str(BLOCK_END);
    block.push('\n');

    match span {
        None => {
            let mut out = existing.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&block);
            Ok(out)
        }
        Some((b, e)) => {
            let mut out: String = all[..b].concat();
            out.push_str(&block);
            out.push_str(&all[e + 1..].concat());
            Ok(out)
        }
    }
}

/// `components/.esp_dc_policy`: which policy the tree was configured with (TOML, one table).
pub fn stamp(policy: &Policy, shown_path: &str, hash: &str, patches: &BTreeMap<String, Vec<String>>) -> String {
    let mut s = String::new();
    s.push_str("# Written by `cargo xtask configure`: the policy this component tree was generated from.\n");
    s.push_str("# Other commands read it to refuse measuring a tree that does not match their policy.\n");
    // Quoted by toml_edit: the policy's strings are validated, but the policy file's own path
    // may hold any character, and a stray quote would make the stamp unreadable.
    let quoted = |text: &str| toml_edit::Value::from(text).to_string();
    let _ = writeln!(s, "policy = {}", quoted(&policy.policy.name));
    let _ = writeln!(s, "path = {}", quoted(shown_path));
    let _ = writeln!(s, "hash = {}", quoted(hash));
    let all: Vec<String> = patches.values().flatten().map(|p| quoted(p)).collect();
    let _ = writeln!(s, "patches = [{}]", all.join(", "));
    s
}
