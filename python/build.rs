//! The master's main.rs is this crate's root: `rgun_hosted` tells it that
//! it is the pip-installed rgun's extension module.

fn main() {
    println!("cargo::rustc-cfg=rgun_hosted");
}
