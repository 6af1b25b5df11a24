//! A progress line on stderr while running, only when stderr is a terminal.

use std::io::{IsTerminal, Write};

pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn off() -> Self {
        Self { enabled: false }
    }

    pub fn show(&self, msg: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{msg}");
            let _ = e.flush();
        }
    }

    pub fn clear(&self) {
        self.show("");
    }
}
