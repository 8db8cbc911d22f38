//! The `fcgi-mock` binary: help, script checking, serving and journaling.

mod common;

use std::process::{Command, Stdio};

use common::{Client, within};
use fastcgi::KEEP_CONN;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-mock");

#[test]
fn help_documents_the_script_format() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for key in [
        "--script",
        "--listen",
        "--unix",
        "--journal",
        "--check",
        "listening on",
        "[server]",
        "max_conns",
        "overflow",
        "backlog",
        "hold",
        "multiplex",
        "always_close",
        "idle_timeout_ms",
        "[server.values]",
        "FCGI_MAX_CONNS",
        "[[rule]]",
        "[default]",
        "script_name_prefix",
        "request_uri_prefix",
        "request",
        "action",
        "reply",
        "echo",
        "never_answer",
        "reset",
        "status",
        "headers",
        "body",
        "data",
        "stderr",
        "delay_ms",
        "repeat",
        "app_status",
        "protocol_status",
        "cant_mpx_conn",
        "reply_after",
        "padding",
        "align8",
        "reply_request_id",
        "unknown_record_type",
        "bad_version",
        "omit_header_terminator",
        "split_at",
        "split_every",
        "split_pause_ms",
        "cut",
        "after_body_bytes",
        "record_size",
        "connection_open",
        "connection_close",
        "closed_by",
    ] {
        assert!(help.contains(key), "--help does not mention {key}");
    }
    // The example in the help is itself a valid script.
    let example = &help[help.find("# --- example ---").expect("example")..];
    fcgi_mock::Script::from_toml_str(example).expect("example parses");
}

#[test]
fn check_names_the_line_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nmax_conns = 2\n\n[[rule]]\nstatus = \"teapot\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("--check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!("{}:5:10: ", bad.display())),
        "error does not name line 5: {err}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[default]\nstatus = 204\n").unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Serving a bad script fails the same way.
    let out = Command::new(BIN)
        .arg("--script")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:5:"));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn serves_announces_the_port_and_writes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.toml");
    std::fs::write(
        &script,
        "[default]\nstatus = 200\nbody = [{ data = \"from the binary\" }]\n",
    )
    .unwrap();
    let journal = dir.path().join("journal.jsonl");
    let mut child = tokio::process::Command::new(BIN)
        .arg("--script")
        .arg(&script)
        .args(["--listen", "127.0.0.1:0", "--journal"])
        .arg(&journal)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("listening line", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(
        !addr.ends_with(":0"),
        "the real port must be printed: {addr}"
    );

    let mut c = Client::connect(&addr).await;
    c.request(
        1,
        KEEP_CONN,
        &[("SCRIPT_NAME", "/x"), ("A", "1"), ("A", "2")],
        b"in",
    )
    .await;
    let r = c.response(1).await;
    assert!(
        r.stdout_text().ends_with("\r\n\r\nfrom the binary"),
        "{r:?}"
    );

    // SIGTERM by PID: the mock closes the kept connection and exits 0.
    let pid = i32::try_from(child.id().expect("pid")).expect("pid in range");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let status = within("exit", child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    c.wait_closed().await.expect("closed at shutdown");

    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        vec!["connection_open", "request", "connection_close"]
    );
    let req = &lines[1];
    assert_eq!(
        req["params"],
        serde_json::json!([["SCRIPT_NAME", "/x"], ["A", "1"], ["A", "2"]])
    );
    assert_eq!(req["keep_conn"], true);
    assert_eq!(req["stdin"], "in");
    assert_eq!(req["stdin_records"], serde_json::json!([2, 0]));
    assert_eq!(req["outcome"], "complete");
    assert_eq!(req["rule"], "default");
    assert_eq!(lines[2]["closed_by"], "backend");
    assert_eq!(lines[2]["reason"], "shutdown");
}
