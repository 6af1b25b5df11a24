//! `probe-client rtcd-api URL`: what the Calls plugin needs from RTCD's API (being written).

#[derive(clap::Args, Debug, Clone)]
pub struct RtcdApiArgs {}

pub async fn run(_args: RtcdApiArgs) -> i32 {
    crate::fail("rtcd-api is not implemented yet")
}
