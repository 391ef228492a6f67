//! Links the static musl release binary without unwind tables (see
//! link/no-unwind-tables.ld): they cost 10 % of the 1 MiB budget, and with
//! the release profile's panic=abort nothing reads them. (Cargo does not
//! tell build scripts the profile's panic strategy, so the profile name
//! stands for it; tests and the fuzz profile, which unwind, build for the
//! host target and keep the tables.)

fn main() {
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "musl");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/link/no-unwind-tables.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
    if musl && release {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{script}");
    }
}
