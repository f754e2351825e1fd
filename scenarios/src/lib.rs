//! The repsim scenario language, catalog, runner and CLI. Not started yet.

pub use reports;
