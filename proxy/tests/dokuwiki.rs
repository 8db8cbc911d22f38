//! Acceptance: Debian's `dokuwiki` package served by `fcgi-proxy --apache` from a copy of this
//! machine's `/etc/apache2` with the `php8.2-fpm` and `dokuwiki` confs and the `proxy_fcgi` and
//! `setenvif` modules enabled (symbolic links in the copy, as `a2enconf`/`a2enmod` make them).
//! The PHP side is php-fpm 8.2 started by the test from Debian's own pool file, adjusted: a
//! socket in a temp dir, run as the current user; the system's php-fpm is not touched. The wiki
//! code is Debian's `/usr/share/dokuwiki` as installed; its configuration (`DOKU_CONF`, set by
//! the pool's `auto_prepend_file`) and data are temp copies, never `/var/lib/dokuwiki`.
//!
//! - `wiki_works_through_the_proxy`: a page is shown, a user made by the test logs in, edits a
//!   page with the form's `sectok` and sees the change (an edit with a wrong token changes
//!   nothing); headless Chromium loads the page and every request it makes is answered 2xx or
//!   304 (the proxy's access log); its screenshot is kept as `target/tmp/dokuwiki.png`.
//! - `crawl_matches_apache`: real Apache on the same configuration tree and the proxy answer
//!   every URL reached from the start page and a list of probes (`inc/`, `bin/`, `.htaccess`,
//!   `VERSION`, `.git`, encoded variants) with the same status class and, for static files, the
//!   same body; nothing Apache refuses is served.
//!
//! Both also run the wiki from a ten-line TOML `[[site]]` (`toml_site`) instead of the Apache
//! tree: the same session works, and the crawl gives Apache's status classes (but for Debian's
//! multi-site `AliasMatch ^/dokuwiki/sites/…`, which the TOML does not repeat).
//!
//! Each test fails (rather than skip) when a program is missing and `FCGI_REQUIRE`/`CI` says so.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{HttpResponse, Proc, RawRequest};

const USER: &str = "tester";
const PASSWORD: &str = "s3cret-pass";
/// `php -r 'echo password_hash("s3cret-pass", PASSWORD_BCRYPT);'`
const PASSWORD_HASH: &str = "$2y$10$t7e3B7V7MSLFbPFhbi9yjuWZ7c9CPNQ.wCWcyFg9pQUEufSG2MhNi";
/// Socket path of Debian's pool and `php8.2-fpm.conf`.
const DEBIAN_SOCKET: &str = "/run/php/php8.2-fpm.sock";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The programs and files the tests need; `None` (after saying why) when one is missing.
fn need_wiki() -> Option<(PathBuf, PathBuf)> {
    let fpm = programs::require_program("php-fpm8.2", "php8.2-fpm")?;
    let apache = programs::require_program("apache2", "apache2")?;
    for f in ["/usr/share/dokuwiki/doku.php", "/etc/dokuwiki/apache.conf"] {
        if !programs::require_file(Path::new(f), "dokuwiki") {
            return None;
        }
    }
    Some((fpm, apache))
}

/// A temp DokuWiki site: the Apache tree copy, the wiki's configuration and data, php-fpm.
struct Wiki {
    dir: tempfile::TempDir,
    apache_conf: PathBuf,
    _fpm: Proc,
}

impl Wiki {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `a2enconf`/`a2enmod` in the copy: `<kind>-enabled/<name>` -> `../<kind>-available/<name>`.
fn enable(tree: &Path, kind: &str, name: &str) {
    let available = tree.join(format!("{kind}-available/{name}"));
    if !available.exists() {
        return;
    }
    let link = tree.join(format!("{kind}-enabled/{name}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../{kind}-available/{name}"), &link).unwrap();
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    // Replace a link of the copy rather than write through it.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn setup(fpm_bin: &Path, apache_port: u16) -> Wiki {
    let dir = tempfile::Builder::new()
        .prefix("dokuwiki-test-")
        .tempdir()
        .unwrap();
    // Apache's children (www-data when run as root) reach the socket through it.
    support::open_up_dir(dir.path());
    let t = dir.path().to_path_buf();
    let sock = t.join("php.sock");

    // The Apache tree.
    let tree = t.join("apache2");
    support::copy_tree(Path::new("/etc/apache2"), &tree);
    // The copy's logs (CustomLog, ErrorLog) go to the test's directory, not /var/log/apache2.
    let envvars = tree.join("envvars");
    let vars = std::fs::read_to_string(&envvars).unwrap();
    let log_dir = t.join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let vars: String = vars
        .lines()
        .map(|l| {
            if l.starts_with("export APACHE_LOG_DIR=") {
                format!("export APACHE_LOG_DIR={}\n", log_dir.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(vars.contains(&log_dir.display().to_string()), "{vars}");
    std::fs::write(&envvars, vars).unwrap();
    enable(&tree, "conf", "php8.2-fpm.conf");
    enable(&tree, "conf", "dokuwiki.conf");
    for m in [
        "proxy.load",
        "proxy.conf",
        "proxy_fcgi.load",
        "setenvif.load",
        "setenvif.conf",
    ] {
        enable(&tree, "mods", m);
    }
    let fpm_conf = tree.join("conf-available/php8.2-fpm.conf");
    let text = std::fs::read_to_string(&fpm_conf).unwrap();
    assert!(
        text.contains(DEBIAN_SOCKET),
        "{}: {text}",
        fpm_conf.display()
    );
    write(
        &fpm_conf,
        &text.replace(DEBIAN_SOCKET, &sock.display().to_string()),
    );
    // Apache's own listener (the proxy is given --listen).
    write(
        &tree.join("ports.conf"),
        &format!("Listen 127.0.0.1:{apache_port}\n"),
    );
    for d in ["run", "lock", "log"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }

    // The wiki's configuration and data.
    let conf = t.join("conf");
    write(
        &conf.join("local.php"),
        &format!(
            "<?php\n$conf['title'] = 'Test DokuWiki';\n$conf['useacl'] = 1;\n\
             $conf['superuser'] = '@admin';\n$conf['savedir'] = '{}';\n",
            t.join("data").display()
        ),
    );
    write(&conf.join("acl.auth.php"), "*  @ALL  1\n*  @user  8\n");
    write(
        &conf.join("users.auth.php"),
        &format!("{USER}:{PASSWORD_HASH}:Test User:tester@example.com:admin,user\n"),
    );
    write(
        &conf.join("plugins.local.php"),
        "<?php\n$plugins['testing'] = 0;\n",
    );
    for d in [
        "pages",
        "attic",
        "meta",
        "media",
        "media_attic",
        "media_meta",
        "cache",
        "index",
        "locks",
        "tmp",
        "log",
    ] {
        std::fs::create_dir_all(t.join("data").join(d)).unwrap();
    }
    write(
        &t.join("data/pages/start.txt"),
        "====== Start ======\n\nHello from the test.\n\n[[wiki:other|Another page]]\n",
    );
    write(
        &t.join("data/pages/wiki/other.txt"),
        "====== Other ======\n\nBack to [[start]].\n",
    );
    write(
        &t.join("prepend.php"),
        &format!(
            "<?php\nif (!defined('DOKU_CONF')) define('DOKU_CONF', '{}/');\n",
            conf.display()
        ),
    );

    // php-fpm: Debian's pool with its socket, user and group replaced.
    let pool = std::fs::read_to_string("/etc/php/8.2/fpm/pool.d/www.conf")
        .expect("Debian's php-fpm pool (php8.2-fpm)");
    let mut fpm = format!(
        "[global]\npid = {0}/php-fpm.pid\nerror_log = {0}/php-fpm.log\ndaemonize = no\n",
        t.display()
    );
    for line in pool.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if line.trim_start().starts_with(';')
            || matches!(key, "user" | "group")
            || key.starts_with("listen")
        {
            continue;
        }
        fpm.push_str(line);
        fpm.push('\n');
    }
    fpm.push_str(&format!(
        "listen = {}\nlisten.mode = 0666\nphp_admin_value[auto_prepend_file] = {}\n",
        sock.display(),
        t.join("prepend.php").display()
    ));
    write(&t.join("php-fpm.conf"), &fpm);
    let mut cmd = Command::new(fpm_bin);
    cmd.args(["-F", "-y"]).arg(t.join("php-fpm.conf"));
    if support::running_as_root() {
        cmd.arg("-R");
    }
    let mut fpm = Proc::spawn("php-fpm", cmd, &t.join("php-fpm.out"));
    let deadline = Instant::now() + START_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if let Some(st) = fpm.exited() {
            panic!("php-fpm exited ({st})\n{}", fpm.output());
        }
        assert!(
            Instant::now() < deadline,
            "php-fpm does not listen\n{}",
            fpm.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Wiki {
        apache_conf: tree.join("apache2.conf"),
        dir,
        _fpm: fpm,
    }
}

/// The wiki as a TOML site: what Debian's Apache configuration and DokuWiki's `.htaccess` files
/// say, in ten lines.
fn toml_site(wiki: &Wiki) -> PathBuf {
    let path = wiki.path().join("site.toml");
    write(
        &path,
        &format!(
            r#"listen = ["127.0.0.1:0"]

[[site]]
prefix = "/dokuwiki"
root = "/usr/share/dokuwiki"
index = ["index.html", "index.php"]
php = "unix:{}"
deny = ["/inc/", "/bin/", "/vendor/", "/data/", "/conf/", "/.git", ".ht*", "README", "VERSION", "COPYING"]
allow = ["127.0.0.1", "::1"]
"#,
            wiki.path().join("php.sock").display()
        ),
    );
    path
}

/// `fcgi-proxy` with `args`, listening on 127.0.0.1:0: the process and the address it says.
fn start_proxy(args: &[&std::ffi::OsStr], log: &Path) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(support::proxy_bin());
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .args(args)
        .args(["--listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn_capturing_stdout("fcgi-proxy", cmd, log);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(addr) = p
            .stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix("listening on ")?.trim().parse().ok())
        {
            return (p, addr);
        }
        if let Some(st) = p.exited() {
            panic!("fcgi-proxy exited ({st})\n{}", p.output());
        }
        assert!(
            Instant::now() < deadline,
            "fcgi-proxy does not listen\n{}",
            p.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A browser-like client: cookies kept by name.
#[derive(Default)]
struct Client {
    cookies: BTreeMap<String, String>,
}

impl Client {
    async fn request(
        &mut self,
        front: SocketAddr,
        method: &str,
        target: &str,
        body: Option<&str>,
    ) -> HttpResponse {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: dokuwiki-test\r\n\
             Connection: close\r\n",
            front.port()
        );
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body.unwrap_or(""));
        let resp = support::exchange(front, &RawRequest::whole(head))
            .await
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        for (k, v) in &resp.headers {
            if k.eq_ignore_ascii_case("set-cookie")
                && let Some((name, rest)) = v.split_once('=')
            {
                let value = rest.split(';').next().unwrap_or("").to_owned();
                if value == "deleted" || value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_owned(), value);
                }
            }
        }
        resp
    }
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `application/x-www-form-urlencoded` of `fields`.
fn form(fields: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut o = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                o.push(char::from(b));
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn unescape_html(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#039;", "'")
}

/// The hidden and text inputs of the form with `id` in `html` (name, value).
fn form_fields(html: &str, id: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!("<form id=\"{id}\""))
        .unwrap_or_else(|| panic!("no form {id} in:\n{html}"));
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let f = &html[start..end];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let re = regex::Regex::new(&format!(r#"\s{name}="([^"]*)""#)).unwrap();
        re.captures(tag).map(|c| unescape_html(&c[1]))
    };
    let input = regex::Regex::new(r"<input[^>]*>").unwrap();
    let mut out = Vec::new();
    for m in input.find_iter(f) {
        let tag = m.as_str();
        if attr(tag, "type").is_some_and(|t| t == "checkbox" || t == "submit") {
            continue;
        }
        if let Some(name) = attr(tag, "name") {
            out.push((name, attr(tag, "value").unwrap_or_default()));
        }
    }
    out
}

fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(k, _)| k == name) {
        Some(f) => f.1 = value.to_owned(),
        None => fields.push((name.to_owned(), value.to_owned())),
    }
}

/// Show, log in, edit page `id` with the form's token, see the change.
async fn use_the_wiki(front: SocketAddr, label: &str, id: &str) {
    let mut c = Client::default();
    let page = c
        .request(front, "GET", "/dokuwiki/doku.php?id=start", None)
        .await;
    assert_eq!(page.status, 200, "{label}: {}", text(&page));
    assert!(
        text(&page).contains("Another page"),
        "{label}: {}",
        text(&page)
    );

    // Log in (the login form's sectok is empty before a session has a user).
    let login = c
        .request(front, "GET", "/dokuwiki/doku.php?id=start&do=login", None)
        .await;
    let mut fields = form_fields(&text(&login), "dw__login");
    set(&mut fields, "u", USER);
    set(&mut fields, "p", PASSWORD);
    let r = c
        .request(
            front,
            "POST",
            "/dokuwiki/doku.php?id=start",
            Some(&form(&fields)),
        )
        .await;
    assert_eq!(r.status, 302, "{label}: login: {}", text(&r));
    let page = c
        .request(front, "GET", "/dokuwiki/doku.php?id=start", None)
        .await;
    assert!(
        text(&page).contains("Log Out") && text(&page).contains("Test User"),
        "{label}: not logged in: {}",
        text(&page)
    );

    // Edit: a wrong token is refused, the form's own is accepted.
    let marker = format!("Changed through {label}");
    let edit = c
        .request(
            front,
            "GET",
            &format!("/dokuwiki/doku.php?id={id}&do=edit"),
            None,
        )
        .await;
    assert_eq!(edit.status, 200, "{label}");
    let mut fields = form_fields(&text(&edit), "dw__editform");
    assert!(
        fields.iter().any(|(k, v)| k == "sectok" && v.len() == 32),
        "{label}: {fields:?}"
    );
    set(
        &mut fields,
        "wikitext",
        &format!("====== Edited ======\n\n{marker}\n"),
    );
    set(&mut fields, "summary", "test edit");
    set(&mut fields, "do[save]", "1");
    let mut forged = fields.clone();
    set(&mut forged, "sectok", "0123456789abcdef0123456789abcdef");
    c.request(front, "POST", "/dokuwiki/doku.php", Some(&form(&forged)))
        .await;
    let page = c
        .request(front, "GET", &format!("/dokuwiki/doku.php?id={id}"), None)
        .await;
    assert!(
        !text(&page).contains(&marker),
        "{label}: saved without the security token"
    );
    let r = c
        .request(front, "POST", "/dokuwiki/doku.php", Some(&form(&fields)))
        .await;
    assert!(
        r.status == 302 || r.status == 200,
        "{label}: save: {} {}",
        r.status,
        text(&r)
    );
    let page = c
        .request(front, "GET", &format!("/dokuwiki/doku.php?id={id}"), None)
        .await;
    assert!(
        text(&page).contains(&marker),
        "{label}: the change is not shown: {}",
        text(&page)
    );
}

/// `(method target, status)` of each access log line: the proxy's own lines in its output
/// `log`, and the Apache-style lines (`"GET /x HTTP/1.1" 200`) of the files in `log_dir`, where
/// the configuration's `CustomLog` writes.
fn access_lines(log: &Path, log_dir: &Path) -> Vec<(String, u16)> {
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    for e in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    let own = regex::Regex::new(r#"access: \S+ "([^"]*)" (\d{3})"#).unwrap();
    let apache = regex::Regex::new(r#""(\S+ \S+) HTTP/[0-9.]+" (\d{3}) "#).unwrap();
    text.lines()
        .filter_map(|l| {
            let c = own.captures(l).or_else(|| apache.captures(l))?;
            Some((c[1].to_owned(), c[2].parse().ok()?))
        })
        .collect()
}

/// Headless Chromium loads `url`; a screenshot goes to `shot`.
fn browse(chromium: &Path, profile: &Path, url: &str, shot: &Path) {
    let _ = std::fs::remove_file(shot);
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--screenshot={}", shot.display()))
    .arg(url);
    let log = profile.with_extension("log");
    let mut p = Proc::spawn("chromium", cmd, &log);
    match p.wait_exit(BROWSER_TIMEOUT) {
        Some(st) => assert!(st.success(), "chromium: {st}\n{}", p.output()),
        None => panic!(
            "chromium did not finish within {BROWSER_TIMEOUT:?}\n{}",
            p.output()
        ),
    }
    let png = std::fs::read(shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot\n{}",
        p.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiki_works_through_the_proxy() {
    let Some((fpm_bin, _)) = need_wiki() else {
        return;
    };
    let Some(chromium) = programs::require_program("chromium", "chromium") else {
        return;
    };
    let wiki = tokio::task::spawn_blocking(move || setup(&fpm_bin, support::free_port()))
        .await
        .unwrap();
    let log = wiki.path().join("proxy.log");
    let conf = wiki.apache_conf.clone();
    let (log2, conf2) = (log.clone(), conf.clone());
    let (proxy, front) = tokio::task::spawn_blocking(move || {
        start_proxy(&["--apache".as_ref(), conf2.as_os_str()], &log2)
    })
    .await
    .unwrap();

    use_the_wiki(front, "the Apache configuration", "apache").await;

    // The browser: every request it makes is answered 2xx or 304. (Each access log line is
    // written as its response ends: let the last ones of the session above arrive first.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = access_lines(&log, &wiki.path().join("log")).len();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dokuwiki.png");
    let profile = wiki.path().join("chrome");
    let url = format!("http://{front}/dokuwiki/doku.php?id=start");
    let shot2 = shot.clone();
    tokio::task::spawn_blocking(move || browse(&chromium, &profile, &url, &shot2))
        .await
        .unwrap();
    // The access log line is written as each response ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen: Vec<(String, u16)> = access_lines(&log, &wiki.path().join("log")).split_off(before);
    let bad: Vec<&(String, u16)> = seen
        .iter()
        .filter(|(_, s)| !((200..300).contains(s) || *s == 304))
        .collect();
    assert!(
        bad.is_empty(),
        "the browser got {bad:?}\nall: {seen:#?}\n{}",
        proxy.output()
    );
    for want in ["doku.php?id=start", "css.php", "js.php", ".png"] {
        assert!(
            seen.iter().any(|(r, _)| r.contains(want)),
            "the browser did not load {want}: {seen:#?}"
        );
    }
    drop(proxy);

    // The same with the TOML site.
    let toml = toml_site(&wiki);
    let log = wiki.path().join("proxy-toml.log");
    let (proxy, front) = tokio::task::spawn_blocking(move || {
        start_proxy(&["--config".as_ref(), toml.as_os_str()], &log)
    })
    .await
    .unwrap();
    use_the_wiki(front, "the TOML site", "toml").await;
    drop(proxy);
}

/// What the crawl and the probes compare.
fn class(s: u16) -> u16 {
    s / 100
}

/// Same-site links of a page (`href`/`src`), as request targets.
fn links(html: &str) -> Vec<String> {
    let re = regex::Regex::new(r##"(?:href|src)="([^"#]*)"##).unwrap();
    re.captures_iter(html)
        .map(|c| unescape_html(&c[1]))
        .filter(|u| u.starts_with("/dokuwiki/"))
        // Actions that change what later requests see.
        .filter(|u| !u.contains("do=logout") && !u.contains("do=register"))
        .collect()
}

const PROBES: &[&str] = &[
    "/dokuwiki/",
    "/dokuwiki/inc/",
    "/dokuwiki/inc/init.php",
    "/dokuwiki/inc/.htaccess",
    "/dokuwiki/bin/",
    "/dokuwiki/bin/dwpage.php",
    "/dokuwiki/vendor/autoload.php",
    "/dokuwiki/data/",
    "/dokuwiki/data/pages/start.txt",
    "/dokuwiki/conf/",
    "/dokuwiki/conf/local.php",
    "/dokuwiki/.htaccess",
    "/dokuwiki/.htaccess.dist",
    "/dokuwiki/VERSION",
    "/dokuwiki/.git",
    "/dokuwiki/.git/config",
    "/dokuwiki/lib/",
    "/dokuwiki/lib/plugins/",
    "/dokuwiki/lib/tpl/dokuwiki/images/logo.png",
    "/dokuwiki/lib/tpl/dokuwiki/style.ini",
    "/dokuwiki/install.php",
    "/dokuwiki/%2e%2e/",
    "/dokuwiki/%2e%2e/%2e%2e/etc/passwd",
    "/dokuwiki/inc%2finit.php",
    "/dokuwiki/data%2f",
    "/dokuwiki/%2einc/",
    "/dokuwiki/inc/../doku.php",
    "/dokuwiki/in%63/init.php",
    "/dokuwiki/VERSION%00",
    "/dokuwiki/.ht%61ccess",
    "/dokuwiki/doku.php/%2e%2e/inc/init.php",
    "/dokuwiki/sites/x/inc/init.php",
    "/dokuwiki/sites/x/VERSION",
    "/dokuwiki/sites/x/doku.php",
    "/dokuwiki/lib/exe/fetch.php?media=wiki:dokuwiki-128.png",
    "/dokuwiki/doku.php?id=start&do=export_raw",
];

/// Most URLs the crawl follows.
const CRAWL_LIMIT: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_matches_apache() {
    let Some((fpm_bin, apache_bin)) = need_wiki() else {
        return;
    };
    let apache_port = support::free_port();
    let wiki = tokio::task::spawn_blocking(move || setup(&fpm_bin, apache_port))
        .await
        .unwrap();
    let t = wiki.path().to_path_buf();
    let conf = wiki.apache_conf.clone();
    let (t2, conf2) = (t.clone(), conf.clone());
    let (proxy, ours) = tokio::task::spawn_blocking(move || {
        start_proxy(
            &["--apache".as_ref(), conf2.as_os_str()],
            &t2.join("proxy.log"),
        )
    })
    .await
    .unwrap();
    // Apache as Debian's apache2ctl starts it: envvars' variables, the tree as ServerRoot.
    let (t2, conf2) = (t.clone(), conf.clone());
    let apache = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(apache_bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/bin")
            .env("APACHE_RUN_USER", "www-data")
            .env("APACHE_RUN_GROUP", "www-data")
            .env("APACHE_PID_FILE", t2.join("run/apache2.pid"))
            .env("APACHE_RUN_DIR", t2.join("run"))
            .env("APACHE_LOCK_DIR", t2.join("lock"))
            .env("APACHE_LOG_DIR", t2.join("log"))
            .arg("-d")
            .arg(conf2.parent().unwrap())
            .arg("-f")
            .arg(&conf2)
            .arg("-DFOREGROUND");
        let addr: SocketAddr = format!("127.0.0.1:{apache_port}").parse().unwrap();
        let mut p = Proc::spawn("apache2", cmd, &t2.join("apache.out"));
        if let Err(e) = p.wait_ready(addr, None) {
            let err = std::fs::read_to_string(t2.join("log/error.log")).unwrap_or_default();
            panic!("{e}\n--- error.log ---\n{err}");
        }
        (p, addr)
    })
    .await
    .unwrap();
    let (apache, theirs) = apache;
    let toml = toml_site(&wiki);
    let t2 = t.clone();
    let (toml_proxy, toml_front) = tokio::task::spawn_blocking(move || {
        start_proxy(
            &["--config".as_ref(), toml.as_os_str()],
            &t2.join("proxy-toml.log"),
        )
    })
    .await
    .unwrap();

    let mut todo: VecDeque<String> = VecDeque::new();
    todo.push_back("/dokuwiki/doku.php?id=start".into());
    todo.extend(PROBES.iter().map(|p| (*p).to_owned()));
    let mut seen: BTreeSet<String> = todo.iter().cloned().collect();
    let mut problems = Vec::new();
    let mut compared = 0;
    let (mut a, mut b, mut c) = (Client::default(), Client::default(), Client::default());
    while let Some(u) = todo.pop_front() {
        compared += 1;
        let mine = a.request(ours, "GET", &u, None).await;
        let apache_says = b.request(theirs, "GET", &u, None).await;
        let from_toml = c.request(toml_front, "GET", &u, None).await;
        // `%2e%2e` climbs out to Apache's DocumentRoot, which the TOML site does not serve.
        if class(from_toml.status) != class(apache_says.status)
            && !u.contains("/sites/")
            && !u.contains("%2e%2e/")
        {
            problems.push(format!(
                "{u}: TOML site {} / Apache {}",
                from_toml.status, apache_says.status
            ));
        }
        if apache_says.status >= 400 && (200..300).contains(&from_toml.status) {
            problems.push(format!(
                "{u}: served by the TOML site, refused by Apache ({})",
                apache_says.status
            ));
        }
        if class(mine.status) != class(apache_says.status) {
            problems.push(format!(
                "{u}: fcgi-proxy {} / Apache {}",
                mine.status, apache_says.status
            ));
        }
        if apache_says.status >= 400 && (200..300).contains(&mine.status) {
            problems.push(format!(
                "{u}: served by fcgi-proxy, refused by Apache ({})",
                apache_says.status
            ));
        }
        let path = u.split('?').next().unwrap_or("");
        let php = path.contains(".php");
        if !php && mine.status == 200 && apache_says.status == 200 && mine.body != apache_says.body
        {
            problems.push(format!("{u}: the static bodies differ"));
        }
        let is_html = apache_says
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"));
        if is_html && apache_says.status == 200 {
            for l in links(&text(&apache_says)) {
                if seen.len() < CRAWL_LIMIT && seen.insert(l.clone()) {
                    todo.push_back(l);
                }
            }
        }
    }
    assert!(compared > 40, "only {compared} URLs were compared");
    assert!(
        problems.is_empty(),
        "{} of {compared} URLs differ:\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        proxy.output()
    );
    drop((proxy, toml_proxy, apache));
}
