//! The CLI's own arguments: what it refuses at start, before it connects.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

/// The CLI refuses bad balancing settings at start, naming them.
#[test]
fn bad_balancing_settings_are_refused_at_start() {
    let binary = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));
    for (args, expected) in [
        (&["--lb", "round-robin"][..], "--lb"),
        (&["--dns-refresh-secs", "0"][..], "--dns-refresh-secs"),
        (&["--keepalive-secs", "0"][..], "--keepalive-secs"),
        (&["--dns-server", "not-an-ip"][..], "--dns-server"),
    ] {
        let output = std::process::Command::new(binary)
            .args(args)
            .env_remove("LB_POLICY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = std::process::Command::new(binary)
        .env("LB_POLICY", "random")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("random"), "{stderr}");
}
