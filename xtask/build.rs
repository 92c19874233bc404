//! The lab's trace format is defined once, in lab/recorder/lab_trace.h; bindgen gives the Rust
//! side the same layouts as the 32-bit recorder that writes it (clang targets i686).

fn main() {
    // Read at run time, not with env!(): the build script binary is cached under
    // $ESP_DC_CACHE and may have been compiled for a clone at another path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let header = std::path::Path::new(&manifest_dir).join("../lab/recorder/lab_trace.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg("--target=i686-unknown-linux-gnu")
        .allowlist_type("lab_.*")
        .allowlist_var("LAB_.*")
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen could not read lab/recorder/lab_trace.h (is libclang-dev installed? run scripts/setup.sh)");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lab_trace.rs");
    bindings.write_to_file(out).expect("writing lab_trace.rs");
}
