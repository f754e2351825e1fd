//! What the CLI tests share.

/// A scenario that fails on every seed: it expects no master where one is elected at once.
pub const ALWAYS_FAILS: &str = r#"summary = "Expects no master for 3 s, which a healthy group never gives."

[group]
sites = ["A", "B", "C"]

[[step]]
at = "0s"
expect = { master = "none", for = "3s" }
"#;
