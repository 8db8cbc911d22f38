//! A Debian-shaped site end to end: `fcgi-proxy --apache apache2.conf --listen … -D …` on a
//! copy of `config_fixtures/site/`, in front of the echo mock standing in for php-fpm. Virtual
//! hosts are chosen by Host, `.php` files go to the handler with Apache's params, ProxyPass
//! keeps precedence, `Require all denied` is a 403 (a `<Location>`'s `Require ip` for a ProxyPass
//! route too), a directory without its slash is a 301.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use fcgi_mock::{MockHandle, MockServer, RequestEntry, Script};
use support::{HttpResponse, Proc, RawRequest};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

struct Site {
    _served: Served,
    root: String,
    front: SocketAddr,
    mock: MockHandle,
}

/// Where the proxy is told to make its filesystem lookups (`--filesystem-lookups`): every
/// test of the site runs with both, so each way of mapping a request is held to the same
/// answers.
const LOOKUPS: [&str; 3] = ["auto", "pool", "serving-thread"];

async fn start(lookups: &str) -> Site {
    let mock = MockServer::bind_tcp("127.0.0.1:0", Script::default())
        .await
        .expect("mock");
    let port = mock.socket_addr().expect("tcp").port();
    let served = start_site(port, "<?php\n", lookups).await;
    let expected = match lookups {
        "pool" => "pool",
        "serving-thread" => "serving-threads",
        // The mount table decides, as the proxy reads it.
        _ => match fcgi_proxy::mounts::first_not_local(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        ) {
            None => "serving-threads",
            Some(_) => "pool",
        },
    };
    let status = support::exchange(
        served.admin,
        &RawRequest::whole("GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await
    .expect("/status");
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("JSON");
    assert_eq!(
        status["filesystem_lookups"]["place"], expected,
        "--filesystem-lookups {lookups}: {status}"
    );
    Site {
        root: served.root.clone(),
        front: served.front,
        _served: served,
        mock,
    }
}

/// A running site: its files, its front and admin addresses, the proxy.
struct Served {
    _dir: tempfile::TempDir,
    root: String,
    front: SocketAddr,
    admin: SocketAddr,
    _proxy: Proc,
}

/// The fixture site in a temp dir, its `.php` files holding `php`, served by `fcgi-proxy` with
/// its PHP backend on `php_port`, its filesystem lookups where `lookups` says.
async fn start_site(php_port: u16, php: &str, lookups: &str) -> Served {
    let port = php_port;
    let dir = tempfile::tempdir().unwrap();
    support::open_up_dir(dir.path());
    let conf_dir = dir.path().join("apache2");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_fixtures/site"),
        &conf_dir,
    );
    let root = dir.path().join("www");
    for f in [
        "blog/index.php",
        "blog/sub/index.php",
        "blog/.htaccess",
        "default/index.php",
        "shared/s.php",
        "blog/files/a.txt",
        "blog/nolinks/real.txt",
        "blog/empty/.keep",
        "secret.txt",
        "blog/hostonly/h.txt",
    ] {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, php).unwrap();
    }
    std::fs::write(root.join("blog/files/a.txt"), "0123456789").unwrap();
    // Larger than what is read whole when opened: streamed.
    std::fs::write(root.join("blog/files/big.bin"), big_file()).unwrap();
    // A FIFO: opening it would wait for a writer.
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("blog/files/pipe.txt"))
        .status()
        .expect("mkfifo (coreutils)");
    assert!(fifo.success());
    // Links: to a file of the site, and out of every root.
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    link("a.txt", "blog/files/in.txt");
    link("../../secret.txt", "blog/files/out.txt");
    link("real.txt", "blog/nolinks/in.txt");
    let front: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let mut cmd = std::process::Command::new(support::proxy_bin());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--apache")
        .arg(conf_dir.join("apache2.conf"))
        .arg("--listen")
        .arg(front.to_string())
        .arg("-D")
        .arg(format!("SITE_ROOT={}", root.display()))
        .arg("--define")
        .arg(format!("PHP_PORT={port}"))
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--filesystem-lookups")
        .arg(lookups);
    let log = dir.path().join("proxy.log");
    let mut proxy = Proc::spawn_capturing_stdout("fcgi-proxy", cmd, &log);
    let root = root.display().to_string();
    let proxy = tokio::task::spawn_blocking(move || {
        proxy
            .wait_ready(front, Some("listening on"))
            .map(|()| proxy)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    Served {
        _dir: dir,
        root,
        front,
        admin,
        _proxy: proxy,
    }
}

impl Site {
    /// `GET target` with `Host: host`, marked so the backend request can be found.
    async fn get(&self, host: &str, target: &str) -> (HttpResponse, Option<RequestEntry>) {
        self.request(host, &format!("GET {target}"), "").await
    }

    /// `line` (method and target) with `Host: host` and `extra` header lines.
    async fn request(
        &self,
        host: &str,
        line: &str,
        extra: &str,
    ) -> (HttpResponse, Option<RequestEntry>) {
        let target = line.split_once(' ').map_or(line, |(_, t)| t);
        let req = RawRequest::whole(format!(
            "{line} HTTP/1.1\r\nHost: {host}\r\nX-Case: {host}{target}\r\n{extra}Connection: close\r\n\r\n"
        ));
        let resp = support::exchange(self.front, &req)
            .await
            .unwrap_or_else(|e| panic!("{host}{target}: {e}"));
        let mark = format!("{host}{target}");
        let entry = self
            .mock
            .journal()
            .requests()
            .into_iter()
            .find(|r| r.param("HTTP_X_CASE").as_deref() == Some(mark.as_str()));
        (resp, entry)
    }
}

fn param(e: &Option<RequestEntry>, name: &str) -> Option<String> {
    e.as_ref().expect("the backend got the request").param(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_handler_and_proxypass() {
    for lookups in LOOKUPS {
        virtual_hosts_handler_and_proxypass_with(lookups).await;
    }
}

async fn virtual_hosts_handler_and_proxypass_with(lookups: &str) {
    let s = start(lookups).await;
    let port = s.mock.socket_addr().unwrap().port();
    let root = &s.root;

    let (r, e) = s.get("blog.example", "/index.php/p?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        param(&e, "SCRIPT_FILENAME").unwrap(),
        format!("proxy:fcgi://127.0.0.1:{port}{root}/blog/index.php")
    );
    assert_eq!(param(&e, "DOCUMENT_ROOT").unwrap(), format!("{root}/blog"));
    assert_eq!(param(&e, "SCRIPT_NAME").unwrap(), "/index.php");
    assert_eq!(param(&e, "PATH_INFO").unwrap(), "/p");
    assert_eq!(param(&e, "QUERY_STRING").unwrap(), "x=1");
    assert_eq!(param(&e, "SERVER_NAME").unwrap(), "blog.example");
    assert_eq!(
        param(&e, "proxy-nokeepalive").as_deref(),
        Some("1"),
        "no worker is defined for the handler's URL"
    );
    assert!(
        e.unwrap().keep_conn,
        "connections are reused by default (Apache's default worker would not)"
    );

    // ServerAlias *.blog.example; any other name: the first virtual host.
    let (_, e) = s.get("www.blog.example", "/index.php").await;
    assert_eq!(param(&e, "DOCUMENT_ROOT").unwrap(), format!("{root}/blog"));
    let (r, e) = s.get("other.example", "/index.php").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        param(&e, "DOCUMENT_ROOT").unwrap(),
        format!("{root}/default")
    );

    // ProxyPass first, in its own virtual host only.
    let (r, e) = s.get("blog.example", "/api/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        param(&e, "SCRIPT_FILENAME").unwrap(),
        format!("proxy:fcgi://127.0.0.1:{port}/api/v1")
    );
    let (r, e) = s.get("other.example", "/api/v1").await;
    assert_eq!((r.status, e.is_some()), (404, false));
    // A <Location> restricts what a ProxyPass route takes too (<Directory /> does not).
    let (r, e) = s.get("blog.example", "/api/private/x").await;
    assert_eq!((r.status, e.is_some()), (403, false));
    // A host-name rule asks the resolver, which is never done on a serving thread: such a
    // request is decided again in the blocking pool. (127.0.0.1 is localhost both ways.)
    let (r, e) = s.get("blog.example", "/api/byname/x").await;
    assert_eq!((r.status, e.is_some()), (200, true), "{lookups}");
    let (r, _) = s.get("blog.example", "/hostonly/h.txt").await;
    assert_eq!(r.status, 200, "{lookups}");

    // DirectoryIndex, DirectorySlash, Alias.
    let (r, e) = s.get("blog.example", "/sub/").await;
    assert_eq!(r.status, 200);
    assert_eq!(param(&e, "SCRIPT_NAME").unwrap(), "/sub/index.php");
    assert_eq!(param(&e, "REQUEST_URI").unwrap(), "/sub/");
    let (r, e) = s.get("blog.example", "/sub?q=1").await;
    assert_eq!((r.status, e.is_some()), (301, false));
    assert_eq!(r.header("location"), Some("http://blog.example/sub/?q=1"));
    let (r, e) = s.get("blog.example", "/static/s.php").await;
    assert_eq!(r.status, 200);
    assert_eq!(param(&e, "CONTEXT_PREFIX").unwrap(), "/static/");
    assert_eq!(
        param(&e, "SCRIPT_FILENAME").unwrap(),
        format!("proxy:fcgi://127.0.0.1:{port}{root}/shared/s.php")
    );

    // Require all denied, and nothing at all.
    for target in ["/.htaccess", "/x.phps"] {
        let (r, e) = s.get("blog.example", target).await;
        assert_eq!((r.status, e.is_some()), (403, false), "{target}");
    }
    let (r, e) = s.get("blog.example", "/nothing/here").await;
    assert_eq!((r.status, e.is_some()), (404, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_of_the_site() {
    for lookups in LOOKUPS {
        static_files_of_the_site_with(lookups).await;
    }
}

async fn static_files_of_the_site_with(lookups: &str) {
    let s = start(lookups).await;
    let host = "blog.example";
    let (r, e) = s.get(host, "/files/a.txt").await;
    assert_eq!((r.status, e.is_some()), (200, false));
    assert_eq!(r.body, b"0123456789");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let etag = r.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with("\"a-") && etag.ends_with('"'),
        "Apache's \"<size>-<mtime>\" in hex: {etag}"
    );
    assert!(r.header("last-modified").is_some());
    let (r, _) = s
        .request(
            host,
            "GET /files/a.txt",
            &format!("If-None-Match: {etag}\r\n"),
        )
        .await;
    assert_eq!(r.status, 304);
    let (r, _) = s
        .request(host, "GET /files/a.txt", "If-None-Match: \"other\"\r\n")
        .await;
    assert_eq!(r.status, 200);
    let (r, _) = s
        .request(host, "GET /files/a.txt", "Range: bytes=2-4\r\n")
        .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
    // Ranges that cannot be served as one part: several (the whole file, as RFC 9110 allows),
    // one that does not parse (ignored, as Apache does), one past the end (416).
    for range in ["bytes=0-1,4-5", "pages=1", "bytes=x"] {
        let (r, _) = s
            .request(host, "GET /files/a.txt", &format!("Range: {range}\r\n"))
            .await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"0123456789"[..]),
            "{range}"
        );
    }
    let (r, _) = s
        .request(host, "GET /files/a.txt", "Range: bytes=10-\r\n")
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    // Conditions: If-Range gives the range only while the file is the one the client names;
    // If-Modified-Since with the file's own date is 304, unless an If-None-Match names another
    // version (it decides alone); If-Unmodified-Since before that date is 412.
    let (r, _) = s.get(host, "/files/a.txt").await;
    let modified = r.header("last-modified").expect("Last-Modified").to_owned();
    let cases = [
        (format!("Range: bytes=2-4\r\nIf-Range: {etag}\r\n"), 206, 3),
        (
            "Range: bytes=2-4\r\nIf-Range: \"old\"\r\n".to_owned(),
            200,
            10,
        ),
        (format!("If-Modified-Since: {modified}\r\n"), 304, 0),
        (
            format!("If-Modified-Since: {modified}\r\nIf-None-Match: \"other\"\r\n"),
            200,
            10,
        ),
        (
            "If-Unmodified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n".to_owned(),
            412,
            0,
        ),
    ];
    for (extra, status, len) in cases {
        let (r, _) = s.request(host, "GET /files/a.txt", &extra).await;
        assert_eq!((r.status, r.body.len()), (status, len), "{extra}");
    }
    let (r, _) = s.request(host, "HEAD /files/a.txt", "").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
    let (r, _) = s
        .request(host, "PUT /files/a.txt", "Content-Length: 0\r\n")
        .await;
    assert_eq!(r.status, 405);

    // Not a regular file: not found, and no thread left waiting on it.
    let (r, _) = s.get(host, "/files/pipe.txt").await;
    assert_eq!(r.status, 404);

    // A file streamed rather than read whole: all of it, and a range across its chunks.
    let big = big_file();
    let (r, _) = s.get(host, "/files/big.bin").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(
        r.body == big,
        "the whole file, {} bytes of {}",
        r.body.len(),
        big.len()
    );
    let (r, _) = s
        .request(host, "GET /files/big.bin", "Range: bytes=1000-700000\r\n")
        .await;
    assert_eq!(r.status, 206);
    assert!(r.body == big[1000..=700_000], "{} bytes", r.body.len());

    // Symbolic links: inside the site, followed; out of every root, refused; under
    // Options -FollowSymLinks, refused.
    let (r, _) = s.get(host, "/files/in.txt").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
    let (r, _) = s.get(host, "/files/out.txt").await;
    assert_eq!(r.status, 403);
    let (r, _) = s.get(host, "/nolinks/real.txt").await;
    assert_eq!(r.status, 200);
    let (r, _) = s.get(host, "/nolinks/in.txt").await;
    assert_eq!(r.status, 403);
    // Never above the DocumentRoot, encoded or not; no directory listings.
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/files/%2E%2E/%2e%2e/secret.txt",
    ] {
        let (r, _) = s.get(host, target).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{target}: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(!r.body.starts_with(b"<?php"), "{target}");
    }
    let (r, _) = s.get(host, "/empty/").await;
    assert_eq!(r.status, 403);
}

const FPM_TEMPLATE: &str = include_str!("fixtures/php-fpm.conf.in");
const TEST_PHP: &str = include_str!("fixtures/php/sub/test.php");

/// Real php-fpm behind the Debian-shaped site: what PHP's `$_SERVER` gets in handler mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_site_through_php_fpm() {
    let Some(fpm) = programs::require_program("php-fpm8.2", "php8.2-fpm") else {
        return;
    };
    let fpm_dir = tempfile::tempdir().unwrap();
    support::open_up_dir(fpm_dir.path());
    let fpm_port = support::free_port();
    let conf = fpm_dir.path().join("php-fpm.conf");
    std::fs::write(
        &conf,
        support::fill_template(
            FPM_TEMPLATE,
            &[
                ("DIR", fpm_dir.path().display().to_string()),
                ("FPM_PORT", fpm_port.to_string()),
            ],
        ),
    )
    .unwrap();
    let fpm_addr: SocketAddr = format!("127.0.0.1:{fpm_port}").parse().unwrap();
    let dir = fpm_dir.path().to_path_buf();
    let _fpm =
        tokio::task::spawn_blocking(move || support::start_php_fpm(&fpm, &conf, &dir, fpm_addr))
            .await
            .unwrap();
    let served = start_site(fpm_port, TEST_PHP, "auto").await;
    let (root, front) = (&served.root, served.front);
    let ask = |line: &str, extra: &str| {
        RawRequest::whole(format!(
            "{line} HTTP/1.1\r\nHost: blog.example\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    let json = |r: &HttpResponse| -> serde_json::Value {
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
    };
    let r = support::exchange(front, &ask("GET /index.php/foo/bar?q=1", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json(&r);
    assert_eq!(v["SCRIPT_FILENAME"], format!("{root}/blog/index.php"));
    assert_eq!(v["SCRIPT_NAME"], "/index.php");
    assert_eq!(v["PATH_INFO"], "/foo/bar");
    assert_eq!(v["PHP_SELF"], "/index.php/foo/bar");
    assert_eq!(v["PATH_TRANSLATED"], format!("{root}/blog/foo/bar"));
    assert_eq!(v["GET"]["q"], "1");
    let r = support::exchange(
        front,
        &RawRequest::whole(
            "POST /sub/ HTTP/1.1\r\nHost: blog.example\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json(&r);
    assert_eq!(v["SCRIPT_NAME"], "/sub/index.php", "DirectoryIndex");
    assert_eq!(v["REQUEST_URI"], "/sub/");
    assert_eq!(v["POST"]["b"], "2");
    // A .php file that is not there goes to php-fpm (no <If -f>), which answers 404 itself.
    let r = support::exchange(front, &ask("GET /nope.php", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(!r.body.is_empty());
}

/// 800 KB that no two offsets' windows confuse.
fn big_file() -> Vec<u8> {
    (0..800_000u32)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}
