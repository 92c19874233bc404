//! Static sizes per component (RAM, PSRAM, IRAM, flash), read from ESP-IDF's json2 size
//! report, a GNU linker map or the lab's 32-bit host libraries; where a chip's map places each
//! library's `.bss` and sync wrappers. Used by `size-check`, the lab, `analyze` and `audit`.

use crate::exit;
use crate::fsutil::project_root;
use crate::idf;
use crate::policy::{Policy, StaticPlacement};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sizes {
    /// Internal data RAM: .data + .bss in DRAM/DIRAM.
    pub dram_bytes: u64,
    pub iram_bytes: u64,
    /// .text + .rodata in flash.
    pub flash_bytes: u64,
    /// .bss linked into external RAM (`.ext_ram.bss`, the `extern_ram` target of the
    /// `extram_bss` scheme; on the host: the .bss that `static_placement = "psram"` moves).
    pub psram_bytes: u64,
}

/// What a size-components archive name stands for among the policy's components
/// (`components::REGISTRY`'s archive names: ESP-IDF names a component's archive
/// lib<directory>.a, components/libdatachannel -> liblibdatachannel.a).
pub fn component_of_archive(archive: &str) -> Option<&'static str> {
    crate::components::of_archive(archive)
}

/// Which budget a section counts against, by its output section name.
fn classify(section: &str) -> Option<fn(&mut Sizes) -> &mut u64> {
    if section.contains("iram") {
        Some(|s| &mut s.iram_bytes)
    } else if section.contains("ext_ram") && section.ends_with(".bss") {
        // components/esp_system/ld/<chip>/sections.ld.in: `.ext_ram.bss` holds mapping[extern_ram].
        Some(|s| &mut s.psram_bytes)
    } else if section.contains("dram") && (section.ends_with(".data") || section.ends_with(".bss")) {
        Some(|s| &mut s.dram_bytes)
    } else if section.contains(".flash.") && !section.contains("appdesc") {
        Some(|s| &mut s.flash_bytes)
    } else {
        None
    }
}

/// Which budget a section of a json2 report counts against. esp-idf-size 1.x names sections by
/// their output section (`.dram0.bss`) unless it runs with `--unify`, as ESP-IDF 5.5's
/// `idf.py size-components` runs it: then the names are abbreviated (`.bss`, `.data`, `.text`,
/// `.rodata`) and only the memory type (esp_idf_size/chip_info/<chip>.yaml: `DIRAM`, `Flash`,
/// `Flash Code`, `External RAM`, …) tells where the bytes are.
fn classify_json2(memory_type: &str, section: &str) -> Option<fn(&mut Sizes) -> &mut u64> {
    if section.trim_start_matches('.').contains('.') {
        return classify(section);
    }
    let kind = section.trim_start_matches('.');
    let memory = memory_type.to_ascii_lowercase();
    if memory.contains("flash") {
        (!kind.contains("appdesc")).then_some(|s: &mut Sizes| &mut s.flash_bytes)
    } else if memory.contains("external") || memory.contains("psram") || memory.contains("spiram") {
        (kind == "bss").then_some(|s: &mut Sizes| &mut s.psram_bytes)
    } else if kind == "data" || kind == "bss" {
        // DIRAM, DRAM, IRAM and the RTC/core RAMs are all internal.
        Some(|s| &mut s.dram_bytes)
    } else if kind == "text" || kind == "vectors" || kind == "literal" {
        Some(|s| &mut s.iram_bytes)
    } else {
        None
    }
}

/// The largest size a section of an ESP32-family chip can have: the chips address 32 bits, so a
/// bigger figure is a damaged report, and refusing it keeps every sum below u64's range.
const MAX_SECTION_BYTES: u64 = u32::MAX as u64;

/// Adds a section to its component's total; a total past u64 is a damaged report, not a size.
fn add_size(total: &mut u64, size: u64, place: impl FnOnce() -> String) -> Result<(), String> {
    if size > MAX_SECTION_BYTES {
        return Err(format!(
            "{}: size {size} is larger than a 32-bit chip's address space; the report is damaged, regenerate it",
            place()
        ));
    }
    *total = total.checked_add(size).ok_or_else(|| {
        format!("{}: the component's total passes 2^64 bytes; the report is damaged, regenerate it", place())
    })?;
    Ok(())
}

/// A JSON value whose objects have no repeated key. serde_json keeps the last of two equal
/// keys, so a report with an archive or section listed twice would lose one of them (perhaps
/// the breaching one) without a word: such a report is refused, its line named.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictJson(value) = map.next_value()?;
            if out.insert(key.clone(), value).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "key `{key}` appears twice in one object; one of them would be lost"
                )));
            }
        }
        Ok(out.into())
    }
}

/// Parses `idf.py size-components --format json2` (esp-idf-size's archive summary:
/// `esp_idf_size/memorymap.py` get_archives_summary, shape shown in `esp_idf_size/docs/readme.md`).
pub fn parse_json2(text: &str) -> Result<BTreeMap<String, Sizes>, String> {
    let value = serde_json::from_str::<StrictJson>(text).map_err(|e| format!("not JSON: {e}"))?.0;
    let archives = value.as_object().ok_or("expected an object of archives (size-components --format json2)")?;
    let mut out: BTreeMap<String, Sizes> = BTreeMap::new();
    for (archive, info) in archives {
        let memory_types = info
            .get("memory_types")
            .and_then(|m| m.as_object())
            .ok_or_else(|| format!("{archive}: no `memory_types` object"))?;
        let Some(component) = component_of_archive(archive) else { continue };
        let sizes = out.entry(component.to_string()).or_default();
        for (mem_type, mt) in memory_types {
            let sections = mt
                .get("sections")
                .and_then(|s| s.as_object())
                .ok_or_else(|| format!("{archive}: {mem_type}: no `sections` object"))?;
            for (section, s) in sections {
                let size = s
                    .get("size")
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| format!("{archive}: {mem_type}: {section}: no integer `size`"))?;
                if let Some(field) = classify_json2(mem_type, section) {
                    add_size(field(sizes), size, || format!("{archive}: {mem_type}: {section}"))?;
                }
            }
        }
    }
    Ok(out)
}

/// Parses a GNU ld map: input sections under each output section, summed by archive.
#[cfg(test)]
pub fn parse_map(text: &str) -> Result<BTreeMap<String, Sizes>, String> {
    parse_map_lines(text).map(|(sizes, _)| sizes)
}

/// Lines of a report that look like a size but could not be read: (line number, text).
pub type Skipped = Vec<(usize, String)>;

/// `parse_map`, and the input-section lines it could not read: a garbled address, or a
/// section name wrapped onto its own line with nothing after it (a truncated map).
pub fn parse_map_lines(text: &str) -> Result<(BTreeMap<String, Sizes>, Skipped), String> {
    let mut out: BTreeMap<String, Sizes> = BTreeMap::new();
    let mut skipped = Skipped::new();
    let start =
        text.find("Linker script and memory map").ok_or("not a GNU linker map: no `Linker script and memory map`")?;
    let mut output_section = String::new();
    let mut continued = false; // the input section's name stood alone; address, size and file follow
    let mut device_regions = false;
    let first_line = text[..start].matches('\n').count() + 1;
    // The line of a section name that stood alone, until its address line follows.
    let mut wrapped: Option<(usize, String)> = None;
    for (index, line) in crate::fsutil::split_lines(&text[start..]).enumerate() {
        let number = first_line + index;
        if line.starts_with('.') {
            output_section = line.split_whitespace().next().unwrap_or("").to_string();
            device_regions |= classify(&output_section).is_some();
            if let Some(lost) = wrapped.take() {
                skipped.push(lost);
            }
            continued = false;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let rest: &[&str] = if std::mem::take(&mut continued) {
            let Some(name_line) = wrapped.take() else { continue };
            if fields.first().is_none_or(|f| !f.starts_with("0x")) {
                // Not the address line the wrapped name announced: that section's size is lost.
                skipped.push(name_line);
                continue;
            }
            &fields
        } else if line.starts_with(' ')
            && !line.starts_with("  ")
            && fields.first().is_some_and(|f| f.starts_with('.') || f.starts_with("COMMON"))
        {
            if fields.len() == 1 {
                continued = true;
                wrapped = Some((number, line.trim().to_string()));
                continue;
            }
            &fields[1..]
        } else {
            continue;
        };
        // `0xADDRESS 0xSIZE archive(object)`
        let [address, size, file, ..] = rest else {
            // An input section with its address (and size) but no file: the line was cut (the
            // map's last line, or a line another write overwrote); whose bytes they were is lost.
            if classify(&output_section).is_some() && rest.first().is_some_and(|a| a.starts_with("0x")) {
                skipped.push((number, line.trim().to_string()));
            }
            continue;
        };
        if !address.starts_with("0x") {
            // A file is named, so the line sized something: garbled, not a linker-script line.
            if classify(&output_section).is_some() {
                skipped.push((number, line.trim().to_string()));
            }
            continue;
        }
        let size = u64::from_str_radix(size.trim_start_matches("0x"), 16)
            .map_err(|_| format!("line {number}: bad size `{size}` in `{}`", line.trim()))?;
        let archive = file.split('(').next().unwrap_or(file);
        let (Some(component), Some(field)) = (component_of_archive(archive), classify(&output_section)) else {
            continue;
        };
        add_size(field(out.entry(component.to_string()).or_default()), size, || {
            format!("line {number}: `{}`", line.trim())
        })?;
    }
    if let Some(lost) = wrapped.take() {
        // The map ends right after a wrapped section name: truncated.
        skipped.push(lost);
    }
    if !device_regions {
        // A linux-target build's map has .text/.data/.bss only: every budget would read "missing".
        return Err("no ESP32 memory regions in this map (no .dram0.*, .iram0.* or .flash.* sections): it is not a chip build; a linux-target build runs on the host and has no device memory map. Size a chip build, or use --host for the lab's 32-bit figures".into());
    }
    Ok((out, skipped))
}

/// Where a GNU ld map (linked with `--cref`, as ESP-IDF links) says a symbol is defined, and
/// which input files refer to it: `(definer, referrers)`. ESP-IDF's map names C++ symbols
/// demangled (`operator new(unsigned int)`). None when the symbol is not in the table.
pub fn cross_reference(map: &str, symbol: &str) -> Option<(String, Vec<String>)> {
    let table = &map[map.find("\nCross Reference Table")?..];
    let mut lines = table.lines();
    let first = lines.find(|l| l.strip_prefix(symbol).is_some_and(|rest| rest.starts_with(char::is_whitespace)))?;
    let definer = first[symbol.len()..].trim().to_string();
    let referrers = lines.take_while(|l| l.starts_with(' ')).map(|l| l.trim().to_string()).collect();
    Some((definer, referrers))
}

/// The output sections a map links a component's `.bss`/`COMMON` input sections of non-zero size
/// into, with their byte sums: where its zero-initialised data really went.
pub fn bss_placement(map: &str, component: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some(start) = map.find("Linker script and memory map") else { return out };
    let mut output_section = "";
    let mut pending: Option<&str> = None;
    for line in map[start..].lines() {
        if line.starts_with('.') {
            output_section = line.split_whitespace().next().unwrap_or("");
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, rest) = match (pending.take(), fields.as_slice()) {
            (Some(name), [address, ..]) if address.starts_with("0x") => (name, &fields[..]),
            (_, [name]) if line.starts_with(' ') => {
                pending = Some(name);
                continue;
            }
            (_, [name, rest @ ..]) if line.starts_with(' ') && !line.starts_with("  ") => (*name, rest),
            _ => continue,
        };
        let [_, size, file, ..] = rest else { continue };
        let is_bss = name.starts_with(".bss") || name.starts_with(".sbss") || name.starts_with("COMMON");
        let archive = file.split('(').next().unwrap_or(file);
        let size = u64::from_str_radix(size.trim_start_matches("0x"), 16).unwrap_or(0);
        if is_bss && size > 0 && component_of_archive(archive) == Some(component) {
            *out.entry(output_section.to_string()).or_default() += size;
        }
    }
    out
}

/// The esp32p4 linker map of `policy`'s `datachannel_echo`, newest first of: the project's own
/// build (`cargo xtask build --target esp32p4 --policy P`) and the one the esp32p4 test and
/// `build --matrix` make under the cache (`idf::staged_root`). None when neither exists.
pub fn chip_map(policy: &str) -> Option<PathBuf> {
    let dir = format!("datachannel_echo-esp32p4-{policy}");
    let candidates =
        [project_root().join("build").join(&dir), idf::staged_root("esp32p4", policy).join("build").join(&dir)];
    candidates
        .into_iter()
        .map(|d| d.join("datachannel_echo.map"))
        .filter_map(|m| Some((std::fs::metadata(&m).ok()?.modified().ok()?, m)))
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, m)| m)
}

/// A chip map's static figures, read whole: a map with lines it could not read gives no figure.
pub struct ChipStatic {
    pub map: PathBuf,
    pub sizes: BTreeMap<String, Sizes>,
}

/// `chip_map` read, or None when there is no chip build; an unreadable or damaged map is an error.
pub fn chip_static(policy: &str) -> Option<Result<ChipStatic>> {
    let map = chip_map(policy)?;
    Some((|| {
        let text = std::fs::read_to_string(&map)
            .map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", map.display())))?;
        let (sizes, skipped) =
            parse_map_lines(&text).map_err(|e| exit::bad_input(format!("{}: {e}", map.display())))?;
        if let Some((number, line)) = skipped.first() {
            return Err(exit::bad_input(format!(
                "{}:{number}: its size could not be read ({line}); rebuild the chip build or delete the map",
                map.display()
            )));
        }
        Ok(ChipStatic { map, sizes })
    })())
}

/// Per component, the lab's host proxy for static internal RAM beside the chip map's figures,
/// or a line saying why there are no chip figures.
pub fn static_comparison(policy: &Policy, host: &BTreeMap<String, Sizes>) -> Result<String> {
    use std::fmt::Write;
    let name = &policy.policy.name;
    let Some(chip) = chip_static(name) else {
        return Ok(format!(
            "static internal RAM ({name}): host proxy only; no esp32p4 build of datachannel_echo at build/datachannel_echo-esp32p4-{name} or $ESP_DC_CACHE/idf-esp32p4/{name} (`cargo xtask build --target esp32p4 --policy {name}` makes one)\n"
        ));
    };
    let chip = chip?;
    let mut out = format!("static data ({name}): host proxy vs esp32p4 map {}\n", chip.map.display());
    let _ = writeln!(out, "{:<16} {:>12} {:>12} {:>12}", "component", "host int. B", "p4 int. B", "p4 psram B");
    let (mut host_sum, mut chip_sum, mut psram_sum) = (0, 0, 0);
    for (component, h) in host {
        let c = chip.sizes.get(component).cloned().unwrap_or_default();
        let _ = writeln!(out, "{:<16} {:>12} {:>12} {:>12}", component, h.dram_bytes, c.dram_bytes, c.psram_bytes);
        host_sum += h.dram_bytes;
        chip_sum += c.dram_bytes;
        psram_sum += c.psram_bytes;
    }
    let _ = writeln!(out, "{:<16} {:>12} {:>12} {:>12}", "total", host_sum, chip_sum, psram_sum);
    Ok(out)
}

/// What a chip's linker map shows against what the policy asks for: each placeable library's
/// `.bss` in `.ext_ram.bss` (psram) or internal DRAM, the sync-object wrappers linked with the
/// real functions left to ESP-IDF's pthread, and operator new/delete from esp_dc_port. Each
/// problem is one line; empty when the map agrees.
pub fn placement_problems(policy: &Policy, map: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for component in crate::policy::STATIC_PLACEABLE {
        let psram = policy.memory.spiram
            && policy.components.get(*component).is_some_and(|c| c.static_placement == StaticPlacement::Psram);
        let expected = if psram { ".ext_ram.bss" } else { ".dram0.bss" };
        let placed = bss_placement(map, component);
        let elsewhere: Vec<String> =
            placed.iter().filter(|(section, _)| *section != expected).map(|(s, b)| format!("{b} B in {s}")).collect();
        if placed.is_empty() {
            problems.push(format!("{component}: no .bss of it in the map (is it linked?)"));
        } else if !elsewhere.is_empty() {
            problems.push(format!("{component}: .bss should be in {expected}, the map has {}", elsewhere.join(", ")));
        }
    }
    let port = "libesp_dc_port.a";
    if policy.sync.placement == crate::policy::SyncPlacement::WithOwner {
        for f in ["pthread_mutex_init", "pthread_cond_init"] {
            match cross_reference(map, &format!("__wrap_{f}")) {
                Some((definer, _)) if definer.contains(port) => {}
                Some((definer, _)) => problems.push(format!("__wrap_{f} comes from {definer}, not {port}")),
                None => problems.push(format!("__wrap_{f} is not linked (the --wrap of sync.placement = with_owner)")),
            }
            if let Some((definer, referrers)) = cross_reference(map, f) {
                if !definer.contains("libpthread.a") {
                    problems.push(format!("{f} comes from {definer}, not ESP-IDF's libpthread.a"));
                }
                let direct: Vec<&String> = referrers.iter().filter(|r| !r.contains(port)).collect();
                if !direct.is_empty() {
                    problems.push(format!("{f} is still called around the wrapper by {direct:?}"));
                }
            }
        }
    }
    for op in ["operator new(unsigned int)", "operator delete(void*)"] {
        match cross_reference(map, op) {
            Some((definer, _)) if definer.contains(port) => {}
            Some((definer, _)) => problems.push(format!("{op} comes from {definer}, not esp_dc_port's replacement")),
            None => problems.push(format!("{op} is not in the map's cross reference table")),
        }
    }
    problems
}

/// Reads a saved size report: JSON if it starts with `{`, else a linker map.
pub fn read_report(path: &Path) -> Result<BTreeMap<String, Sizes>> {
    read_report_lines(path).map(|(sizes, _)| sizes)
}

/// `read_report`, and the lines of a map it could not read (a JSON report is read whole or refused).
pub fn read_report_lines(path: &Path) -> Result<(BTreeMap<String, Sizes>, Skipped)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let parsed = if text.trim_start().starts_with('{') {
        parse_json2(&text).map(|s| (s, Skipped::new()))
    } else {
        parse_map_lines(&text)
    };
    parsed.map_err(|e| exit::bad_input(format!("{}: {e}", path.display())))
}

/// Sections of a host library that are RAM on the device. `.data.rel.ro` is not: it is constant
/// data a shared library must relocate, and linked statically for the device it stays in flash.
pub fn is_host_ram_section(name: &str) -> bool {
    matches!(name, ".data" | ".bss" | ".tdata" | ".tbss")
}

/// Static sizes of the host build's shared libraries: .data/.bss (and TLS) as DRAM, .text/.rodata
/// as flash. `.data.rel.ro` (vtables and relocated constants of position-independent code) is
/// left out: on the device those are .rodata in flash.
///
/// With `static_placement = "psram"` a component's `.bss` counts as PSRAM, as the `extram_bss`
/// fragment links it on the device; `.data` and thread-local storage stay internal (ESP-IDF
/// copies `.data` from flash into DRAM at boot, and reserves TLS on every task's stack).
pub fn host_sizes(libraries: &BTreeMap<String, PathBuf>, policy: &Policy) -> Result<BTreeMap<String, Sizes>> {
    use object::{Object, ObjectSection};
    let mut out = BTreeMap::new();
    for (component, path) in libraries {
        let bytes = std::fs::read(path).map_err(|e| exit::bad_input(format!("{}: {e}", path.display())))?;
        let file = object::File::parse(&*bytes).map_err(|e| exit::bad_input(format!("{}: {e}", path.display())))?;
        let mut s = Sizes::default();
        let bss_to_psram = policy.memory.spiram
            && policy.components.get(component).is_some_and(|c| c.static_placement == StaticPlacement::Psram);
        for section in file.sections() {
            match section.name().unwrap_or("") {
                ".bss" if bss_to_psram => s.psram_bytes = s.psram_bytes.saturating_add(section.size()),
                // Saturating: a damaged library shows as an absurd size and breaches, never panics.
                name if is_host_ram_section(name) => s.dram_bytes = s.dram_bytes.saturating_add(section.size()),
                ".text" | ".rodata" => s.flash_bytes = s.flash_bytes.saturating_add(section.size()),
                _ => {}
            }
        }
        out.insert(component.clone(), s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
