//! The application ELF: checks that it is the one the log came from, then turns backtrace
//! addresses into source lines and components.

use crate::exit::bad_input;
use crate::report::component_of_source_path;
use object::{Object, ObjectSection, SectionKind};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub component: Option<&'static str>,
}

pub struct Elf {
    loader: addr2line::Loader,
    code_ranges: Vec<(u64, u64)>,
    cache: HashMap<u64, Vec<Frame>>,
}

/// The architecture a chip's app is built for, from the ROM banner's chip name.
fn architecture_of_chip(chip: &str) -> Option<object::Architecture> {
    match chip {
        "esp32" | "esp32s2" | "esp32s3" => Some(object::Architecture::Xtensa),
        c if c.starts_with("esp32") => Some(object::Architecture::Riscv32),
        _ => None,
    }
}

/// Opens the ELF and refuses one that cannot be the log's: unreadable, no DWARF line info,
/// another architecture than the chip in the boot banner, a different `ELF file SHA256`
/// (ESP-IDF prints the first CONFIG_APP_RETRIEVE_LEN_ELF_SHA hex digits of the SHA-256 of the
/// ELF file, components/esp_app_format/esp_app_desc.c), or backtraces that fall outside its code.
pub fn open(
    path: &Path,
    chip: Option<&str>,
    sha_prefix: Option<&(usize, String)>,
    addresses: &[u64],
) -> anyhow::Result<Elf> {
    let bytes = std::fs::read(path).map_err(|e| bad_input(format!("cannot read the ELF {}: {e}", path.display())))?;
    let file = object::File::parse(&*bytes)
        .map_err(|e| bad_input(format!("{} is not an ELF file ({e}); pass build/<project>.elf", path.display())))?;
    if let Some(chip) = chip {
        if let Some(expected) = architecture_of_chip(chip) {
            if file.architecture() != expected {
                return Err(bad_input(format!(
                    "{} is built for {:?} but the log comes from an {chip} ({expected:?}); pass the app ELF of that build",
                    path.display(),
                    file.architecture()
                )));
            }
        }
    }
    if file.section_by_name(".debug_line").is_none() || file.section_by_name(".debug_info").is_none() {
        return Err(bad_input(format!(
            "{} has no DWARF line information (.debug_line/.debug_info); use the unstripped build/<project>.elf",
            path.display()
        )));
    }
    if let Some((line, prefix)) = sha_prefix {
        let actual = sha256_hex(path)?;
        if !actual.starts_with(prefix.as_str()) {
            return Err(bad_input(format!(
                "the log was produced by another build: line {line} says ELF file SHA256 {prefix}..., {} is {}",
                path.display(),
                &actual[..prefix.len().min(actual.len())]
            )));
        }
    }
    let code_ranges: Vec<(u64, u64)> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
        .map(|s| (s.address(), s.address().saturating_add(s.size())))
        .collect();
    let inside = |a: u64| code_ranges.iter().any(|&(lo, hi)| a >= lo && a < hi);
    if !addresses.is_empty() && !addresses.iter().any(|&a| inside(a)) {
        return Err(bad_input(format!(
            "none of the {} backtrace addresses in the log (e.g. {:#010x}) fall inside the code of {}: wrong ELF",
            addresses.len(),
            addresses[0],
            path.display()
        )));
    }
    drop(file);
    let loader = addr2line::Loader::new(path)
        .map_err(|e| bad_input(format!("cannot read DWARF from {}: {e}", path.display())))?;
    Ok(Elf { loader, code_ranges, cache: HashMap::new() })
}

/// SHA-256 of the file, as esptool embeds it (`elf2image --elf-sha256-offset`).
fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    let sh = xshell::Shell::new()?;
    let out = xshell::cmd!(sh, "sha256sum -b {path}")
        .read()
        .map_err(|e| bad_input(format!("cannot hash {} with sha256sum: {e}", path.display())))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_ascii_lowercase())
}

impl Elf {
    /// Source frames of a backtrace entry. heap_trace records return addresses
    /// (`__builtin_return_address`, `esp_fp_get_callers`: components/heap/include/heap_trace.inc),
    /// which point after the call and can belong to the next line; the byte before lies inside
    /// the call instruction. Falls back to the address itself when that byte is not code.
    pub fn caller_frames(&mut self, return_address: u64) -> &[Frame] {
        let call = return_address.wrapping_sub(1);
        if self.code_ranges.iter().any(|&(lo, hi)| call >= lo && call < hi) && !self.frames(call).is_empty() {
            return self.frames(call);
        }
        self.frames(return_address)
    }

    /// Source frames at `address`, innermost (inlined) first; empty when outside the debug info.
    pub fn frames(&mut self, address: u64) -> &[Frame] {
        let inside = self.code_ranges.iter().any(|&(lo, hi)| address >= lo && address < hi);
        let loader = &self.loader;
        self.cache.entry(address).or_insert_with(|| {
            if !inside {
                return Vec::new();
            }
            let mut out = Vec::new();
            if let Ok(mut frames) = loader.find_frames(address) {
                while let Ok(Some(frame)) = frames.next() {
                    let (file, line) = match &frame.location {
                        Some(loc) => (loc.file.unwrap_or("").to_string(), loc.line.unwrap_or(0)),
                        None => (String::new(), 0),
                    };
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.demangle().ok().map(|s| s.into_owned()))
                        .or_else(|| loader.find_symbol(address).map(str::to_string))
                        .unwrap_or_default();
                    if file.is_empty() && function.is_empty() {
                        continue;
                    }
                    let component = component_of_source_path(&file);
                    out.push(Frame { file, line, function, component });
                }
            }
            out
        })
    }
}
