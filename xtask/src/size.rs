//! `cargo xtask size` (being written).
use crate::exit::Outcome;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Outcome {
    Err(crate::exit::bad_input("`size` is not implemented yet"))
}
