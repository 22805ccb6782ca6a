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

#[test]
fn group_alter_config_needs_one_change_and_never_sets_and_resets_one_setting() {
    for args in [
        vec!["group", "alter-config", "g"],
        vec![
            "group",
            "alter-config",
            "g",
            "--session-timeout-ms",
            "5000",
            "--reset-session-timeout",
        ],
        vec!["group", "alter-config", "g", "--assignor", "sticky"],
    ] {
        let out = fjord().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
