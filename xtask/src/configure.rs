//! `cargo xtask configure`: policy -> ESP-IDF component tree. The work is `layout`'s (which
//! `build` and the tests also call); this module is the command line.

use crate::exit::Outcome;
use crate::fsutil::project_root;
use crate::layout::{application_root, configure_with, Options};
use crate::policy::Policy;
use std::path::PathBuf;

/// `cargo xtask configure [--policy lean|stock|PATH] [--check] [--json]`
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Writes components/<lib>/ for libdatachannel, libjuice, usrsctp, libsrtp and plog (CMakeLists.txt,
Kconfig, idf_component.yml from templates/, upstream sources with the policy's patches from
patches/ copied into upstream/, git-ignored), the policy block of sdkconfig.defaults (your lines
outside the block are kept) and the stamp components/.esp_dc_policy. A second run changes nothing.

With --into APP_DIR the same lands in your own ESP-IDF application: APP_DIR/components/ gets
libdatachannel, libjuice, usrsctp, libsrtp, plog, esp_dc_port and esp_dc_init (ours: replaced on every run),
APP_DIR/sdkconfig.defaults the policy block (your lines are kept), and the stamp. Your main/,
CMakeLists.txt, other components and sdkconfig are never touched.

Each folder configure writes carries a stamp (.esp_dc_component) listing its files. A folder of
one of those names without the stamp (your own port of libdatachannel, say), or a file in a
stamped folder that is not on its list, is refused (exit 2, named) rather than deleted: move it
aside, or pass --replace, which first moves the folder to APP_DIR/components.esp_dc-backup-<UTC
date>/ (outside components/, so ESP-IDF does not build it twice) and says so. --dry-run lists
what a run would write or move and writes nothing.

A line of your sdkconfig.defaults that sets an option the policy block also sets, to another
value, is a conflict: configure lists each (key, your value, the policy's, which one the build
would see) and exits 2. Delete your line to take the policy's value, or keep yours with
--keep-sdkconfig CONFIG_NAME (repeatable; the block then leaves that option out and says so).
A second or stale policy block in the file is an error too.

Examples:
  cargo xtask configure                   # lean, then: cd examples/datachannel_echo && idf.py build
  cargo xtask configure --policy stock    # the seed's baseline
  cargo xtask configure --check           # CI: is the tree what the policy says?
  cargo xtask configure --into ~/src/my-camera      # then in it: idf.py build
  cargo xtask configure --into ~/src/my-camera --check
  cargo xtask configure --into ~/src/my-camera --dry-run    # what would change
  cargo xtask configure --into ~/src/my-camera --replace    # yours to a backup first
  cargo xtask configure --into ~/src/my-camera --keep-sdkconfig CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN

Exit codes: 0 done (or no drift with --check, or --dry-run listed what would change), 1 --check
found drift, 2 bad policy, patch or template (`file:line: key: what is wrong`), a folder or file
configure did not write where it would write, an sdkconfig.defaults conflict or stale block:
nothing written.")]
pub struct Args {
    /// Policy: `lean`, `stock` (policies/<name>.toml) or a path to a .toml file.
    #[arg(long, default_value = "lean")]
    pub policy: String,
    /// Report which files differ from what the policy generates, write nothing; exit 1 on drift.
    #[arg(long)]
    pub check: bool,
    /// Print the result as JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// Lay the tree into your own ESP-IDF application instead of this project: its components/
    /// gets our components and its sdkconfig.defaults the policy block; nothing else is touched.
    #[arg(long, value_name = "APP_DIR")]
    pub into: Option<PathBuf>,
    /// List what a run would write, replace or move; write nothing (exit 2 where a run would refuse).
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Move a component folder configure did not write (no .esp_dc_component stamp, or files not
    /// on its list) to components.esp_dc-backup-<UTC date>/ beside components/, then write ours.
    #[arg(long)]
    pub replace: bool,
    /// Keep your own sdkconfig.defaults line for this option where it conflicts with the policy
    /// block (the block leaves it out). Repeatable: `--keep-sdkconfig CONFIG_A --keep-sdkconfig CONFIG_B`.
    #[arg(long, value_name = "CONFIG_NAME")]
    pub keep_sdkconfig: Vec<String>,
}

pub fn run(args: Args) -> Outcome {
    let root = match &args.into {
        Some(app) => application_root(app)?,
        None => project_root(),
    };
    let options = Options {
        check: args.check,
        json: args.json,
        dry_run: args.dry_run,
        replace: args.replace,
        keep_sdkconfig: args.keep_sdkconfig,
    };
    configure_with(&root, &Policy::path_for(&args.policy), &options)
}
