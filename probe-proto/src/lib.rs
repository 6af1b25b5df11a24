//! Sans-IO protocol of the Calls network probe (placeholder, being written).
pub mod rtcd;
pub mod stats;
pub mod stun;
