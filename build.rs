//! Links libext2fs and libcom_err dynamically (both LGPL/MIT: never statically).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for lib in ["ext2fs", "com_err"] {
        if pkg_config::Config::new().cargo_metadata(true).probe(lib).is_err() {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
