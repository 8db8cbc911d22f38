//! The `fcgi-proxy` command line: help, version, usage errors, check-config.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-proxy");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run fcgi-proxy")
}

#[test]
fn help_and_version() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for key in [
        "check-config",
        "--config",
        "--apache",
        "--listen",
        "--admin",
        "--version",
        "listening on",
        "RUST_LOG",
    ] {
        assert!(help.contains(key), "--help does not mention {key}");
    }
    for flag in ["-V", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("fcgi-proxy {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--bogus"],
        &["--config"],
        &["--config", "a.toml", "--apache", "b.conf"],
        &["check-config"],
        &[
            "check-config",
            "--config",
            "a.toml",
            "--listen",
            "127.0.0.1:0",
        ],
        &["--config", "a.toml", "run"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/config_fixtures/example.toml"
    );
    let out = run(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    // A file that cannot be read is an error of the configuration, not of the command line.
    let out = run(&["check-config", "--config", "/nonexistent/fcgi-proxy.toml"]);
    assert_eq!(out.status.code(), Some(1));
}
