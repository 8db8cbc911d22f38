//! Requests that no `ProxyPass` route takes, on a server whose Apache configuration has
//! handlers: the URL is mapped to the filesystem as Apache's core does (Alias/AliasMatch, else
//! DocumentRoot; walking to the first component that is not a directory, the rest being path
//! info), the sections are merged for that file ([`crate::config::site::Site::merge`]), and
//! the outcome is a FastCGI handler, a redirect or a status. Everything here is pure but for
//! the [`Fs`] it is given; the runtime calls it on the serving thread or off it, as
//! [`crate::mounts`] says.

use std::net::IpAddr;

use crate::config::Config;
use crate::config::site::{AcceptPathInfo, Client, Handler, PathKind};
use crate::config::url::WorkerUrl;

/// Filesystem questions (a trait so tests can fake the disk).
pub trait Fs {
    /// What `path` (absolute) names, following symbolic links.
    fn kind(&self, path: &[u8]) -> PathKind;

    /// `path` with every symbolic link resolved (`realpath`); `None` if it cannot be.
    fn canonical(&self, path: &[u8]) -> Option<Vec<u8>> {
        Some(path.to_vec())
    }

    /// The client's host name by double-reverse lookup (the name its address resolves to,
    /// which resolves back to the address), for `Require host` and `Allow from <name>`.
    fn host_of(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// The real filesystem: it may wait on the disk or the network; [`crate::mounts`] says where it
/// may be asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn kind(&self, path: &[u8]) -> PathKind {
        use std::os::unix::ffi::OsStrExt;
        match std::fs::metadata(std::ffi::OsStr::from_bytes(path)) {
            Ok(m) if m.is_file() => PathKind::File,
            Ok(m) if m.is_dir() => PathKind::Directory,
            Ok(_) => PathKind::Other,
            Err(_) => PathKind::Missing,
        }
    }

    fn canonical(&self, path: &[u8]) -> Option<Vec<u8>> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        if no_link_on_the_way(path) {
            return Some(path.to_vec());
        }
        std::fs::canonicalize(std::ffi::OsStr::from_bytes(path))
            .ok()
            .map(|p| p.into_os_string().into_vec())
    }

    fn host_of(&self, ip: IpAddr) -> Option<String> {
        // The system resolver (its own timeouts, resolv.conf); this runs on a blocking-pool
        // thread, never on a serving thread.
        let name = dns_lookup::lookup_addr(&ip).ok()?;
        let back = dns_lookup::lookup_host(&name).ok()?;
        back.contains(&ip).then_some(name)
    }
}

/// The real filesystem, asked on a serving thread ([`crate::mounts`] says when it may be): a
/// question that may wait on the network (a host name for `Require host`) is not answered
/// but noted, and the caller asks again in the blocking pool.
#[derive(Debug, Default)]
pub struct ServingThreadFs {
    wanted_host: std::cell::Cell<bool>,
}

impl ServingThreadFs {
    /// Whether a question needed the blocking pool: what was decided does not hold.
    pub fn needs_pool(&self) -> bool {
        self.wanted_host.get()
    }
}

impl Fs for ServingThreadFs {
    fn kind(&self, path: &[u8]) -> PathKind {
        RealFs.kind(path)
    }

    fn canonical(&self, path: &[u8]) -> Option<Vec<u8>> {
        RealFs.canonical(path)
    }

    fn host_of(&self, _ip: IpAddr) -> Option<String> {
        self.wanted_host.set(true);
        None
    }
}

/// Whether `path` (absolute, every component a plain name) is there and reached without a
/// symbolic link, so that it is its own canonical form. `openat2` with `RESOLVE_NO_SYMLINKS`
/// tells in one call, where `realpath` reads every component (one `readlink` each, on every
/// request of a site). False when it cannot tell (a kernel before 5.6, a sandbox that refuses
/// the call): `realpath` decides then.
fn no_link_on_the_way(path: &[u8]) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::os::unix::ffi::OsStrExt;
    let plain = path.len() > 1
        && path[0] == b'/'
        && path[1..]
            .split(|&c| c == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..");
    plain
        && rustix::fs::openat2(
            rustix::fs::CWD,
            std::ffi::OsStr::from_bytes(path),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        )
        .is_ok()
}

/// A request for a FastCGI handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerTarget {
    pub worker: std::sync::Arc<WorkerUrl>,
    pub default_worker: bool,
    pub filename: Vec<u8>,
    pub path_info: Vec<u8>,
    pub script_uri: Vec<u8>,
    pub context_prefix: Vec<u8>,
    pub context_document_root: Vec<u8>,
    /// PATH_TRANSLATED: what a sub-request for the path info maps to (`ap_add_cgi_vars`), when
    /// there is path info.
    pub path_translated: Option<Vec<u8>>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Handler(Box<HandlerTarget>),
    /// `DirectorySlash`: 301 to the path with a `/` added (the query kept by the caller).
    Redirect(Vec<u8>),
    /// A file no handler claims (served as a static file, when that is available).
    File(Vec<u8>),
    Status(u16),
}

/// Access control for a request a `ProxyPass` route takes (the `<Location>` sections covering
/// it): `Some(status)` when it is refused.
pub fn route_access(
    cfg: &Config,
    uri: &[u8],
    remote: IpAddr,
    local: IpAddr,
    fs: &dyn Fs,
) -> Option<u16> {
    let d = cfg.site.merge_locations(uri);
    let looked_up = std::cell::OnceCell::new();
    let host = || looked_up.get_or_init(|| fs.host_of(remote)).clone();
    let client = Client {
        remote,
        local,
        host: &host,
    };
    if !d.allows(&client) {
        return Some(403);
    }
    d.status_rules
        .iter()
        .find(|r| r.matches(uri))
        .map(|r| r.status)
}

/// Walk `path` from the root: the first component that is not a directory ends the file
/// name, and what follows is the path info (`ap_directory_walk`). A path of directories only
/// is a directory.
pub fn walk(fs: &dyn Fs, path: &[u8]) -> (Vec<u8>, Vec<u8>, PathKind) {
    // Most requests name something that is there: then one lookup of the whole path says it
    // all (every component before the last is a directory, or the path would not resolve).
    match fs.kind(path) {
        PathKind::Missing => {}
        kind => return (path.to_vec(), Vec::new(), kind),
    }
    let mut i = usize::from(path.first() == Some(&b'/'));
    loop {
        let end = path[i..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(path.len(), |p| i + p);
        if end > i {
            match fs.kind(&path[..end]) {
                PathKind::Directory => {}
                kind => return (path[..end].to_vec(), path[end..].to_vec(), kind),
            }
        }
        if end >= path.len() {
            return (path.to_vec(), Vec::new(), PathKind::Directory);
        }
        i = end + 1;
    }
}

/// Decide what a request for the decoded path `uri` gets from server configuration `cfg`.
pub fn decide(cfg: &Config, uri: &[u8], remote: IpAddr, local: IpAddr, fs: &dyn Fs) -> Decision {
    let (file, prefix, root) = cfg.site.translate(uri, &cfg.document_root);
    let (filename, path_info, kind) = walk(fs, &file);
    let at = At {
        uri: uri.to_vec(),
        filename,
        path_info,
        kind,
        prefix,
        root,
    };
    decide_at(cfg, at, remote, local, fs, 0)
}

struct At {
    uri: Vec<u8>,
    filename: Vec<u8>,
    path_info: Vec<u8>,
    kind: PathKind,
    prefix: Vec<u8>,
    root: Vec<u8>,
}

fn decide_at(
    cfg: &Config,
    at: At,
    remote: IpAddr,
    local: IpAddr,
    fs: &dyn Fs,
    depth: usize,
) -> Decision {
    let d = cfg.site.merge(&at.uri, &at.filename, at.kind);
    let looked_up = std::cell::OnceCell::new();
    let host = || looked_up.get_or_init(|| fs.host_of(remote)).clone();
    let client = Client {
        remote,
        local,
        host: &host,
    };
    if !d.allows(&client) {
        return Decision::Status(403);
    }
    // Per-directory status-only redirects (mod_alias, after access control).
    if let Some(r) = d.status_rules.iter().find(|r| r.matches(&at.uri)) {
        return Decision::Status(r.status);
    }
    if matches!(at.kind, PathKind::File | PathKind::Other)
        && !within_roots(cfg, fs, &at.filename, d.follow_symlinks.unwrap_or(true))
    {
        return Decision::Status(403);
    }
    match d.handler {
        Some(Handler::Proxy {
            url,
            defined,
            worker: _,
        }) => {
            if !at.path_info.is_empty() && d.accept_path_info == Some(AcceptPathInfo::Off) {
                return Decision::Status(404);
            }
            let path_translated = if at.path_info.is_empty() {
                None
            } else {
                path_translated(cfg, &at.path_info, fs)
            };
            Decision::Handler(Box::new(HandlerTarget {
                path_translated,
                worker: url,
                default_worker: !defined,
                filename: at.filename,
                path_info: at.path_info,
                script_uri: at.uri,
                context_prefix: at.prefix,
                context_document_root: at.root,
            }))
        }
        Some(Handler::Other(_)) => Decision::Status(404),
        Some(Handler::Default) | None => match at.kind {
            PathKind::Directory => {
                if !at.uri.ends_with(b"/") && d.directory_slash != Some(false) {
                    let mut to = at.uri;
                    to.push(b'/');
                    return Decision::Redirect(to);
                }
                let default_index = ["index.html".to_owned()];
                let names = d.directory_index.as_deref().unwrap_or(&default_index);
                if depth == 0 {
                    for name in names {
                        // A DirectoryIndex entry starting with '/' is a URL; only names here.
                        if name.starts_with('/') || name.contains("..") {
                            continue;
                        }
                        let mut candidate = at.filename.clone();
                        if candidate.last() != Some(&b'/') {
                            candidate.push(b'/');
                        }
                        candidate.extend_from_slice(name.as_bytes());
                        let kind = fs.kind(&candidate);
                        if kind == PathKind::Missing {
                            continue;
                        }
                        let mut uri = at.uri.clone();
                        uri.extend_from_slice(name.as_bytes());
                        let sub = At {
                            uri,
                            filename: candidate,
                            path_info: Vec::new(),
                            kind,
                            prefix: at.prefix.clone(),
                            root: at.root.clone(),
                        };
                        return decide_at(cfg, sub, remote, local, fs, depth + 1);
                    }
                }
                fallback(cfg, &d.fallback_resource, remote, local, fs, depth)
                    .unwrap_or(Decision::Status(403))
            }
            PathKind::Missing => fallback(cfg, &d.fallback_resource, remote, local, fs, depth)
                .unwrap_or(Decision::Status(404)),
            PathKind::File | PathKind::Other => {
                if !at.path_info.is_empty() && d.accept_path_info != Some(AcceptPathInfo::On) {
                    return Decision::Status(404);
                }
                Decision::File(at.filename)
            }
        },
    }
}

/// Where a sub-request for `path_info` (as a URL path) lands: Alias or DocumentRoot, walked;
/// a directory asked for with a trailing '/' is its DirectoryIndex file when one exists.
/// (Apache's sub-request also runs ProxyPass; a path info under a ProxyPass is not mapped
/// that way here.)
/// None when the path info under the DocumentRoot makes a name too long to map, as Apache's
/// core refuses it ([`crate::cgi::fits_under_root`]; an Alias has no such check).
fn path_translated(cfg: &Config, path_info: &[u8], fs: &dyn Fs) -> Option<Vec<u8>> {
    let (file, prefix, _) = cfg.site.translate(path_info, &cfg.document_root);
    if prefix.is_empty() && !crate::cgi::fits_under_root(&cfg.document_root, path_info) {
        return None;
    }
    let (mut found, rest, kind) = walk(fs, &file);
    if kind == PathKind::Directory && found.ends_with(b"/") {
        let d = cfg.site.merge(path_info, &found, kind);
        let default_index = ["index.html".to_owned()];
        for name in d.directory_index.as_deref().unwrap_or(&default_index) {
            if name.starts_with('/') || name.contains("..") {
                continue;
            }
            let mut candidate = found.clone();
            candidate.extend_from_slice(name.as_bytes());
            if fs.kind(&candidate) != PathKind::Missing {
                return Some(candidate);
            }
        }
    }
    found.extend_from_slice(&rest);
    Some(found)
}

/// Whether the existing file `path` may be served: reached without symbolic links, or with
/// `Options FollowSymLinks` and landing inside a DocumentRoot or an Alias target (Apache would
/// follow a link anywhere; a file outside the configured roots is refused here).
fn within_roots(cfg: &Config, fs: &dyn Fs, path: &[u8], follow: bool) -> bool {
    let Some(real) = fs.canonical(path) else {
        return false;
    };
    if real == path {
        return true;
    }
    if !follow {
        return false;
    }
    let roots = std::iter::once(cfg.document_root.as_str()).chain(
        cfg.site
            .aliases
            .iter()
            .filter(|a| matches!(a.from, crate::config::site::Matcher::Path(_)))
            .map(|a| a.to.as_str()),
    );
    let under = |real: &[u8], r: &[u8]| {
        real.starts_with(r) && (real.len() == r.len() || real[r.len()] == b'/')
    };
    let roots: Vec<&str> = roots.collect();
    if roots
        .iter()
        .filter_map(|r| fs.canonical(r.as_bytes()))
        .any(|r| under(&real, &r))
    {
        return true;
    }
    // A directory inside a root that is a link to elsewhere (Debian's DokuWiki links
    // `lib/tpl` to `/var/lib/dokuwiki/lib/tpl`) brings its target into the site; a link to
    // a file must land inside a root.
    roots.iter().any(|r| {
        let r = r.trim_end_matches('/').as_bytes();
        if !under(path, r) {
            return false;
        }
        let last = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
        (r.len() + 1..last)
            .filter(|&i| path[i] == b'/')
            .chain(std::iter::once(last).filter(|&l| l > r.len()))
            .filter_map(|i| {
                let prefix = &path[..i];
                fs.canonical(prefix).filter(|c| c != prefix)
            })
            .any(|c| under(&real, &c))
    })
}

/// `FallbackResource`: the request is served as if for that URL (once).
fn fallback(
    cfg: &Config,
    fb: &Option<Option<std::sync::Arc<str>>>,
    remote: IpAddr,
    local: IpAddr,
    fs: &dyn Fs,
    depth: usize,
) -> Option<Decision> {
    let url = fb.as_ref()?.as_ref()?;
    if depth > 0 || !url.starts_with('/') {
        return None;
    }
    let (file, prefix, root) = cfg.site.translate(url.as_bytes(), &cfg.document_root);
    let (filename, path_info, kind) = walk(fs, &file);
    let at = At {
        uri: url.as_bytes().to_vec(),
        filename,
        path_info,
        kind,
        prefix,
        root,
    };
    Some(decide_at(cfg, at, remote, local, fs, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeFs(&'static [(&'static str, PathKind)]);

    impl Fs for FakeFs {
        fn kind(&self, path: &[u8]) -> PathKind {
            self.0
                .iter()
                .find(|(p, _)| p.as_bytes() == path)
                .map_or(PathKind::Missing, |(_, k)| *k)
        }
    }

    const DISK: FakeFs = FakeFs(&[
        ("/srv", PathKind::Directory),
        ("/srv/www", PathKind::Directory),
        ("/srv/www/sub", PathKind::Directory),
        ("/srv/www/a.php", PathKind::File),
        ("/srv/www/sub/index.php", PathKind::File),
    ]);

    #[test]
    fn walking_stops_at_the_first_component_that_is_not_a_directory() {
        assert_eq!(
            walk(&DISK, b"/srv/www/a.php/x/y"),
            (b"/srv/www/a.php".to_vec(), b"/x/y".to_vec(), PathKind::File)
        );
        assert_eq!(
            walk(&DISK, b"/srv/www/nope/x"),
            (b"/srv/www/nope".to_vec(), b"/x".to_vec(), PathKind::Missing)
        );
        assert_eq!(
            walk(&DISK, b"/srv/www/sub/"),
            (b"/srv/www/sub/".to_vec(), Vec::new(), PathKind::Directory)
        );
        assert_eq!(
            walk(&DISK, b"/srv/www/a.php/"),
            (b"/srv/www/a.php".to_vec(), b"/".to_vec(), PathKind::File)
        );
    }

    /// The real filesystem's canonical form: a path without a link is itself (told without
    /// `realpath`); a link on the way, `.` or `..` is resolved; a missing path has none.
    #[test]
    fn canonical_paths_on_the_real_filesystem() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The temp dir itself may be reached through a link (macOS /tmp, some containers).
        let base = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
        let base = base.to_str().expect("utf-8").to_owned();
        std::fs::create_dir_all(format!("{base}/real/sub")).expect("dirs");
        std::fs::write(format!("{base}/real/sub/f.txt"), "x").expect("file");
        std::os::unix::fs::symlink(format!("{base}/real"), format!("{base}/link")).expect("link");
        let c = |p: &str| {
            RealFs
                .canonical(p.as_bytes())
                .map(|v| String::from_utf8(v).unwrap())
        };
        let file = format!("{base}/real/sub/f.txt");
        assert!(no_link_on_the_way(file.as_bytes()));
        assert_eq!(c(&file).as_deref(), Some(file.as_str()));
        for other in [
            format!("{base}/link/sub/f.txt"),
            format!("{base}/real/sub/../sub/f.txt"),
            format!("{base}/real/./sub/f.txt"),
        ] {
            assert!(!no_link_on_the_way(other.as_bytes()), "{other}");
            assert_eq!(c(&other).as_deref(), Some(file.as_str()), "{other}");
        }
        assert_eq!(c(&format!("{base}/real/sub/none.txt")), None);
        assert!(!no_link_on_the_way(
            format!("{base}/real/sub/none.txt").as_bytes()
        ));
    }

    /// A path that is there costs one lookup, not one per component.
    #[test]
    fn a_path_that_is_there_is_looked_up_once() {
        struct Counting(std::cell::Cell<usize>);
        impl Fs for Counting {
            fn kind(&self, path: &[u8]) -> PathKind {
                self.0.set(self.0.get() + 1);
                DISK.kind(path)
            }
        }
        for (path, lookups) in [
            (&b"/srv/www/sub/index.php"[..], 1),
            (b"/srv/www/sub", 1),
            // Not there as a whole: the whole path, then /srv, /srv/www, /srv/www/a.php.
            (b"/srv/www/a.php/x", 4),
        ] {
            let fs = Counting(std::cell::Cell::new(0));
            let walked = walk(&fs, path);
            assert_eq!(walked, walk(&DISK, path));
            assert_eq!(fs.0.get(), lookups, "{}", String::from_utf8_lossy(path));
        }
    }
}
