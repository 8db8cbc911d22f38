//! The external programs the tests and the conformance suite run (Apache httpd, nginx, Caddy,
//! HAProxy, lighttpd, h2o, php-fpm, cgi-fcgi, spawn-fcgi, wrk, h2load, openssl, a C compiler):
//! where they are, and what a test does when one is missing.
//!
//! **Where.** [`find_program`] looks in each absolute directory of `PATH`, then in
//! `/usr/local/sbin`, `/usr/sbin` and `/sbin`: Debian installs `apache2`, `nginx` and
//! `php-fpm8.2` there, and a user's `PATH` often lacks them. Empty and relative `PATH` entries
//! are ignored, so the current directory is never searched. `FCGI_PROGRAM_DIRS` (directories
//! separated by `:`) replaces that whole list, e.g. to see what the tests do without a program
//! this machine has.
//!
//! **Missing.** A test that cannot run without a program asks [`require_program`] for it (or
//! [`require_file`] for a file such as a library header). When it is missing, `FCGI_REQUIRE`
//! decides:
//!
//! - `all`, or a comma-separated list naming the program or its Debian package
//!   (`FCGI_REQUIRE=apache2,php-fpm8.2`): the test fails, naming the program and the package to
//!   install;
//! - otherwise (unset, empty, `none`, a list without it): the test prints
//!   `SKIPPED <test>: <program> is not installed (apt-get install <package>)` and returns.
//!
//! With `FCGI_REQUIRE` unset, `CI` set in the environment (to anything) stands for
//! `FCGI_REQUIRE=all`: a CI run cannot pass without having run every test.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Where Debian installs daemons, searched after `PATH`.
pub const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Replaces the directories searched (`PATH` and [`SBIN_DIRS`]) when set.
pub const DIRS_VAR: &str = "FCGI_PROGRAM_DIRS";

/// Which missing programs fail a test instead of skipping it.
pub const REQUIRE_VAR: &str = "FCGI_REQUIRE";

/// The directories [`find_program`] searches, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    search_dirs_from(std::env::var_os(DIRS_VAR), std::env::var_os("PATH"))
}

fn search_dirs_from(dirs: Option<OsString>, path: Option<OsString>) -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = match dirs {
        Some(d) => std::env::split_paths(&d).collect(),
        None => std::env::split_paths(&path.unwrap_or_default())
            .chain(SBIN_DIRS.map(PathBuf::from))
            .collect(),
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for d in listed {
        // An empty entry means the current directory to a shell; never here.
        if d.is_absolute() && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The executable file `name` in the first of [`search_dirs`] that has one. A name with a `/`
/// is a path: itself if it is an executable file.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    find_in(name, &search_dirs())
}

fn find_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What to run for `name`: the path [`find_program`] finds, or the name itself (so that
/// starting it fails with the OS's own error).
pub fn program_path(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Which missing programs fail a test: from `FCGI_REQUIRE`, or `CI`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    /// Every program.
    all: bool,
    /// Program or package names.
    names: Vec<String>,
    /// Where this came from, for messages.
    source: String,
}

impl Required {
    /// What this process's environment says.
    pub fn from_env() -> Required {
        let require = std::env::var_os(REQUIRE_VAR).map(|v| v.to_string_lossy().into_owned());
        Required::parse(require.as_deref(), std::env::var_os("CI").is_some())
    }

    /// `require` is `FCGI_REQUIRE`'s value, `ci` whether `CI` is set.
    pub fn parse(require: Option<&str>, ci: bool) -> Required {
        let Some(value) = require else {
            return Required {
                all: ci,
                names: Vec::new(),
                source: if ci {
                    format!("CI is set ({REQUIRE_VAR} unset: all)")
                } else {
                    format!("{REQUIRE_VAR} is unset")
                },
            };
        };
        let names: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty() && *n != "none")
            .map(str::to_owned)
            .collect();
        Required {
            all: names.iter().any(|n| n == "all"),
            names,
            source: format!("{REQUIRE_VAR}={value}"),
        }
    }

    /// Whether a missing `program` (from the Debian `package`) fails the test.
    pub fn covers(&self, program: &str, package: &str) -> bool {
        self.all || self.names.iter().any(|n| n == program || n == package)
    }
}

/// `program`, found by [`find_program`]; or, when it is missing, `None` after printing that the
/// calling test is skipped. Panics instead when `FCGI_REQUIRE` (or `CI`) requires it.
#[track_caller]
pub fn require_program(program: &str, package: &str) -> Option<PathBuf> {
    let found = find_program(program);
    if found.is_none() {
        let dirs: Vec<String> = search_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        report_missing(
            program,
            package,
            &format!(
                "looked in {}",
                if dirs.is_empty() {
                    "no directory".into()
                } else {
                    dirs.join(":")
                }
            ),
        );
    }
    found
}

/// Whether the file `path` (from the Debian `package`) exists; when it does not, the calling
/// test is skipped or fails as for [`require_program`].
#[track_caller]
pub fn require_file(path: &Path, package: &str) -> bool {
    let there = path.is_file();
    if !there {
        report_missing(&path.display().to_string(), package, "no such file");
    }
    there
}

/// For a test that found `what` missing by its own means: panics when `FCGI_REQUIRE` (or `CI`)
/// requires it, else prints that the calling test is skipped.
#[track_caller]
pub fn missing(what: &str, package: &str) {
    report_missing(what, package, "");
}

#[track_caller]
fn report_missing(what: &str, package: &str, detail: &str) {
    let test = current_test();
    let required = Required::from_env();
    if required.covers(what, package) {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        panic!(
            "{test}: {what} is not installed{detail}, and {} requires it: \
             apt-get install {package}",
            required.source
        );
    }
    // Straight to stderr, past the test harness's capture, so that a skip shows in the output
    // of a run that passes; in one write, so that other tests' lines do not split it.
    let line = format!("SKIPPED {test}: {what} is not installed (apt-get install {package})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The running test's name: the test harness names each test's thread after it. Elsewhere, the
/// program's name.
pub fn current_test() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            // A test binary is `<target>-<hash>`.
            .map(|s| match s.rsplit_once('-') {
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_owned()
                }
                _ => s,
            })
            .unwrap_or_else(|| "this test".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_then_sbin_without_empty_or_relative_entries() {
        let dirs = search_dirs_from(None, Some("/opt/bin::relative:/usr/sbin:/bin/".into()));
        let want: Vec<PathBuf> = ["/opt/bin", "/usr/sbin", "/bin/", "/usr/local/sbin", "/sbin"]
            .map(PathBuf::from)
            .to_vec();
        assert_eq!(dirs, want);
    }

    #[test]
    fn no_path_still_searches_sbin_and_never_the_current_directory() {
        let want: Vec<PathBuf> = SBIN_DIRS.map(PathBuf::from).to_vec();
        assert_eq!(search_dirs_from(None, None), want);
        assert_eq!(search_dirs_from(None, Some("".into())), want);
    }

    #[test]
    fn program_dirs_replace_the_search() {
        let dirs = search_dirs_from(Some("/a:/b".into()), Some("/usr/bin".into()));
        assert_eq!(dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(search_dirs_from(Some("".into()), Some("/usr/bin".into())).is_empty());
    }

    #[test]
    fn only_executable_files_are_found() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let tool = d.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let dirs = [PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        assert_eq!(find_in("tool", &dirs), Some(tool.clone()));
        assert_eq!(find_in("plain", &dirs), None);
        assert_eq!(find_in("dir", &dirs), None);
        assert_eq!(find_in("", &dirs), None);
        assert_eq!(find_program(&tool.display().to_string()), Some(tool));
        assert_eq!(find_program(&plain.display().to_string()), None);
    }

    #[test]
    fn sh_is_found_on_a_usual_path() {
        let dirs = search_dirs_from(None, Some("/usr/bin:/bin".into()));
        assert!(find_in("sh", &dirs).is_some(), "{dirs:?}");
    }

    #[test]
    fn what_is_required() {
        let none = Required::parse(None, false);
        assert!(!none.covers("apache2", "apache2"));
        let ci = Required::parse(None, true);
        assert!(ci.covers("nginx", "nginx"));
        assert!(Required::parse(Some("all"), false).covers("wrk", "wrk"));
        // Set explicitly, it wins over CI.
        assert!(!Required::parse(Some(""), true).covers("nginx", "nginx"));
        assert!(!Required::parse(Some("none"), true).covers("nginx", "nginx"));
        let listed = Required::parse(Some("apache2, php8.2-fpm"), true);
        assert!(listed.covers("apache2", "apache2"));
        assert!(listed.covers("php-fpm8.2", "php8.2-fpm"));
        assert!(!listed.covers("nginx", "nginx"));
    }

    #[test]
    fn the_test_is_named_after_its_thread() {
        assert_eq!(current_test(), "tests::the_test_is_named_after_its_thread");
    }

    /// Run in a child process by [`a_missing_program_skips_or_fails_as_required`].
    #[test]
    #[ignore = "run in a child process with a chosen environment"]
    fn probe() {
        assert_eq!(
            require_program("fcgi-absent-program", "fcgi-absent-pkg"),
            None
        );
        println!("probe returned");
    }

    #[test]
    fn a_missing_program_skips_or_fails_as_required() {
        let run = |env: &[(&str, &str)]| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--ignored", "--exact", "tests::probe", "--nocapture"])
                .env_remove("CI")
                .env_remove(REQUIRE_VAR)
                .env(DIRS_VAR, "/nonexistent");
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let skipped = "SKIPPED tests::probe: fcgi-absent-program is not installed \
                       (apt-get install fcgi-absent-pkg)";
        for env in [
            &[][..],
            &[("CI", "true"), (REQUIRE_VAR, "nginx")],
            &[(REQUIRE_VAR, "")],
        ] {
            let (ok, text) = run(env);
            assert!(
                ok && text.contains(skipped) && text.contains("probe returned"),
                "{env:?}: {text}"
            );
        }
        for env in [
            &[(REQUIRE_VAR, "all")][..],
            &[("CI", "true")],
            &[(REQUIRE_VAR, "nginx,fcgi-absent-pkg")],
            &[(REQUIRE_VAR, "fcgi-absent-program")],
        ] {
            let (ok, text) = run(env);
            assert!(!ok, "{env:?}: {text}");
            assert!(
                text.contains(
                    "tests::probe: fcgi-absent-program is not installed (looked in /nonexistent)"
                ) && text.contains("apt-get install fcgi-absent-pkg")
                    && !text.contains("probe returned"),
                "{env:?}: {text}"
            );
        }
    }
}
