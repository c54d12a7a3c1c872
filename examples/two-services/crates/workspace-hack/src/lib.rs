//! No code: this crate's dependencies give every server and client of the workspace the features
//! the workspace's own build resolves, so `cargo run -p <service>-server` after `cargo build`
//! compiles nothing again. `Cargo.toml` says which crate turns each one on.
