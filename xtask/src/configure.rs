//! `cargo xtask configure` (being written).
use crate::exit::Outcome;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Outcome {
    Err(crate::exit::bad_input("`configure` is not implemented yet"))
}
