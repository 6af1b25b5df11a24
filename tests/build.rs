//! One `#[test]` per `scenarios/*.toml`, generated, so adding a scenario is adding its file.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    let mut out = String::new();
    for n in &names {
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && n.starts_with(|c: char| c.is_ascii_lowercase()),
            "scenario file name {n:?}: use lower-case letters, digits and _"
        );
        writeln!(
            out,
            "#[test]\nfn {n}() {{\n    let _report = probe_tests::run_named({n:?});\n}}\n"
        )
        .unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("scenario_tests.rs");
    std::fs::write(dest, out).unwrap();
}
