//! The `fcgi-conformance` program as a proxy project's CI runs it: from a directory outside
//! the repository, with its built-in scenarios, against a user's own nginx (`--target
//! external`) started from a short config with the stock `fastcgi_params`. The exit status
//! follows the levels: a MUST failure (httpoxy: nginx passes `Proxy:` on as HTTP_PROXY) fails
//! the run; with `fastcgi_param HTTP_PROXY ""` only a COMPAT check fails, which does not,
//! unless `--strict`. nginx is required through the `programs` crate.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use conformance::peers::{Signal, free_loopback_port, signal};

/// A user's nginx, stopped by its own PID when dropped.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(
        bin: &Path,
        dir: &Path,
        listen: SocketAddr,
        h2c: SocketAddr,
        backend: SocketAddr,
        extra: &str,
    ) -> Nginx {
        // The same server on a second port for HTTP/2 with prior knowledge (nginx 1.22 speaks
        // only h2c on a plain `http2` listener).
        let server = |listen: String| {
            format!(
                "  server {{ listen {listen}; root /var/www/html;\n    \
                 location / {{ include /etc/nginx/fastcgi_params; {extra}\n      \
                 fastcgi_pass {backend}; }}\n  }}\n"
            )
        };
        let conf = format!(
            "pid nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ access_log off;\n  \
             client_body_temp_path body; fastcgi_temp_path fastcgi;\n{}{}}}\n",
            server(listen.to_string()),
            server(format!("{h2c} http2")),
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .args(["-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        signal(self.child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `fcgi-conformance run --target external ...` from `cwd`, on four checks: two MUST
/// (httpoxy) and one COMPAT (Authorization withheld, as Apache does) that nginx fails, and
/// httpoxy over h2c, which runs only with `--h2c-url` in `extra`.
fn run(cwd: &Path, listen: SocketAddr, backend: SocketAddr, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fcgi-conformance"))
        .current_dir(cwd)
        .args(["run", "--target", "external", "--out", "report"])
        .arg("--url")
        .arg(format!("http://{listen}"))
        .arg("--backend")
        .arg(backend.to_string())
        .args(extra)
        .args([
            "cgi/proxy-header-dropped",
            "security/s1-httpoxy-any-case",
            "cgi/authorization-not-passed",
            "security/h2-httpoxy",
        ])
        .output()
        .expect("run fcgi-conformance")
}

/// Three free loopback addresses: HTTP/1.1, h2c, the backend.
fn addrs() -> (SocketAddr, SocketAddr, SocketAddr) {
    (
        free_loopback_port().unwrap(),
        free_loopback_port().unwrap(),
        free_loopback_port().unwrap(),
    )
}

#[test]
fn the_exit_status_follows_the_levels_against_a_users_nginx() {
    let Some(nginx) = programs::require_program("nginx", "nginx") else {
        return;
    };
    if !programs::require_file(Path::new("/etc/nginx/fastcgi_params"), "nginx-common") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path().join("ci");
    std::fs::create_dir_all(&cwd).unwrap();
    let text = |o: &Output| {
        format!(
            "status {:?}\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // The stock fastcgi_params: Proxy: becomes HTTP_PROXY, a MUST failure. Without --h2c-url
    // the h2c check is SKIP (nginx's HTTP/1.1 port would not speak it); with it, it fails too.
    let (listen, h2c, backend) = addrs();
    let ng = dir.path().join("stock");
    std::fs::create_dir_all(&ng).unwrap();
    let stock = Nginx::start(&nginx, &ng, listen, h2c, backend, "");
    let h2c_url = format!("http://{h2c}");
    let with_h2c = run(&cwd, listen, backend, &["--h2c-url", &h2c_url]);
    // Last, so that its junit.xml is the one read below.
    let o = run(&cwd, listen, backend, &[]);
    drop(stock);
    let out = text(&with_h2c);
    assert_eq!(with_h2c.status.code(), Some(1), "{out}");
    assert!(out.contains("verdict: FAIL (3 failed: 3 MUST)"), "{out}");
    assert!(
        // Failed on what nginx sent over h2c, not for lack of an answer.
        out.contains("MUST FAIL security/h2-httpoxy on external: c1.1: param HTTP_PROXY="),
        "{out}"
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("verdict: FAIL (2 failed: 2 MUST)"), "{out}");
    assert!(
        out.contains("HTTP_PROXY=\"http://attacker.example:8080\" present"),
        "{out}"
    );
    let junit = std::fs::read_to_string(cwd.join("report/junit.xml")).expect("junit.xml");
    assert!(
        junit.contains("give --h2c-url"),
        "the SKIP says why: {junit}"
    );
    assert!(
        junit.contains(
            "<testsuite name=\"external: MUST\" tests=\"3\" failures=\"2\" skipped=\"1\""
        ),
        "{junit}"
    );
    assert!(
        junit.contains(
            "<testsuite name=\"external: COMPAT\" tests=\"1\" failures=\"0\" skipped=\"1\">"
        ),
        "{junit}"
    );

    // httpoxy fixed: only the COMPAT check fails, which passes the run unless --strict.
    let (listen, h2c, backend) = addrs();
    let ng = dir.path().join("fixed");
    std::fs::create_dir_all(&ng).unwrap();
    let fixed = Nginx::start(
        &nginx,
        &ng,
        listen,
        h2c,
        backend,
        "fastcgi_param HTTP_PROXY \"\";",
    );
    let h2c_url = format!("http://{h2c}");
    let lax = run(&cwd, listen, backend, &["--h2c-url", &h2c_url]);
    let strict = run(&cwd, listen, backend, &["--h2c-url", &h2c_url, "--strict"]);
    drop(fixed);
    let out = text(&lax);
    assert_eq!(lax.status.code(), Some(0), "{out}");
    assert!(
        out.contains("verdict: PASS (no MUST or SHOULD check failed); not counted: 1 COMPAT"),
        "{out}"
    );
    let out = text(&strict);
    assert_eq!(strict.status.code(), Some(1), "{out}");
    assert!(out.contains("verdict: FAIL (1 failed: 1 COMPAT)"), "{out}");
}
