//! A minimal temporary directory removed on drop (std only).

use std::path::{Path, PathBuf};

/// `$TMPDIR/probe-tests-{pid}-{n}-{label}`, removed recursively on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("probe-tests-{}-{label}", crate::unique_id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
