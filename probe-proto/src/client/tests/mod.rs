//! Unit tests of the client core with synthetic time and bytes.

mod echo;
mod run;
