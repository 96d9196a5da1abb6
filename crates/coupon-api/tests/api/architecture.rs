//! docs/ARCHITECTURE.md's module map against `src/`, and the imports among
//! coupon-api's top-level modules: one way only. Reads files; needs no services.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workspace() -> PathBuf {
    crate_dir().join("../..")
}

/// The paths in backticks on the map's table rows, e.g. `crates/coupon-api/src/http/`.
fn mapped_paths() -> Vec<String> {
    let doc = fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).expect("reading docs/ARCHITECTURE.md");
    doc.lines()
        .filter(|line| line.starts_with("| `crates/"))
        .filter_map(|line| line.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

/// coupon-api's top-level modules: each `src/` entry but the crate roots.
fn top_level_modules() -> BTreeMap<String, PathBuf> {
    let src = crate_dir().join("src");
    fs::read_dir(&src)
        .expect("reading src/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            let module = path.is_dir() || path.extension().is_some_and(|ext| ext == "rs");
            (module && name != "lib" && name != "main").then_some((name, path))
        })
        .collect()
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    fs::read_dir(path)
        .expect("reading a module folder")
        .flat_map(|entry| rust_files(&entry.expect("a directory entry").path()))
        .filter(|file| file.extension().is_some_and(|ext| ext == "rs"))
        .collect()
}

#[test]
fn every_path_in_the_module_map_exists() {
    let paths = mapped_paths();
    assert!(paths.len() > 20, "the map lists the modules: {paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|path| !workspace().join(path).exists()).collect();
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}");
}

#[test]
fn every_top_level_module_of_coupon_api_is_in_the_map() {
    let paths: BTreeSet<String> = mapped_paths().into_iter().collect();
    let unmapped: Vec<String> = top_level_modules()
        .into_iter()
        .map(|(name, path)| {
            if path.is_dir() {
                format!("crates/coupon-api/src/{name}/")
            } else {
                format!("crates/coupon-api/src/{name}.rs")
            }
        })
        .filter(|path| !paths.contains(path))
        .collect();
    assert!(unmapped.is_empty(), "modules missing from docs/ARCHITECTURE.md: {unmapped:?}");
}

#[test]
fn no_import_cycle_among_coupon_apis_modules() {
    let modules = top_level_modules();
    let uses: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(name, path)| {
            let used = rust_files(path)
                .iter()
                .flat_map(|file| {
                    let text = fs::read_to_string(file).expect("reading a source file");
                    text.split("crate::")
                        .skip(1)
                        .map(|rest| rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                        .collect::<Vec<_>>()
                })
                .filter(|used| used != name && modules.contains_key(used))
                .collect();
            (name.clone(), used)
        })
        .collect();
    // Depth-first, reporting the first cycle found as a path of modules.
    fn visit(
        module: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for used in &uses[module] {
            if let Some(cycle) = visit(used, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        if let Some(cycle) = visit(module, &uses, &mut Vec::new(), &mut done) {
            panic!("coupon-api's modules import each other: {}", cycle.join(" → "));
        }
    }
}

/// Two advisories entered through features this service does not use: h2
/// (RUSTSEC-2026-0258) through actix-web's HTTP/2, rsa (RUSTSEC-2023-0071)
/// through jsonwebtoken's RustCrypto backend. Neither may come back.
#[test]
fn the_lockfile_holds_neither_h2_nor_rsa() {
    let lock = fs::read_to_string(workspace().join("Cargo.lock")).expect("reading Cargo.lock");
    for unwanted in ["h2", "rsa"] {
        assert!(!lock.contains(&format!("\nname = \"{unwanted}\"\n")), "{unwanted} is in Cargo.lock");
    }
}
