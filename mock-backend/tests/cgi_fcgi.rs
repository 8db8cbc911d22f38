//! Debian's `cgi-fcgi` (libfcgi-bin) as the web-server side: a second, independent FastCGI
//! client implementation.

mod common;

use std::process::Stdio;

use common::{T, mock};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn cgi_fcgi_gets_the_scripted_reply_and_the_journal_shows_its_params() {
    let Some(cgi_fcgi) = programs::require_program("cgi-fcgi", "libfcgi-bin") else {
        return;
    };
    let m = mock(
        r#"
        [[rule]]
        name = "hello"
        match = { script_name_prefix = "/hello" }
        status = 200
        headers = [["Content-Type", "text/plain"], ["X-Mock", "1"]]
        body = [{ data = "hello " }, { data = "from the mock" }]
        "#,
    )
    .await;
    let env = [
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/hello.php"),
        ("SCRIPT_FILENAME", "/srv/www/hello.php"),
        ("REQUEST_URI", "/hello.php?a=b"),
        ("QUERY_STRING", "a=b"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "5"),
    ];
    let mut child = tokio::process::Command::new(cgi_fcgi)
        .args(["-bind", "-connect", m.addr()])
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cgi-fcgi");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello").await.expect("write body");
    drop(stdin);
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("cgi-fcgi timed out")
        .expect("cgi-fcgi ran");
    assert!(
        out.status.success(),
        "cgi-fcgi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Status: 200 OK\r\nContent-Type: text/plain\r\nX-Mock: 1\r\n\r\nhello from the mock"
    );

    let req = m.journal().request(1).expect("request journaled");
    assert_eq!(req.rule.as_deref(), Some("hello"));
    assert_eq!(req.request_id, 1);
    assert_eq!(req.stdin_lossy(), "hello");
    // It sends its whole environment as params: exactly what we set.
    let mut got = req.params_lossy();
    got.sort();
    let mut want: Vec<(String, String)> = env
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(m.journal().connection_count(), 1);
}
