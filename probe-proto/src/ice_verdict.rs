//! Verdict rules of the ICE host-override check (being written).

use crate::report::{Finding, IceReport};
use crate::verdict::Facts;

/// Findings of the ICE check, judged on each advertised candidate's own check.
pub fn evaluate(_ice: &IceReport, _facts: &Facts) -> Vec<Finding> {
    Vec::new()
}
