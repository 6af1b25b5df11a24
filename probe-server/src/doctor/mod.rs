//! `probe-server doctor`: the troubleshooting guide's host-side checks (being written).

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs) -> i32 {
    crate::fail("doctor is not implemented yet")
}
