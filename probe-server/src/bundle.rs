//! `probe-server bundle`: what support asks for, in one archive (being written).

#[derive(clap::Args, Debug, Clone)]
pub struct BundleArgs {}

pub fn run(_args: BundleArgs) -> i32 {
    crate::fail("bundle is not implemented yet")
}
