//! A policy's checks beyond its types: what serde cannot express (names and text that would
//! break generated files, knobs within their ranges, patches that exist, numbers within their
//! Kconfig ranges, sections that agree), and the lines errors are reported at.

use super::*;

impl Policy {
    /// Semantic checks serde cannot express. Returns (key path, what is wrong), in file order of keys.
    pub(super) fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let placed = components::placed();
        if let Some(what) = unsafe_name(&self.policy.name) {
            problems.push(("policy.name".into(), what));
        }
        if let Some(what) = unsafe_text(&self.policy.description) {
            problems.push(("policy.description".into(), what));
        }
        for (name, component) in &self.components {
            if !placed.contains(&name.as_str()) {
                problems.push((
                    format!("components.{name}"),
                    format!("unknown component `{name}`; the policy lays out {}", placed.join(", ")),
                ));
                continue;
            }
            self.check_force_include(name, component, &mut problems);
            self.check_knobs_and_definitions(name, component, &mut problems);
            self.check_patches(name, component, &mut problems);
            self.check_static_placement_and_threads(name, component, &mut problems);
        }
        for name in &placed {
            if !self.components.contains_key(*name) {
                problems.push((
                    "components".into(),
                    format!("missing component `{name}`: every component needs a placement"),
                ));
            }
        }
        for (key, value, range) in self.kconfig_numbers() {
            check_range(&mut problems, key, value.into(), range);
        }
        self.check_across_sections(&mut problems);
        self.check_budget_names(&placed, &mut problems);
        for (key, value) in &self.sdkconfig_extra {
            if !key.starts_with("CONFIG_") {
                problems.push((format!("sdkconfig_extra.{key}"), "sdkconfig symbols start with CONFIG_".into()));
            } else if !key[7..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || key.len() == 7 {
                // (Lower case is refused later, with the upper-case name to use.)
                problems.push((
                    format!("sdkconfig_extra.{key}"),
                    "not a Kconfig symbol: after CONFIG_ only letters, digits and `_`".into(),
                ));
            } else if let Some(what) = unsafe_text(value).or_else(|| unsafe_sdkconfig_value(value)) {
                // One line of sdkconfig.defaults each: a line break would add lines of its own.
                problems.push((format!("sdkconfig_extra.{key}"), what));
            }
        }
        problems
    }

    /// A force-included header must be one of esp_dc_port's.
    fn check_force_include(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        let at = |field: &str| format!("components.{name}.{field}");
        if !component.force_include.is_empty() {
            let include = crate::fsutil::project_root().join("components/esp_dc_port/include");
            let header = include.join(&component.force_include);
            if let Some(what) = unsafe_path(&component.force_include, &include) {
                problems
                    .push((at("force_include"), format!("{what}; name a header in components/esp_dc_port/include/")));
            } else if !header.is_file() {
                problems.push((
                    at("force_include"),
                    format!("no header `{}` in components/esp_dc_port/include/", component.force_include),
                ));
            }
        }
    }

    /// Knobs known and in range; definitions valid C macro names with safe values.
    fn check_knobs_and_definitions(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        for (knob_name, value) in &component.knobs {
            match knob(name, knob_name) {
                None => {
                    let known: Vec<_> = KNOBS.iter().filter(|k| k.component == name).map(|k| k.name).collect();
                    problems.push((
                        format!("components.{name}.knobs.{knob_name}"),
                        format!(
                            "unknown knob for {name}; known: {}",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    ));
                }
                Some(spec) if *value < spec.min || *value > spec.max => problems.push((
                    format!("components.{name}.knobs.{knob_name}"),
                    format!("{value} is out of range {}..={}", spec.min, spec.max),
                )),
                Some(_) => {}
            }
        }
        for (def, value) in &component.definitions {
            if def.is_empty()
                || !def.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || def.starts_with(|c: char| c.is_ascii_digit())
            {
                problems.push((format!("components.{name}.definitions.{def}"), "not a valid C macro name".into()));
            } else if let Some(what) = unsafe_definition(value) {
                problems.push((format!("components.{name}.definitions.{def}"), what));
            }
        }
    }

    /// Each patch a file under patches/.
    fn check_patches(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        let at = |field: &str| format!("components.{name}.{field}");
        let patches_dir = crate::fsutil::project_root().join("patches");
        for patch in &component.patches {
            if let Some(what) = unsafe_path(patch, &patches_dir) {
                problems
                    .push((at("patches"), format!("`{}`: {what}; name a patch under patches/", patch.escape_debug())));
            } else if !patches_dir.join(patch).is_file() {
                problems.push((at("patches"), format!("no patch `{patch}` under patches/")));
            }
        }
    }

    /// `.bss` in PSRAM only for a generated library with PSRAM; a thread stack ESP-IDF can start.
    fn check_static_placement_and_threads(
        &self,
        name: &str,
        component: &Component,
        problems: &mut Vec<(String, String)>,
    ) {
        let at = |field: &str| format!("components.{name}.{field}");
        if component.static_placement == StaticPlacement::Psram {
            if !STATIC_PLACEABLE.contains(&name) {
                problems.push((
                    at("static_placement"),
                    format!(
                        "`psram` places a generated library's .bss; {name} has none of its own (placeable: {})",
                        STATIC_PLACEABLE.join(", ")
                    ),
                ));
            } else if !self.memory.spiram {
                problems.push((at("static_placement"), "`psram` needs `memory.spiram = true`".into()));
            }
        }
        if let Some(threads) = &component.threads {
            if threads.stack_bytes < 2048 {
                problems.push((at("threads.stack_bytes"), "below 2048 bytes no ESP-IDF pthread can start".into()));
            } else if name == "libdatachannel" {
                // Only libdatachannel's reaches the device (Policy::thread_stack_bytes).
                check_range(problems, &at("threads.stack_bytes"), threads.stack_bytes.into(), &THREAD_STACK_RANGE);
            }
        }
    }

    /// The numbers that become Kconfig `int` options, each with the range its Kconfig allows.
    fn kconfig_numbers(&self) -> [(&'static str, u32, &'static KconfigRange); 8] {
        [
            (
                "memory.always_internal_bytes",
                self.memory.always_internal_bytes,
                &KconfigRange {
                    min: 0,
                    max: 131072,
                    option: "SPIRAM_MALLOC_ALWAYSINTERNAL",
                    file: "components/esp_psram/Kconfig.spiram.common",
                },
            ),
            (
                "memory.reserve_internal_bytes",
                self.memory.reserve_internal_bytes,
                &KconfigRange {
                    min: 0,
                    max: 262144,
                    option: "SPIRAM_MALLOC_RESERVE_INTERNAL",
                    file: "components/esp_psram/Kconfig.spiram.common",
                },
            ),
            (
                "mbedtls.ssl_in_content_len",
                self.mbedtls.ssl_in_content_len,
                &KconfigRange {
                    min: 512,
                    max: 16384,
                    option: "MBEDTLS_SSL_IN_CONTENT_LEN",
                    file: "components/mbedtls/Kconfig",
                },
            ),
            (
                "mbedtls.ssl_out_content_len",
                self.mbedtls.ssl_out_content_len,
                &KconfigRange {
                    min: 512,
                    max: 16384,
                    option: "MBEDTLS_SSL_OUT_CONTENT_LEN",
                    file: "components/mbedtls/Kconfig",
                },
            ),
            // No range in Kconfig: an `int` symbol is a C int (the define is returned as size_t
            // and printed with %u by components/cxx/cxx_init.cpp).
            (
                "cxx.emergency_pool_bytes",
                self.cxx.emergency_pool_bytes,
                &KconfigRange {
                    min: 0,
                    max: i32::MAX as u64,
                    option: "COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE",
                    file: "Kconfig (int, no range: a C int)",
                },
            ),
            // No range in Kconfig either; the lower bound is ours (pthread.c refuses less than
            // PTHREAD_STACK_MIN, and below 2048 bytes none of the stack's threads starts).
            (
                "pthread.default_stack_bytes",
                self.pthread.default_stack_bytes,
                &KconfigRange {
                    min: 2048,
                    max: i32::MAX as u64,
                    option: "PTHREAD_TASK_STACK_SIZE_DEFAULT",
                    file: "components/pthread/Kconfig (int, no range: a C int)",
                },
            ),
            (
                "heap_tracing.stack_depth",
                self.heap_tracing.stack_depth,
                &KconfigRange { min: 0, max: 32, option: "HEAP_TRACING_STACK_DEPTH", file: "components/heap/Kconfig" },
            ),
            (
                "heap_tracing.records",
                self.heap_tracing.records,
                &KconfigRange {
                    min: 0,
                    max: 100000,
                    option: "ESP_DC_PORT_HEAP_TRACE_RECORDS",
                    file: "components/esp_dc_port/Kconfig (ours)",
                },
            ),
        ]
    }

    /// Checks that read two sections together.
    fn check_across_sections(&self, problems: &mut Vec<(String, String)>) {
        // Without libdatachannel threads the pthread default is also the stack's thread stack.
        if self.components.get("libdatachannel").is_some_and(|c| c.threads.is_none())
            && self.pthread.default_stack_bytes >= 2048
        {
            check_range(
                problems,
                "pthread.default_stack_bytes",
                self.pthread.default_stack_bytes.into(),
                &THREAD_STACK_RANGE,
            );
        }
        // These knobs only switch code that their patches add: without them a build would quietly
        // keep upstream's behaviour (or fail to link on one side).
        for (knob_component, knob, patches) in KNOB_PATCHES {
            let Some(value) = self.components.get(*knob_component).and_then(|c| c.knobs.get(*knob)) else { continue };
            if *value == 0 {
                continue;
            }
            for (component, patch) in patches.iter() {
                if !self.components.get(*component).is_some_and(|c| c.patches.iter().any(|p| p == patch)) {
                    problems.push((
                        format!("components.{knob_component}.knobs.{knob}"),
                        format!("{value} needs `{patch}` in components.{component}.patches"),
                    ));
                }
            }
        }
        // A DTLS read buffer smaller than a record would split an SCTP packet in two.
        if let Some(buffer) = self.components.get("libdatachannel").and_then(|c| c.knobs.get("dtls_recv_buffer_bytes"))
        {
            if *buffer < i64::from(self.mbedtls.ssl_in_content_len) {
                problems.push((
                    "components.libdatachannel.knobs.dtls_recv_buffer_bytes".into(),
                    format!(
                        "{buffer} is below mbedtls.ssl_in_content_len ({}): a record would not fit",
                        self.mbedtls.ssl_in_content_len
                    ),
                ));
            }
        }
        if !self.memory.spiram {
            for (name, c) in &self.components {
                if c.placement == Placement::Psram {
                    problems
                        .push((format!("components.{name}.placement"), "`psram` needs `memory.spiram = true`".into()));
                }
            }
        }
    }

    /// Budgets name known components.
    fn check_budget_names(&self, placed: &[&str], problems: &mut Vec<(String, String)>) {
        // Budgets may also name what the policy does not lay out: ESP-IDF's mbedTLS (configured
        // through `[mbedtls]`) and the toolchain's C++ runtime.
        let known_budget_components: Vec<&str> = placed.iter().copied().chain(components::external()).collect();
        for name in self.budgets.static_.keys() {
            if !known_budget_components.contains(&name.as_str()) {
                problems.push((format!("budgets.static.{name}"), format!("unknown component `{name}`")));
            }
        }
        for name in self.budgets.dynamic.components.keys() {
            if !known_budget_components.contains(&name.as_str()) {
                problems.push((format!("budgets.dynamic.components.{name}"), format!("unknown component `{name}`")));
            }
        }
    }
}

/// A policy name becomes part of file and directory names (build/<example>-<target>-<name>, the
/// lab's cache) and is written into the stamp (TOML), idf_component.yml, Kconfig and CMake
/// comments: only letters, digits, `_` and `-` are safe in all of them.
pub(super) fn unsafe_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (!ok).then(|| {
        format!(
            "`{}` is not a safe policy name: 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit (it names build and cache directories)",
            name.escape_debug()
        )
    })
}

/// Free text ends up on one line of a generated file (`# Policy `lean`: <description>` in
/// sdkconfig.defaults): a line break or carriage return there would start a line of its own,
/// e.g. a `CONFIG_...=y` or the policy block's end marker.
pub(super) fn unsafe_text(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| {
        format!("contains the control character {:?}; generated files take it on one line, so write it without line breaks or control characters", c)
    })
}

/// A `[sdkconfig_extra]` value becomes one line of sdkconfig.defaults and, through kconfgen,
/// `set(CONFIG_X "value")` in the build's sdkconfig.cmake and a `#define` in sdkconfig.h. So it
/// must be one of the forms kconfgen reads (y, n, m, a decimal or 0x hex number, or a string in
/// double quotes) and a string may not hold what CMake or the line would read differently: a
/// line break or control character (a line of its own), `"` and `\` (end or escape the
/// string), `$` (`${...}` expands in CMake), `;` (splits a CMake list).
pub(super) fn unsafe_sdkconfig_value(value: &str) -> Option<String> {
    let number = value.strip_prefix('-').unwrap_or(value);
    let plain = matches!(value, "y" | "n" | "m")
        || (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
        || value.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    if plain {
        return None;
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).filter(|_| value.len() >= 2) else {
        return Some(format!(
            "`{}` is not a value kconfgen reads: write y, n, a decimal or 0x hex number, or a string in double quotes (`\"text\"` in TOML: `'\"text\"'`)",
            crate::fsutil::shown(value)
        ));
    };
    inner.chars().find(|c| c.is_control() || matches!(c, '"' | '\\' | '$' | ';')).map(|c| {
        format!(
            "the string contains {:?}, which sdkconfig.defaults or the build's sdkconfig.cmake would read differently (a line break ends the line, `\"` and `\\` end or escape the string, `$` expands `${{...}}` in CMake, `;` splits a CMake list); leave it out",
            c
        )
    })
}

/// A policy error as printed: keys and values come from the file, and a line break or escape
/// sequence in one would print a forged second line or drive the terminal (`fsutil::shown`).
pub(super) fn escaped(message: String) -> String {
    crate::fsutil::shown(&message)
}

/// A path the policy names below `base` (a header under components/esp_dc_port/include, a patch
/// under patches/): relative, no `..`, only characters that are safe unquoted in CMake and in
/// the stamp, and still inside `base` once symbolic links are resolved.
pub(super) fn unsafe_path(path: &str, base: &Path) -> Option<String> {
    if !path.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '+')) {
        return Some("only letters, digits and `_ - . / +` may appear in the path".into());
    }
    if path.starts_with('/') || path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Some(format!("`{path}` must be a relative path without `.`, `..` or empty parts"));
    }
    // A symbolic link inside `base` may still point out of the repository.
    if let (Ok(real), Ok(real_base)) = (base.join(path).canonicalize(), base.canonicalize()) {
        if !real.starts_with(&real_base) {
            return Some(format!("`{path}` leads outside {} (a symbolic link)", base.display()));
        }
    }
    None
}

/// A definition is written as the quoted CMake argument `"NAME=value"` of
/// target_compile_definitions: `"` would end it (and let the rest run as CMake code), `\` and
/// `$` escape or expand inside it, `;` splits the definition list, a line break or other
/// control character breaks the line.
pub(super) fn unsafe_definition(value: &DefinitionValue) -> Option<String> {
    let DefinitionValue::Str(text) = value else { return None };
    text.chars().find(|c| c.is_control() || matches!(c, '"' | '\\' | '$' | ';')).map(|c| {
        format!(
            "the value contains {:?}, which would end or change the quoted CMake argument \"NAME=value\" in the generated CMakeLists.txt; use letters, digits and punctuation other than `\" \\ $ ;` (for a C string, define it in a header under components/esp_dc_port/include)",
            c
        )
    })
}

/// The range of the Kconfig option a policy number feeds (ESP-IDF 5.5 or our Kconfig). Checked
/// here because kconfgen drops an out-of-range value with only a warning and builds with the
/// option's default: the device would silently not follow the policy.
pub struct KconfigRange {
    pub min: u64,
    pub max: u64,
    /// The symbol without CONFIG_.
    pub option: &'static str,
    /// Where the option and its range are defined.
    pub file: &'static str,
}

/// components.libdatachannel.threads.stack_bytes (else pthread.default_stack_bytes) becomes
/// CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES.
const THREAD_STACK_RANGE: KconfigRange = KconfigRange {
    min: 2048,
    max: 131072,
    option: "ESP_DC_PORT_THREAD_STACK_BYTES",
    file: "components/esp_dc_port/Kconfig (ours)",
};

fn check_range(problems: &mut Vec<(String, String)>, key: &str, value: u64, range: &KconfigRange) {
    if value < range.min || value > range.max {
        problems.push((
            key.to_string(),
            format!(
                "{value} is out of range {}..={} of CONFIG_{} ({}); kconfgen would drop it and build with the option's default. Choose a value within the range",
                range.min, range.max, range.option, range.file
            ),
        ));
    }
}

pub(super) fn first_line(message: &str) -> String {
    message.trim().lines().next().unwrap_or("").to_string()
}

pub(super) fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key defined on `line`, for syntax errors where no parse tree exists.
pub(super) fn key_on_line(text: &str, line: usize) -> Option<String> {
    let raw = text.lines().nth(line - 1)?.trim();
    let key = raw.split('=').next()?.trim().trim_matches(|c| c == '[' || c == ']');
    (!key.is_empty()).then(|| key.to_string())
}

/// Line of a dotted key path (`components.libsrtp.placement`, `components.x.patches[0]`) in the document.
pub(super) fn span_line(doc: &toml_edit::Document<String>, text: &str, path: &str) -> Option<usize> {
    let segments: Vec<&str> =
        path.split('.').map(|s| s.split('[').next().unwrap_or(s)).filter(|s| !s.is_empty()).collect();
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut best: Option<usize> = None;
    let mut i = 0;
    while i < segments.len() {
        // A key may itself hold dots (`[components."lib.x"]`, `"CONFIG_A.B" = 1`): the longest
        // run of segments that names a key of this table wins.
        let Some((taken, key, item)) = (i + 1..=segments.len())
            .rev()
            .find_map(|end| table.get_key_value(&segments[i..end].join(".")).map(|(k, v)| (end - i, k, v)))
        else {
            break;
        };
        best = key.span().or_else(|| item.span()).map(|s| line_of_offset(text, s.start)).or(best);
        i += taken;
        match item.as_table_like() {
            Some(next) if i < segments.len() => table = next,
            _ => break,
        }
    }
    best
}
