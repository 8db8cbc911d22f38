//! Reading an Apache configuration the way httpd does before any directive is looked at:
//! `Include`/`IncludeOptional` (globs, sorted, relative to `ServerRoot`), `Define`/`UnDefine`
//! and `${VAR}` substitution (with Debian's `envvars` beside the main file), `<IfModule>`
//! decided by the `LoadModule` lines read so far, `<IfDefine>`. The result is the flat list of
//! the remaining lines, each with its file and line number.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;

/// One logical line of some file.
#[derive(Debug, Clone)]
pub struct SourceLine {
    pub file: Arc<str>,
    pub number: usize,
    pub text: String,
}

/// What reading decided besides the lines.
#[derive(Debug, Default)]
pub struct Read {
    pub lines: Vec<SourceLine>,
    /// Conditional sections skipped because they could not be decided (a configuration
    /// fragment without `LoadModule` lines: `<IfModule !x>`), as (what, file, line).
    pub undecided: Vec<(String, Arc<str>, usize)>,
    /// `${VAR}` references to nothing defined, as (file, line, message).
    pub notes: Vec<(Arc<str>, usize, String)>,
    /// Whether any `LoadModule` line was read (then `<IfModule>` is decided by them).
    pub modules_known: bool,
    /// The modules loaded (built in, then by `LoadModule`), without `_module` / `mod_` / `.c`.
    pub modules: Vec<String>,
    /// The last `ServerRoot` read, if any.
    pub server_root: Option<String>,
}

/// Modules compiled into Debian's apache2 (`apache2 -l`): always loaded.
const BUILT_IN: &[&str] = &[
    "core",
    "so",
    "watchdog",
    "http",
    "log_config",
    "logio",
    "version",
    "unixd",
];

/// Apache includes nest at most this deep (AP_MAX_INCLUDE_DEPTH).
const MAX_DEPTH: usize = 128;

/// Read `main` (its text is `text`) with `defines` given on the command line (`-D NAME[=VALUE]`).
pub fn read(main: &str, text: &str, defines: &[(String, String)]) -> Result<Read, ConfigError> {
    let main_path = Path::new(main);
    let dir = main_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut r = Reader {
        server_root: dir.clone(),
        vars: Vec::new(),
        defined: Vec::new(),
        modules: BUILT_IN.iter().map(|m| (*m).to_owned()).collect(),
        out: Read::default(),
    };
    r.load_envvars(&dir);
    for (k, v) in defines {
        r.define(k, v);
    }
    let mut conds = Vec::new();
    r.text(Arc::from(main), text, 0, &mut conds)?;
    if let Some((name, file, line, _)) = conds.last() {
        return Err(ConfigError::at(
            Some(file),
            *line,
            format!("<{name}> is never closed"),
        ));
    }
    r.out.modules.clone_from(&r.modules);
    Ok(r.out)
}

/// Read an `.htaccess` file `path` (its text is `text`): `<IfModule>` decided by the modules
/// the configuration loaded (`read`'s [`Read::modules`]).
pub fn read_htaccess(
    path: &str,
    text: &str,
    modules: &[String],
    modules_known: bool,
) -> Result<Read, ConfigError> {
    let dir = Path::new(path)
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut r = Reader {
        server_root: dir,
        vars: Vec::new(),
        defined: Vec::new(),
        modules: modules.to_vec(),
        out: Read {
            modules_known,
            ..Read::default()
        },
    };
    let mut conds = Vec::new();
    r.text(Arc::from(path), text, MAX_DEPTH, &mut conds)?;
    if let Some((name, file, line, _)) = conds.last() {
        return Err(ConfigError::at(
            Some(file),
            *line,
            format!("<{name}> is never closed"),
        ));
    }
    Ok(r.out)
}

struct Reader {
    server_root: PathBuf,
    /// `Define`d variables, then `envvars` (in order; later definitions replace earlier).
    vars: Vec<(String, String)>,
    /// Names given to `Define` (for `<IfDefine>`).
    defined: Vec<String>,
    /// Loaded module names, without `_module` / `mod_` / `.c`.
    modules: Vec<String>,
    out: Read,
}

/// An open conditional section: name, file, line, and whether its contents apply.
type Cond = (String, Arc<str>, usize, bool);

impl Reader {
    fn define(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
        if !self.defined.iter().any(|d| d == name) {
            self.defined.push(name.to_owned());
        }
    }

    /// Debian's `envvars`: `export NAME=value` lines (values may use `$NAME`/`${NAME}` of
    /// earlier lines and `$SUFFIX`, which is `-x` for a configuration directory
    /// `/etc/apache2-x`).
    fn load_envvars(&mut self, dir: &Path) {
        let Ok(text) = std::fs::read_to_string(dir.join("envvars")) else {
            return;
        };
        let suffix = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("apache2-"))
            .map(|s| format!("-{s}"))
            .unwrap_or_default();
        let mut shell: Vec<(String, String)> = vec![("SUFFIX".into(), suffix)];
        for line in text.lines() {
            let t = line.trim();
            let t = t.strip_prefix("export ").unwrap_or(t).trim();
            let Some((name, value)) = t.split_once('=') else {
                continue;
            };
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || name == "SUFFIX"
            {
                continue;
            }
            let value = value.trim().trim_matches('"').trim_matches('\'');
            let value = shell_expand(value, &shell);
            shell.retain(|(k, _)| k != name);
            shell.push((name.to_owned(), value));
        }
        for (k, v) in shell.into_iter().skip(1) {
            self.vars.retain(|(x, _)| *x != k);
            self.vars.push((k, v));
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    }

    /// `${VAR}` substitution (`ap_resolve_env`): an undefined variable stays as written, with a
    /// note.
    fn substitute(&mut self, file: &Arc<str>, n: usize, s: &str) -> String {
        if !s.contains("${") {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(j) => {
                    let name = &after[..j];
                    match self.lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            self.out.notes.push((
                                file.clone(),
                                n,
                                format!("config variable ${{{name}}} is not defined"),
                            ));
                            out.push_str(&rest[i..i + 3 + j]);
                        }
                    }
                    rest = &after[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn module_loaded(&self, arg: &str) -> bool {
        let key = module_key(arg);
        self.modules.contains(&key)
    }

    fn text(
        &mut self,
        file: Arc<str>,
        text: &str,
        depth: usize,
        conds: &mut Vec<Cond>,
    ) -> Result<(), ConfigError> {
        let base = conds.len();
        // Ordinary sections opened inside a skipped conditional block.
        let mut skipped: Vec<String> = Vec::new();
        for (number, raw) in logical_lines(text) {
            let active = conds.iter().all(|c| c.3);
            let err = |m: String| ConfigError::at(Some(&file), number, m);
            if !active {
                // Only section nesting matters until the block ends.
                if let Some(close) = raw.strip_prefix("</") {
                    let name = section_name(close);
                    if skipped.last() == Some(&name) {
                        skipped.pop();
                        continue;
                    }
                    if conds.len() > base && conds.last().is_some_and(|c| c.0 == name) {
                        conds.pop();
                        continue;
                    }
                    return Err(err(format!("</{name}> does not close an open section")));
                } else if let Some(open) = raw.strip_prefix('<') {
                    let name = section_name(open);
                    if name == "ifmodule" || name == "ifdefine" {
                        conds.push((name, file.clone(), number, false));
                    } else {
                        skipped.push(name);
                    }
                }
                continue;
            }
            let line = self.substitute(&file, number, &raw);
            if let Some(close) = line.strip_prefix("</") {
                let name = section_name(close);
                if (name == "ifmodule" || name == "ifdefine") && conds.len() > base {
                    match conds.last() {
                        Some(c) if c.0 == name => {
                            conds.pop();
                            continue;
                        }
                        _ => {}
                    }
                }
            } else if let Some(open) = line.strip_prefix('<') {
                let name = section_name(open);
                if name == "ifmodule" || name == "ifdefine" {
                    let inner = open.trim_end().strip_suffix('>').unwrap_or(open);
                    let arg = inner
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .trim_matches('"')
                        .to_owned();
                    let (neg, what) = match arg.strip_prefix('!') {
                        Some(w) => (true, w),
                        None => (false, arg.as_str()),
                    };
                    if what.is_empty() {
                        return Err(err(format!("<{name}> needs an argument")));
                    }
                    let holds = if name == "ifmodule" {
                        if !self.out.modules_known {
                            // A fragment without LoadModule lines: every module counts as
                            // loaded (as before), a negation cannot be decided.
                            if neg {
                                self.out.undecided.push((
                                    format!("<IfModule {arg}>"),
                                    file.clone(),
                                    number,
                                ));
                            }
                            !neg
                        } else {
                            self.module_loaded(what) != neg
                        }
                    } else {
                        self.defined.iter().any(|d| d == what) != neg
                    };
                    conds.push((name, file.clone(), number, holds));
                    continue;
                }
            } else {
                let words = super::apache::split_words(&line).map_err(err)?;
                let Some(first) = words.first() else { continue };
                match first.to_ascii_lowercase().as_str() {
                    "define" => {
                        match words.len() {
                            2 | 3 => {
                                let v = words.get(2).cloned().unwrap_or_default();
                                self.define(&words[1], &v);
                            }
                            _ => return Err(err("Define takes one or two arguments".into())),
                        }
                        continue;
                    }
                    "undefine" => {
                        if words.len() != 2 {
                            return Err(err("UnDefine takes one argument".into()));
                        }
                        self.vars.retain(|(k, _)| *k != words[1]);
                        self.defined.retain(|d| *d != words[1]);
                        continue;
                    }
                    "serverroot" if words.len() == 2 => {
                        self.server_root = PathBuf::from(&words[1]);
                        self.out.server_root = Some(words[1].clone());
                    }
                    "loadmodule" if words.len() >= 2 => {
                        self.out.modules_known = true;
                        let key = module_key(&words[1]);
                        if !self.modules.contains(&key) {
                            self.modules.push(key);
                        }
                    }
                    "include" | "includeoptional" => {
                        let optional = first.eq_ignore_ascii_case("includeoptional");
                        if words.len() != 2 {
                            return Err(err(format!("{first} takes one argument")));
                        }
                        if depth >= MAX_DEPTH {
                            return Err(err(format!(
                                "{first}: more than {MAX_DEPTH} levels of includes (a loop?)"
                            )));
                        }
                        let files = self.expand(&words[1], optional).map_err(err)?;
                        for f in files {
                            let text = match std::fs::read_to_string(&f) {
                                Ok(t) => t,
                                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                                    continue;
                                }
                                Err(e) => {
                                    return Err(err(format!(
                                        "{first} {}: cannot read {}: {e}",
                                        words[1],
                                        f.display()
                                    )));
                                }
                            };
                            let name: Arc<str> = Arc::from(f.display().to_string());
                            let open = conds.len();
                            self.text(name.clone(), &text, depth + 1, conds)?;
                            if conds.len() > open {
                                let (n, _, l, _) = &conds[conds.len() - 1];
                                return Err(ConfigError::at(
                                    Some(&name),
                                    *l,
                                    format!("<{n}> is never closed"),
                                ));
                            }
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            self.out.lines.push(SourceLine {
                file: file.clone(),
                number,
                text: line,
            });
        }
        if conds.len() > base
            && let Some((n, f, l, _)) = conds.last()
        {
            return Err(ConfigError::at(
                Some(f),
                *l,
                format!("<{n}> is never closed"),
            ));
        }
        Ok(())
    }

    /// The files an `Include` names: relative to ServerRoot; wildcards (`*`, `?`, `[...]`) in
    /// any component, each level sorted by name; a directory means every file in it, sorted.
    fn expand(&self, pattern: &str, optional: bool) -> Result<Vec<PathBuf>, String> {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.server_root.join(pattern)
        };
        let mut found: Vec<PathBuf> = vec![PathBuf::from("/")];
        let parts: Vec<String> = full
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                std::path::Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let relative_root = !full.is_absolute();
        if relative_root {
            found = vec![PathBuf::from(".")];
        }
        for part in &parts {
            let mut next = Vec::new();
            if has_wildcard(part) {
                for dir in &found {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                        .filter(|n| fnmatch(part.as_bytes(), n.as_bytes()))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| dir.join(n)));
                }
            } else {
                next = found.iter().map(|d| d.join(part)).collect();
            }
            found = next;
        }
        let wild = parts.iter().any(|p| has_wildcard(p));
        let mut files = Vec::new();
        for f in found {
            if f.is_dir() {
                let mut names: Vec<PathBuf> = std::fs::read_dir(&f)
                    .map_err(|e| format!("cannot read directory {}: {e}", f.display()))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                names.sort();
                files.extend(names);
            } else if f.exists() || !wild {
                files.push(f);
            }
        }
        files.retain(|f| !(wild && f.is_dir()));
        if files.is_empty() && !optional {
            return Err(if wild {
                format!(
                    "Include: no matches for the wildcard in '{}' (IncludeOptional allows none)",
                    full.display()
                )
            } else {
                format!("Include: '{}' does not exist", full.display())
            });
        }
        if !optional && !wild {
            for f in &files {
                if !f.exists() {
                    return Err(format!("Include: '{}' does not exist", f.display()));
                }
            }
        }
        Ok(files)
    }
}

/// `proxy_fcgi_module`, `mod_proxy_fcgi.c` -> `proxy_fcgi`.
fn module_key(arg: &str) -> String {
    let a = arg.trim();
    if let Some(m) = a.strip_suffix("_module") {
        return m.to_ascii_lowercase();
    }
    let a = a.strip_suffix(".c").unwrap_or(a);
    let a = a.strip_prefix("mod_").unwrap_or(a);
    match a {
        "http_core" => "http".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn section_name(s: &str) -> String {
    s.trim_start()
        .split(|c: char| c.is_whitespace() || c == '>')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style name matching (`fnmatch` without flags): `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some(pi);
                    mark = si;
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, len)) = class(&p[pi..], s[si])
                        && ok
                    {
                        pi += len;
                        si += 1;
                        continue;
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some(st) => {
                pi = st + 1;
                mark += 1;
                si = mark;
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `p`: whether `c` is in it, and its length.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let neg = matches!(p.get(1), Some(b'!') | Some(b'^'));
    if neg {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != neg, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

/// `$NAME` and `${NAME}` from `vars` (the shell's simple expansion; unknown names are empty).
fn shell_expand(v: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, end) = if b.get(i + 1) == Some(&b'{') {
                match v[i + 2..].find('}') {
                    Some(j) => (&v[i + 2..i + 2 + j], i + 3 + j),
                    None => (&v[i + 2..], b.len()),
                }
            } else {
                let len = v[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                (&v[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                out.push('$');
                i += 1;
                continue;
            }
            if let Some((_, val)) = vars.iter().rev().find(|(k, _)| k == name) {
                out.push_str(val);
            }
            i = end;
        } else {
            let ch = v[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Lines joined at a trailing `\`, trimmed, without blank lines and comments: (first line
/// number, text).
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut acc = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if acc.is_empty() {
            start = i + 1;
        }
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            continue;
        }
        acc.push_str(raw);
        let t = acc.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push((start, t.to_owned()));
        }
        acc.clear();
    }
    let t = acc.trim();
    if !t.is_empty() && !t.starts_with('#') {
        out.push((start, t.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_forms() {
        assert!(fnmatch(b"*.conf", b"a.conf"));
        assert!(!fnmatch(b"*.conf", b"a.load"));
        assert!(fnmatch(b"*.load", b"x.load"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[!a-c]x", b"bx"));
        assert!(fnmatch(b"*", b""));
        assert!(!fnmatch(b"a*b", b"acbc"));
        assert!(fnmatch(b"a*b*c", b"axxbyyc"));
    }

    #[test]
    fn module_names() {
        assert_eq!(module_key("proxy_fcgi_module"), "proxy_fcgi");
        assert_eq!(module_key("mod_proxy_fcgi.c"), "proxy_fcgi");
        assert_eq!(module_key("http_core.c"), "http");
        assert_eq!(module_key("core.c"), "core");
    }

    #[test]
    fn shell_values() {
        let v = vec![("SUFFIX".to_owned(), "-x".to_owned())];
        assert_eq!(
            shell_expand("/var/run/apache2$SUFFIX/a.pid", &v),
            "/var/run/apache2-x/a.pid"
        );
        assert_eq!(shell_expand("${SUFFIX}y $NOPE.", &v), "-xy .");
    }
}
