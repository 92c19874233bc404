//! The generated blocks of the documentation: `<!-- NAME:begin -->` ... `<!-- NAME:end -->` in
//! README.md or a file under docs/, each rewritten by the command that measures its figures.
//! One table says which file holds which block, so a command never guesses where its tables
//! went when the text moved (issue 31 split the README into docs/), and a test holds the files
//! and this table to each other.

use crate::exit;
use crate::fsutil::{project_root, write_atomic};
use anyhow::Result;

/// A generated block: its name and the file (from the project root) that holds it.
pub struct Block {
    pub name: &'static str,
    pub file: &'static str,
}

/// Every generated block. A block in README.md or docs/*.md that is not here, or a row here
/// whose block is not in its file (or is in another file too), fails `docs::tests`.
/// All are written by `cargo xtask lab --update-docs`: `lab`, and `threads` with the
/// datachannel scenario (`headline` too when both shipped policies ran), `targets` with lean; `savings` with `--policy lean --knob-savings`;
/// `lossy` with `--loss P`.
pub const BLOCKS: &[Block] = &[
    Block { name: "headline", file: "README.md" },
    Block { name: "lab", file: "docs/lab.md" },
    Block { name: "threads", file: "docs/lab.md" },
    Block { name: "targets", file: "docs/lab.md" },
    Block { name: "savings", file: "docs/lab.md" },
    Block { name: "lossy", file: "docs/lab.md" },
    Block { name: "viewers", file: "docs/lab.md" },
];

/// Replaces the block `name` (one of [`BLOCKS`]) with `markdown`, in the file that holds it.
pub fn update_block(name: &str, markdown: &str) -> Result<()> {
    let Some(block) = BLOCKS.iter().find(|b| b.name == name) else {
        anyhow::bail!("no generated block named `{name}` in docs::BLOCKS");
    };
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let path = project_root().join(block.file);
    let text = std::fs::read_to_string(&path)?;
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return Err(exit::bad_input(format!("{}: no `{begin}` ... `{end}` block to replace", path.display())));
    };
    let updated = format!("{}{begin}\n{}\n{}", &text[..b], markdown.trim(), &text[e..]);
    write_atomic(&path, updated.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests;
