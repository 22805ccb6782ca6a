//! The `fjord` binary's usage surface. (Being an integration test of this package, it also
//! makes `cargo test --workspace` build `target/<profile>/fjord`, which the multi-process
//! tests in `tests/` run.)

use std::process::Command;

fn fjord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fjord"))
}

#[test]
fn help_lists_every_command() {
    let out = fjord().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "serve", "dev", "topic", "produce", "consume", "cluster", "bench",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn serve_without_settings_is_a_usage_error() {
    let out = fjord().arg("serve").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_acks_mode_is_a_usage_error() {
    let out = fjord()
        .args(["produce", "t", "--acks", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
}
