//! The sending schedule the command line asks for; the schedule itself, and its pure rules,
//! are [`probe_proto::client::Schedule`].

use crate::cli::{ProbeArgs, ProfileArg};
use probe_proto::client::Schedule;
use probe_proto::msg::Profile;

pub fn from_args(a: &ProbeArgs) -> Schedule {
    let profile = match a.profile {
        ProfileArg::Audio => Profile::Audio,
        ProfileArg::Video => Profile::Video,
    };
    Schedule::new(profile, a.interval, a.size, a.duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::time::Duration;

    fn schedule(args: &[&str]) -> Schedule {
        let cli = Cli::try_parse_from([&["probe-client", "host"], args].concat()).expect("args");
        from_args(&cli.probe)
    }

    #[test]
    fn options_reach_the_schedule() {
        let a = schedule(&[]);
        assert_eq!(a.profile, Profile::Audio);
        assert_eq!(
            (a.tick, a.burst.as_slice()),
            (Duration::from_millis(20), &[160][..])
        );
        assert_eq!(a.duration, Duration::from_secs(5));
        let v = schedule(&[
            "--profile",
            "video",
            "--size",
            "300",
            "--interval",
            "50",
            "--duration",
            "2",
        ]);
        assert_eq!(v.profile, Profile::Video);
        assert_eq!(
            (v.tick, v.burst.as_slice()),
            (Duration::from_millis(50), &[300; 6][..])
        );
        assert_eq!(v.duration, Duration::from_secs(2));
    }
}
