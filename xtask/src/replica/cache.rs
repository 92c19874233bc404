//! The host build's content key: what decides whether a cached replica build is still this
//! policy's and these sources'.

use crate::fsutil::fnv1a64;
use crate::policy::Policy;
use crate::render::host::{component_flags, knob_definitions, mbedtls_config_lines};
use crate::upstream::{self, Tree};
use anyhow::{Context, Result};
use std::path::Path;

/// A short content key for cached build products: `fsutil::fnv1a64` as 16 hex digits.
pub fn hash_of(parts: &[&[u8]]) -> String {
    format!("{:016x}", fnv1a64(parts))
}

/// What this file does with the inputs beyond their content (cmake options, compiler flags,
/// directory layout). Change it with the recipe: old cache directories then stop matching.
const RECIPE: &str = "host-recipe-7: cmake and compilers run plainly; compile_commands.json";

/// Where the stack's flags find the redirect header, relative to the clone.
pub(crate) const INCLUDE_DIR: &str = "components/esp_dc_port/include";

/// The host build's cache key, from content only: the recipe, the policy's flags, knobs and
/// mbedTLS lines, the stack's CMake options, the pinned versions, every file of the patched stack
/// tree (so every patch), the port headers and port_host.c the stack links with, each component template. Paths count
/// relative to the clone at `root`, never absolutely, so a second clone (or CI's scratch copy)
/// finds the first one's build. The recorder and the driver are separate artifacts in the
/// directory, each keyed by its own sources (`recorder-<hash>`, `driver-<hash>`): a recorder
/// fix then costs a second, not a rebuild of the stack.
pub(crate) fn cache_key(root: &Path, policy: &Policy, stack: &Tree) -> Result<String> {
    let flags = component_flags(policy, root, Path::new(INCLUDE_DIR))?;
    let mut parts: Vec<Vec<u8>> = vec![RECIPE.into()];
    parts.extend(upstream::pinned_versions(root)?.into_iter().map(String::into_bytes));
    parts.extend([
        format!("{flags:?}").into_bytes(),
        format!("{:?}", knob_definitions(policy)).into_bytes(),
        mbedtls_config_lines(policy).into_bytes(),
        format!("{:?}", super::STACK_OPTIONS).into_bytes(),
    ]);
    let port = Tree::read(&root.join(INCLUDE_DIR))?;
    for (rel, bytes) in stack.files.iter().chain(&port.files) {
        parts.push(rel.to_string_lossy().as_bytes().to_vec());
        parts.push(bytes.clone());
    }
    let port_host = root.join("lab/recorder/port_host.c");
    parts.push(std::fs::read(&port_host).with_context(|| format!("reading {}", port_host.display()))?);
    let refs: Vec<&[u8]> = parts.iter().map(|v| v.as_slice()).collect();
    Ok(hash_of(&refs))
}
