//! Which sdkconfig keys reach the device. kconfgen drops a key that is no Kconfig option (one
//! "unknown kconfig symbol" NOTE in a long build log) and silently maps an old name listed in an
//! `sdkconfig.rename` file, so a misspelt or renamed key in sdkconfig.defaults changes nothing and
//! nobody notices. `configure` checks every key of its policy block here before it writes:
//!
//! - keys the renderer writes must be ESP-IDF options of the checked list `kconfig_keys.txt`
//!   (each with the Kconfig file defining it; the tests hold it against a real ESP-IDF tree) or
//!   symbols of our own Kconfig files (components/esp_dc_port/Kconfig, the Kconfig rendered for
//!   each generated component, and the project's other components and example components);
//! - `[sdkconfig_extra]` keys may name any of ESP-IDF's ~2,000 options, which no hand-kept list
//!   holds. So they must be well formed (`CONFIG_` + upper-case letters, digits, `_`), must not be
//!   an old name of any ESP-IDF 5.5 `sdkconfig.rename` (`kconfig_renames.txt`, plus those of the
//!   tree when there is one; the error names the new symbol), and when an ESP-IDF tree is at
//!   hand (IDF_PATH for the command) must be defined by one of its Kconfig files or ours. Without
//!   a tree such a key is accepted with a warning that it was not checked: refusing it would make
//!   sdkconfig_extra useless, accepting it silently is the bug this module exists for.
//!
//! The scanner stays small: `config`/`menuconfig`/`choice` names and rename pairs, no `depends on`
//! (an option that exists but is hidden on the target is still dropped; menuconfig shows why).

use crate::exit;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LISTED: &str = include_str!("kconfig_keys.txt");
const RENAMES: &str = include_str!("kconfig_renames.txt");

/// One ESP-IDF option of the checked list: symbol without `CONFIG_`, files (under IDF_PATH) defining it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedOption {
    pub symbol: String,
    pub files: Vec<String>,
}

/// One line of an `sdkconfig.rename`: symbols without `CONFIG_`; `inverted` for `!CONFIG_NEW`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rename {
    pub old: String,
    pub new: String,
    pub inverted: bool,
    pub file: String,
}

fn data_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| l.split_whitespace().collect())
}

/// The checked list (`kconfig_keys.txt`).
pub fn listed() -> Vec<ListedOption> {
    data_lines(LISTED)
        .map(|words| ListedOption {
            symbol: words[0].to_string(),
            files: words[1..].iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

/// ESP-IDF v5.5.1's rename pairs as committed (`kconfig_renames.txt`: `CONFIG_OLD CONFIG_NEW FILE`).
pub fn committed_renames() -> Vec<Rename> {
    data_lines(RENAMES)
        .filter_map(|words| {
            let mut r = rename_pairs(&format!("{} {}", words[0], words[1]), words.get(2).copied().unwrap_or("?"));
            r.pop()
        })
        .collect()
}

/// Names declared by Kconfig text: `config NAME`, `menuconfig NAME`, `choice NAME`. A line must
/// be just the keyword and the name (or a trailing comment), which keeps prose in help text out.
pub fn kconfig_symbols(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(keyword), Some(name)) = (words.next(), words.next()) else { continue };
        if !matches!(keyword, "config" | "menuconfig" | "choice") {
            continue;
        }
        if words.next().is_some_and(|w| !w.starts_with('#')) {
            continue;
        }
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(name.to_string());
        }
    }
    out
}

/// What a Kconfig file says about an option's values: its type and numeric ranges, and the
/// choice it is a member of (kconfgen drops a value of the wrong type or out of range with a
/// warning and builds with the default, so `[sdkconfig_extra]` is held to these).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionFacts {
    /// `bool`, `tristate`, `int`, `hex` or `string`; None when no file declared it here.
    pub kind: Option<String>,
    /// `range A B [if COND]` lines as written: (A, B); bounds may be symbols.
    pub ranges: Vec<(String, String)>,
    /// The choice it belongs to (`file:line` of the `choice` line, or the choice's name).
    pub choice: Option<String>,
}

/// Type, ranges and choice of every `config`/`menuconfig` symbol in Kconfig text. Help text is
/// skipped by indentation (its lines are indented deeper than `help`), so prose never counts.
pub fn kconfig_facts(text: &str, file: &str) -> BTreeMap<String, OptionFacts> {
    let mut out: BTreeMap<String, OptionFacts> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut choices: Vec<String> = Vec::new();
    let mut help_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(at) = help_indent {
            if trimmed.is_empty() || indent > at {
                continue;
            }
            help_indent = None;
        }
        let mut words = trimmed.split_whitespace();
        let Some(keyword) = words.next() else { continue };
        match keyword {
            "config" | "menuconfig" => {
                current = words
                    .next()
                    .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .map(str::to_string);
                if let Some(name) = &current {
                    let facts = out.entry(name.clone()).or_default();
                    if let Some(choice) = choices.last() {
                        facts.choice.get_or_insert_with(|| choice.clone());
                    }
                }
            }
            "choice" => {
                choices.push(words.next().map(str::to_string).unwrap_or_else(|| format!("{file}:{}", i + 1)));
                current = None;
            }
            "endchoice" => {
                choices.pop();
                current = None;
            }
            "menu" | "endmenu" | "if" | "endif" | "source" | "rsource" | "osource" | "orsource" | "comment"
            | "mainmenu" => current = None,
            "help" | "---help---" => help_indent = Some(indent),
            "bool" | "tristate" | "int" | "hex" | "string" | "def_bool" | "def_tristate" | "def_int" | "def_hex"
            | "def_string" => {
                if let Some(name) = &current {
                    let kind = keyword.trim_start_matches("def_").to_string();
                    out.entry(name.clone()).or_default().kind.get_or_insert(kind);
                }
            }
            "range" => {
                if let (Some(name), Some(low), Some(high)) = (&current, words.next(), words.next()) {
                    out.entry(name.clone()).or_default().ranges.push((low.to_string(), high.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Merges what several files say about the same symbols (per-target Kconfig files repeat one).
pub fn merge_facts(into: &mut BTreeMap<String, OptionFacts>, more: BTreeMap<String, OptionFacts>) {
    for (symbol, facts) in more {
        let entry = into.entry(symbol).or_default();
        if entry.kind.is_none() {
            entry.kind = facts.kind;
        }
        entry.ranges.extend(facts.ranges);
        if entry.choice.is_none() {
            entry.choice = facts.choice;
        }
    }
}

/// A Kconfig number: decimal (optionally negative) or `0x` hex.
fn kconfig_number(text: &str) -> Option<i128> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Checks an sdkconfig value against what the Kconfig files say of its option: a bool is `y`
/// or `n`, an int a decimal number, a hex `0x…`, a string a double-quoted text, and a number
/// lies within one of the option's ranges (a range whose bound is a symbol is not checked on
/// that side: its value depends on the rest of the configuration).
pub fn check_value(facts: &OptionFacts, value: &str) -> std::result::Result<(), String> {
    let Some(kind) = facts.kind.as_deref() else { return Ok(()) };
    match kind {
        "bool" if !matches!(value, "y" | "n") => return Err(format!("a bool option takes y or n, not `{value}`")),
        "tristate" if !matches!(value, "y" | "n" | "m") => {
            return Err(format!("a tristate option takes y, m or n, not `{value}`"))
        }
        "string" if !(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')) => {
            return Err(format!("a string option's value is written in double quotes, not `{value}`"))
        }
        "int" if value.parse::<i128>().is_err() => {
            return Err(format!("an int option takes a decimal number, not `{value}`"))
        }
        "hex" if !(value.starts_with("0x") || value.starts_with("0X")) || kconfig_number(value).is_none() => {
            return Err(format!("a hex option takes 0x followed by hex digits, not `{value}`"))
        }
        _ => {}
    }
    if !matches!(kind, "int" | "hex") || facts.ranges.is_empty() {
        return Ok(());
    }
    let number = kconfig_number(value).expect("checked above");
    let fits = facts.ranges.iter().any(|(low, high)| {
        kconfig_number(low).is_none_or(|low| number >= low) && kconfig_number(high).is_none_or(|high| number <= high)
    });
    if fits {
        return Ok(());
    }
    let ranges: Vec<String> = facts.ranges.iter().map(|(l, h)| format!("{l}..={h}")).collect();
    Err(format!(
        "{value} is out of range {} (its Kconfig's `range`); kconfgen would drop it and build with the option's default. Choose a value within the range",
        ranges.join(" or ")
    ))
}

/// The pairs of an `sdkconfig.rename` text (`CONFIG_OLD CONFIG_NEW`, `#` comments), tagged with `file`.
pub fn rename_pairs(text: &str, file: &str) -> Vec<Rename> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(old), Some(new)) = (words.next(), words.next()) else { continue };
        let (inverted, new) = match new.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, new),
        };
        let (Some(old), Some(new)) = (old.strip_prefix("CONFIG_"), new.strip_prefix("CONFIG_")) else { continue };
        out.push(Rename { old: old.to_string(), new: new.to_string(), inverted, file: file.to_string() });
    }
    out
}

/// `Kconfig`, `Kconfig.projbuild`, `Kconfig.*` (Kconfig.spiram.common, Kconfig.soc_caps.in) and `*.in`.
pub fn is_kconfig_file(name: &str) -> bool {
    name == "Kconfig" || name.starts_with("Kconfig.") || name.ends_with(".in")
}

/// `sdkconfig.rename` and the per-target `sdkconfig.rename.<target>`.
pub fn is_rename_file(name: &str) -> bool {
    name == "sdkconfig.rename" || name.starts_with("sdkconfig.rename.")
}

/// What an ESP-IDF tree defines: symbol -> files declaring it (relative to the root), and its renames.
#[derive(Debug, Default)]
pub struct IdfKconfig {
    pub root: PathBuf,
    pub symbols: BTreeMap<String, Vec<String>>,
    pub renames: Vec<Rename>,
    /// Type, ranges and choice of each symbol (`kconfig_facts`).
    pub facts: BTreeMap<String, OptionFacts>,
}

/// Directories whose Kconfig files belong to example and test projects, never to a user's build
/// (ESP-IDF reads components' Kconfig, Kconfig.projbuild and its root Kconfig).
const SKIPPED_DIRS: &[&str] = &[".git", "examples", "test_apps", "host_test"];

/// Walks an ESP-IDF tree (or any directory) for Kconfig symbols and rename pairs.
pub fn scan_tree(root: &Path) -> Result<IdfKconfig> {
    let mut out = IdfKconfig { root: root.to_path_buf(), ..Default::default() };
    let walker = walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        // tools/ holds kconfgen's own test fixtures, not options.
        !(e.file_type().is_dir() && (SKIPPED_DIRS.contains(&name.as_ref()) || (e.depth() == 1 && name == "tools")))
    });
    for entry in walker {
        let entry = entry.with_context(|| format!("scanning {} for Kconfig files", root.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        let (kconfig, rename) = (is_kconfig_file(&name), is_rename_file(&name));
        if !kconfig && !rename {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path()).to_string_lossy().replace('\\', "/");
        // *.in also matches linker and CMake templates; they are not UTF-8 Kconfig, skip what is not text.
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        if kconfig {
            for symbol in kconfig_symbols(&text) {
                out.symbols.entry(symbol).or_default().push(rel.clone());
            }
            merge_facts(&mut out.facts, kconfig_facts(&text, &rel));
        } else {
            out.renames.extend(rename_pairs(&text, &rel));
        }
    }
    Ok(out)
}

/// The ESP-IDF tree `configure` checks `[sdkconfig_extra]` against: IDF_PATH, when it is one.
pub fn idf_tree_from_env() -> Option<PathBuf> {
    std::env::var_os("IDF_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.join("tools/idf.py").is_file())
}

/// Symbols of the project's own Kconfig files under `project` (the repository root):
/// components/esp_dc_port/Kconfig must be there; other components' and the examples' are read
/// too, so `[sdkconfig_extra]` can set e.g. CONFIG_ESP_MEMTRACK_ENABLE. Generated components
/// (`skip`) are left out: their Kconfig on disk may be stale, the caller passes the rendered ones.
#[cfg(test)]
pub fn project_symbols(project: &Path, skip: &[&str]) -> Result<BTreeSet<String>> {
    project_kconfig(project, skip).map(|(symbols, _)| symbols)
}

/// `project_symbols`, and what those Kconfig files say of each symbol's values.
pub fn project_kconfig(project: &Path, skip: &[&str]) -> Result<(BTreeSet<String>, BTreeMap<String, OptionFacts>)> {
    let port = project.join("components/esp_dc_port/Kconfig");
    let text = std::fs::read_to_string(&port).map_err(|e| {
        exit::bad_input(format!(
            "{}: cannot read esp_dc_port's Kconfig ({e}); the checkout is incomplete",
            port.display()
        ))
    })?;
    let mut out: BTreeSet<String> = kconfig_symbols(&text).into_iter().collect();
    let mut facts = kconfig_facts(&text, "components/esp_dc_port/Kconfig");
    for dir in ["components", "examples"] {
        let walker = walkdir::WalkDir::new(project.join(dir)).into_iter().filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            let generated = e.depth() == 1 && dir == "components" && skip.contains(&name.as_ref());
            !(e.file_type().is_dir()
                && (generated
                    || name.starts_with('.')
                    || ["build", "managed_components", "upstream"].contains(&name.as_ref())))
        });
        for entry in walker.filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
            if is_kconfig_file(&entry.file_name().to_string_lossy()) && entry.path() != port {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    out.extend(kconfig_symbols(&text));
                    merge_facts(&mut facts, kconfig_facts(&text, &entry.path().display().to_string()));
                }
            }
        }
    }
    Ok((out, facts))
}

/// How a key was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ESP-IDF option of the checked list.
    Listed,
    /// Declared by one of our Kconfig files.
    Ours,
    /// Declared by a Kconfig file of the ESP-IDF tree at hand.
    InTree,
    /// Well formed and no known rename, but there was no ESP-IDF tree to look it up in.
    Unchecked,
}

/// Everything a key is checked against.
#[derive(Debug, Default)]
pub struct Known {
    listed: BTreeSet<String>,
    ours: BTreeSet<String>,
    /// old -> its rename (the tree's first, then the committed ones).
    renames: BTreeMap<String, Rename>,
    tree: Option<(PathBuf, BTreeSet<String>)>,
    /// What the Kconfig files at hand (ours, the tree's) say of each symbol's values.
    facts: BTreeMap<String, OptionFacts>,
}

impl Known {
    /// The checked list and the committed renames, plus our own symbols.
    pub fn new(ours: impl IntoIterator<Item = String>) -> Known {
        let mut renames = BTreeMap::new();
        for r in committed_renames() {
            renames.entry(r.old.clone()).or_insert(r);
        }
        Known {
            listed: listed().into_iter().map(|o| o.symbol).collect(),
            ours: ours.into_iter().collect(),
            renames,
            tree: None,
            facts: BTreeMap::new(),
        }
    }

    /// Adds what Kconfig text (ours: esp_dc_port's, the rendered components') says of values.
    pub fn with_facts(mut self, facts: BTreeMap<String, OptionFacts>) -> Known {
        merge_facts(&mut self.facts, facts);
        self
    }

    /// What is known of a symbol's values (no `CONFIG_`), if any Kconfig file at hand declares it.
    pub fn facts(&self, symbol: &str) -> Option<&OptionFacts> {
        self.facts.get(symbol)
    }

    /// Also checks against a scanned ESP-IDF tree, whose renames win over the committed ones.
    pub fn with_tree(mut self, tree: &IdfKconfig) -> Known {
        for r in tree.renames.iter().rev() {
            self.renames.insert(r.old.clone(), r.clone());
        }
        self.tree = Some((tree.root.clone(), tree.symbols.keys().cloned().collect()));
        merge_facts(&mut self.facts, tree.facts.clone());
        self
    }

    /// The rename that applies to `symbol` (no `CONFIG_`), followed to its last name:
    /// (final name, inverted an odd number of times, the first rename file).
    fn renamed(&self, symbol: &str) -> Option<(String, bool, String)> {
        let first = self.renames.get(symbol)?;
        let (mut name, mut inverted) = (first.new.clone(), first.inverted);
        let mut seen = BTreeSet::from([symbol.to_string()]);
        while let Some(next) = self.renames.get(&name) {
            if !seen.insert(name.clone()) {
                break;
            }
            name = next.new.clone();
            inverted ^= next.inverted;
        }
        Some((name, inverted, first.file.clone()))
    }

    /// Checks one sdkconfig key (`CONFIG_NAME`); the error says what is wrong and what to write.
    pub fn check(&self, key: &str) -> std::result::Result<Verdict, String> {
        let Some(symbol) = key.strip_prefix("CONFIG_") else {
            return Err("sdkconfig keys start with CONFIG_ (kconfgen ignores anything else)".into());
        };
        if symbol.is_empty() || !symbol.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("not a Kconfig symbol: after CONFIG_ only letters, digits and `_`".into());
        }
        if symbol.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "not an ESP-IDF symbol: they are upper case (did you mean `CONFIG_{}`?)",
                symbol.to_ascii_uppercase()
            ));
        }
        if let Some((new, inverted, file)) = self.renamed(symbol) {
            let value = if inverted { " with the opposite value" } else { "" };
            return Err(format!(
                "an old name: ESP-IDF 5.5 renamed it to CONFIG_{new} ({file}) and maps it silently; write `CONFIG_{new}`{value} instead"
            ));
        }
        if self.listed.contains(symbol) {
            return Ok(Verdict::Listed);
        }
        if self.ours.contains(symbol) {
            return Ok(Verdict::Ours);
        }
        match &self.tree {
            Some((_, symbols)) if symbols.contains(symbol) => Ok(Verdict::InTree),
            Some((root, _)) => Err(format!(
                "unknown kconfig symbol: no Kconfig file under {} nor of this project defines {symbol}, so kconfgen would ignore it; check the name in `idf.py menuconfig` (a symbol of another project's Kconfig belongs in sdkconfig.defaults outside the policy block)",
                root.display()
            )),
            None => Ok(Verdict::Unchecked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KCONFIG: &str = "\
menu \"Demo\"
    config DEMO_ENABLE
        bool \"Enable\"
        help
            config this is prose, not a symbol
    menuconfig DEMO_MENU  # a comment
        bool \"More\"
    choice DEMO_MODE
        prompt \"Mode\"
        config DEMO_MODE_A
            bool \"A\"
    endchoice
    choice
        prompt \"unnamed\"
    endchoice
endmenu
";

    const RENAME: &str = "\
# sdkconfig replacement configurations for deprecated options formatted as
# CONFIG_DEPRECATED_OPTION CONFIG_NEW_OPTION

CONFIG_OLD_STACK_EXT   CONFIG_DEMO_ENABLE
CONFIG_OLD_NO_MODE     !CONFIG_DEMO_MODE_A
CONFIG_OLDER_NAME      CONFIG_OLD_STACK_EXT
";

    fn fixture_known() -> Known {
        let mut tree = IdfKconfig { root: PathBuf::from("/idf"), ..Default::default() };
        for s in kconfig_symbols(KCONFIG) {
            tree.symbols.entry(s).or_default().push("components/demo/Kconfig".into());
        }
        tree.renames = rename_pairs(RENAME, "components/demo/sdkconfig.rename");
        Known::new(["ESP_DC_PORT_THREAD_STACK_BYTES".to_string()]).with_tree(&tree)
    }

    #[test]
    fn scanner_collects_config_menuconfig_and_named_choices() {
        assert_eq!(kconfig_symbols(KCONFIG), ["DEMO_ENABLE", "DEMO_MENU", "DEMO_MODE", "DEMO_MODE_A"]);
    }

    #[test]
    fn rename_pairs_read_comments_blank_lines_and_inversion() {
        let pairs = rename_pairs(RENAME, "f");
        assert_eq!(pairs.len(), 3);
        assert_eq!(
            pairs[0],
            Rename { old: "OLD_STACK_EXT".into(), new: "DEMO_ENABLE".into(), inverted: false, file: "f".into() }
        );
        assert!(pairs[1].inverted && pairs[1].new == "DEMO_MODE_A");
    }

    #[test]
    fn file_names_the_scanner_reads() {
        for yes in ["Kconfig", "Kconfig.projbuild", "Kconfig.spiram.common", "Kconfig.soc_caps.in"] {
            assert!(is_kconfig_file(yes), "{yes}");
        }
        for no in ["Kconfig_old", "CMakeLists.txt", "sdkconfig.rename"] {
            assert!(!is_kconfig_file(no), "{no}");
        }
        assert!(
            is_rename_file("sdkconfig.rename")
                && is_rename_file("sdkconfig.rename.esp32s3")
                && !is_rename_file("sdkconfig.renamed")
        );
    }

    #[test]
    fn scan_tree_walks_kconfig_and_rename_files_and_skips_examples() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("components/demo/Kconfig", KCONFIG);
        write("components/demo/esp32s3/Kconfig.spiram", "config DEMO_SPIRAM\n    bool\n");
        write("components/demo/sdkconfig.rename.esp32s3", RENAME);
        write("components/demo/test_apps/main/Kconfig.projbuild", "config ONLY_IN_A_TEST_APP\n");
        write("examples/x/main/Kconfig.projbuild", "config ONLY_IN_AN_EXAMPLE\n");
        write("components/demo/memory.ld.in", "not kconfig\n");
        let tree = scan_tree(dir.path()).unwrap();
        assert_eq!(tree.symbols["DEMO_SPIRAM"], ["components/demo/esp32s3/Kconfig.spiram"]);
        assert!(tree.symbols.contains_key("DEMO_MODE_A"));
        assert!(!tree.symbols.contains_key("ONLY_IN_A_TEST_APP") && !tree.symbols.contains_key("ONLY_IN_AN_EXAMPLE"));
        assert_eq!(tree.renames.len(), 3);
        assert_eq!(tree.renames[0].file, "components/demo/sdkconfig.rename.esp32s3");
    }

    #[test]
    fn check_accepts_listed_ours_and_tree_keys() {
        let known = fixture_known();
        assert_eq!(known.check("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN"), Ok(Verdict::Listed));
        assert_eq!(known.check("CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES"), Ok(Verdict::Ours));
        assert_eq!(known.check("CONFIG_DEMO_MENU"), Ok(Verdict::InTree));
        // Without a tree an unlisted key cannot be judged: accepted, and the caller warns.
        assert_eq!(Known::new([]).check("CONFIG_DEMO_MENU"), Ok(Verdict::Unchecked));
    }

    #[test]
    fn check_refuses_unknown_malformed_and_renamed_keys() {
        let known = fixture_known();
        let err = known.check("CONFIG_DEMO_ENABLED").unwrap_err();
        assert!(err.starts_with("unknown kconfig symbol: no Kconfig file under /idf"), "{err}");
        assert!(known.check("DEMO_ENABLE").unwrap_err().contains("start with CONFIG_"));
        assert!(known.check("CONFIG_DEMO-ENABLE").unwrap_err().contains("only letters, digits"));
        assert!(known.check("CONFIG_demo_enable").unwrap_err().contains("did you mean `CONFIG_DEMO_ENABLE`"));
        let err = known.check("CONFIG_OLD_STACK_EXT").unwrap_err();
        assert!(
            err.contains("renamed it to CONFIG_DEMO_ENABLE (components/demo/sdkconfig.rename)")
                && err.contains("write `CONFIG_DEMO_ENABLE` instead"),
            "{err}"
        );
        // A chain is followed to the current name; an inversion asks for the opposite value.
        assert!(known.check("CONFIG_OLDER_NAME").unwrap_err().contains("write `CONFIG_DEMO_ENABLE` instead"));
        assert!(known
            .check("CONFIG_OLD_NO_MODE")
            .unwrap_err()
            .contains("`CONFIG_DEMO_MODE_A` with the opposite value"));
        // The committed renames apply without a tree: the key this module was written for.
        let err = Known::new([]).check("CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY").unwrap_err();
        assert!(
            err.contains("CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM (components/freertos/sdkconfig.rename)"),
            "{err}"
        );
    }

    #[test]
    fn committed_list_is_well_formed_and_used_by_the_renderer() {
        let render = include_str!("render.rs");
        let options = listed();
        assert!(!options.is_empty());
        for option in &options {
            assert!(!option.files.is_empty(), "kconfig_keys.txt: {} names no Kconfig file", option.symbol);
            assert!(
                Known::new([]).renamed(&option.symbol).is_none(),
                "kconfig_keys.txt: {} is an old name",
                option.symbol
            );
            // A listed option nobody renders would only widen what passes unchecked.
            assert!(
                render.contains(&format!("\"{}\"", option.symbol))
                    || render.contains(&format!("CONFIG_{}", option.symbol)),
                "kconfig_keys.txt: render.rs never writes {}",
                option.symbol
            );
        }
        assert!(committed_renames().len() > 400);
    }

    /// The committed list and renames against a real ESP-IDF tree: every listed option is
    /// declared, under its current name, by each file the list names; every rename pair of the
    /// tree is committed (a pair committed but not in the tree must come from a file the tree
    /// lacks, as in a tree trimmed for one target).
    #[test]
    fn committed_lists_match_the_esp_idf_tree() {
        let Some(root) = crate::idf::tree_for_tests() else {
            crate::idf::say_skipped("committed_lists_match_the_esp_idf_tree");
            return;
        };
        let tree = scan_tree(&root).unwrap();
        let mut problems = Vec::new();
        let tree_renames: BTreeSet<&Rename> = tree.renames.iter().collect();
        for option in listed() {
            if let Some(r) = tree.renames.iter().find(|r| r.old == option.symbol) {
                problems.push(format!("{} is an old name: {} renames it to CONFIG_{}", option.symbol, r.file, r.new));
            }
            for file in &option.files {
                match std::fs::read_to_string(root.join(file)) {
                    Ok(text) if kconfig_symbols(&text).contains(&option.symbol) => {}
                    Ok(_) => problems.push(format!(
                        "{}: {file} does not declare it (declared in {:?})",
                        option.symbol,
                        tree.symbols.get(&option.symbol)
                    )),
                    Err(e) => problems.push(format!("{}: {file}: {e}", option.symbol)),
                }
            }
        }
        let committed: BTreeSet<Rename> = committed_renames().into_iter().collect();
        for r in tree_renames.iter().filter(|r| !committed.contains(**r)) {
            problems.push(format!(
                "kconfig_renames.txt lacks `CONFIG_{} {}CONFIG_{} {}`",
                r.old,
                if r.inverted { "!" } else { "" },
                r.new,
                r.file
            ));
        }
        for r in committed.iter().filter(|r| !tree_renames.contains(r) && root.join(&r.file).exists()) {
            problems.push(format!(
                "kconfig_renames.txt has `CONFIG_{} CONFIG_{}`, which {} no longer lists",
                r.old, r.new, r.file
            ));
        }
        assert!(
            problems.is_empty(),
            "{} against {}:\n{}",
            "kconfig_keys.txt / kconfig_renames.txt",
            root.display(),
            problems.join("\n")
        );
        // The check itself sees the trap that started this: the old stack placement key.
        let known = Known::new([]).with_tree(&tree);
        assert!(known
            .check("CONFIG_SPIRAM_ALLOW_STACK_EXTERNAL_MEMORY")
            .unwrap_err()
            .contains("CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM"));
        assert_eq!(known.check("CONFIG_LWIP_MAX_SOCKETS"), Ok(Verdict::InTree));
        assert!(known.check("CONFIG_LWIP_MAX_SOCKET").is_err());
    }

    /// Every `sdkconfig.defaults` of the examples, per-target ones (`sdkconfig.defaults.esp32p4`)
    /// included, by file: (file name, target or None, keys set or unset).
    fn example_defaults() -> Vec<(String, Option<String>, Vec<String>)> {
        let examples = crate::fsutil::project_root().join("examples");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&examples).unwrap().filter_map(|e| e.ok()) {
            for file in std::fs::read_dir(entry.path()).into_iter().flatten().filter_map(|e| e.ok()) {
                let name = file.file_name().to_string_lossy().to_string();
                let Some(rest) = name.strip_prefix("sdkconfig.defaults") else { continue };
                let target = rest.strip_prefix('.').map(str::to_string);
                let text = std::fs::read_to_string(file.path()).unwrap();
                let keys = text
                    .lines()
                    .filter_map(|l| {
                        let l = l.trim();
                        l.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")).or_else(|| {
                            if l.starts_with('#') {
                                None
                            } else {
                                l.split('=').next()
                            }
                        })
                    })
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect();
                out.push((format!("{}/{name}", entry.file_name().to_string_lossy()), target, keys));
            }
        }
        out.sort();
        out
    }

    /// A per-target defaults file is only read for a target `cargo xtask build` knows.
    #[test]
    fn example_defaults_files_are_for_known_targets() {
        let files = example_defaults();
        assert!(files.iter().any(|(f, _, _)| f == "whep_camera/sdkconfig.defaults.esp32p4"), "{files:?}");
        for (file, target, keys) in &files {
            if let Some(target) = target {
                assert!(crate::idf::TARGETS.contains(&target.as_str()), "{file}: no such target {target}");
            }
            for key in keys {
                assert!(
                    key.starts_with("CONFIG_") && !key.contains(char::is_lowercase),
                    "{file}: `{key}` is no sdkconfig key"
                );
            }
        }
    }

    /// The examples' defaults, per-target files included, name real options: each key is defined
    /// by the ESP-IDF tree (under its current name), by protocol_examples_common (which the
    /// examples use from IDF_PATH/examples) or by this project's Kconfig files. A key of a
    /// per-target file must also be declared by a Kconfig file that target reads: one outside any
    /// chip folder or inside that chip's own (components/esp_psram/esp32p4/Kconfig.spiram), so
    /// an S3-only name such as SPIRAM_MODE_OCT in the P4's file fails. Not checked: `depends on`
    /// (SPIRAM_SPEED_200M needs IDF_EXPERIMENTAL_FEATURES, set beside it) and chip capabilities
    /// (SOC_EMAC_SUPPORTED), whose Kconfig this trimmed tree lacks for the chips.
    #[test]
    fn examples_defaults_files_name_real_options() {
        let Some(root) = crate::idf::tree_for_tests() else {
            crate::idf::say_skipped("kconfig_keys::tests::examples_defaults_files_name_real_options");
            return;
        };
        let tree = scan_tree(&root).unwrap();
        let examples_common = root.join("examples/common_components/protocol_examples_common/Kconfig.projbuild");
        let common = kconfig_symbols(&std::fs::read_to_string(&examples_common).unwrap());
        assert!(common.iter().any(|s| s == "EXAMPLE_ETH_PHY_IP101"), "{}", examples_common.display());
        let mut ours: Vec<String> = project_symbols(&crate::fsutil::project_root(), &[]).unwrap().into_iter().collect();
        ours.extend(common);
        let known = Known::new(ours.clone()).with_tree(&tree);
        let is_chip_dir =
            |segment: &str| segment.strip_prefix("esp32").is_some_and(|r| r.chars().all(|c| c.is_ascii_alphanumeric()));
        let mut problems = Vec::new();
        let mut checked = 0;
        for (file, target, keys) in example_defaults() {
            for key in keys {
                checked += 1;
                match known.check(&key) {
                    Ok(Verdict::Unchecked) => problems.push(format!("{file}: {key}: not checked")),
                    Ok(_) => {}
                    Err(why) => {
                        problems.push(format!("{file}: {key}: {why}"));
                        continue;
                    }
                }
                let (Some(target), Some(files)) = (&target, tree.symbols.get(&key["CONFIG_".len()..])) else {
                    continue;
                };
                if ours.iter().any(|s| s == &key["CONFIG_".len()..]) {
                    continue;
                }
                let applies = files.iter().any(|f| {
                    let chip = f.split('/').find(|seg| is_chip_dir(seg));
                    chip.is_none_or(|c| c == target)
                });
                if !applies {
                    problems.push(format!("{file}: {key} is only declared for other chips: {files:?}"));
                }
            }
        }
        assert!(checked > 30, "only {checked} keys found");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        // The check sees a key of the wrong chip.
        let octal = tree.symbols.get("SPIRAM_MODE_OCT").expect("the S3's octal PSRAM option");
        assert!(octal.iter().all(|f| f.contains("/esp32s3/")), "{octal:?}");
    }
}
