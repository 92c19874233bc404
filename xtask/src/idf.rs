//! `cargo xtask build` (being written).
use crate::exit::Outcome;

#[derive(clap::Args)]
pub struct BuildArgs {}

pub fn build(_args: BuildArgs) -> Outcome {
    Err(crate::exit::bad_input("`build` is not implemented yet"))
}
