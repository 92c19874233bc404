use super::BLOCKS;
use crate::fsutil::project_root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// README.md, every docs/*.md and examples/README.md, as paths from the project root.
fn documents() -> Vec<String> {
    let root = project_root();
    let mut files = vec!["README.md".to_string(), "examples/README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The names of the `<!-- NAME:begin -->` blocks of `text`, each checked to have its end after it.
fn blocks_in(file: &str, text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in text.match_indices("<!-- ") {
        let rest = &text[at + 5..];
        let Some(close) = rest.find(" -->") else { continue };
        let Some(name) = rest[..close].strip_suffix(":begin") else { continue };
        let end = format!("<!-- {name}:end -->");
        assert!(rest.contains(&end), "{file}: `<!-- {name}:begin -->` without `{end}` after it");
        names.push(name.to_string());
    }
    names
}

#[test]
fn every_generated_block_has_its_generator_and_lives_in_one_file() {
    let root = project_root();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in documents() {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for name in blocks_in(&file, &text) {
            found.entry(name).or_default().push(file.clone());
        }
    }
    for (name, files) in &found {
        let block = BLOCKS.iter().find(|b| b.name == name.as_str()).unwrap_or_else(|| {
            panic!(
                "{files:?}: block `{name}` has no generator (not in docs::BLOCKS): generate it or make it plain text"
            )
        });
        assert_eq!(files, &vec![block.file.to_string()], "block `{name}` must be in {} only", block.file);
    }
    for block in BLOCKS {
        assert!(found.contains_key(block.name), "{}: no `<!-- {}:begin -->` block", block.file, block.name);
    }

    // Each row has a writer in the code, and the code writes no block the table lacks.
    let mut called = Vec::new();
    for file in rust_sources(&root.join("xtask/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("update_block(\"") {
            let rest = &text[at + "update_block(\"".len()..];
            called.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    for block in BLOCKS {
        assert!(
            called.iter().any(|c| c == block.name),
            "block `{}` is in docs::BLOCKS but no code writes it",
            block.name
        );
    }
    for name in &called {
        assert!(BLOCKS.iter().any(|b| b.name == name), "code writes block `{name}`, which docs::BLOCKS lacks");
    }
}

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("docs/tests.rs") {
            out.push(path);
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces to `-`; a repeated anchor gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for heading in prose_lines(text).filter_map(|l| l.strip_prefix('#')) {
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The lines outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of the Markdown links `[text](target)` outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Inline code holds examples, not links.
        let line: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

#[test]
fn every_relative_link_resolves_to_a_file_and_heading() {
    let root = project_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documents().into_iter().filter(|f| f == "README.md" || f.starts_with("docs/")) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let dir = root.join(&file).parent().unwrap().to_path_buf();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() { root.join(&file) } else { dir.join(path) };
            if !resolved.exists() {
                broken.push(format!("{file}: ({target}): no file {}", resolved.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let heads = anchors(&std::fs::read_to_string(&resolved).unwrap_or_default());
                if !heads.iter().any(|h| h == anchor) {
                    broken.push(format!("{file}: ({target}): no heading with anchor #{anchor}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "links that do not resolve:\n{}", broken.join("\n"));
    assert!(checked > 10, "only {checked} relative links found: is the link reader broken?");
}

#[test]
fn the_link_checker_finds_a_broken_link_and_anchor() {
    let text = "# A `title` (here)\n\n[ok](#a-title-here) [bad](#nope)\n```\n[in code](#nope)\n```\n";
    assert_eq!(anchors(text), vec!["a-title-here"]);
    assert_eq!(link_targets(text), vec!["#a-title-here", "#nope"]);
}

#[test]
fn readme_is_an_entry_page() {
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; the manual belongs in docs/ (issue 31)");
}
