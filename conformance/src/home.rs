//! Where the suite's own files come from: a checkout of the repository (`cargo xtask`, the
//! tests), or the copies an installed `fcgi-conformance` binary carries (the scenarios, the
//! expected deviations of each peer, and the reference documents their requirements quote).
//!
//! Everything that used to read `scenarios/` or `docs/reference/` from the workspace goes
//! through [`Home`], so the installed binary needs nothing but itself (and the proxies it
//! runs).

use std::path::{Path, PathBuf};

use crate::report::Expected;

/// Files built into a binary: `(path, text)` pairs, paths relative to the `scenarios/`
/// directory (scenarios, `expected/<target>.toml`) or to the workspace root (documents).
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// `cgi/meta-variables.toml`, ...
    pub scenarios: &'static [(&'static str, &'static str)],
    /// `nginx.toml`, `apache.php-fpm.toml`, ...
    pub expected: &'static [(&'static str, &'static str)],
    /// `docs/reference/apache.md`, ...
    pub docs: &'static [(&'static str, &'static str)],
}

/// The suite's files and the directory relative paths on the command line start from.
#[derive(Debug, Clone)]
pub enum Home {
    /// The workspace root of a checkout: files are read from it, reports go to its `target/`.
    Repo(PathBuf),
    /// An installed binary: files built in, paths relative to the current directory.
    Installed(Embedded),
}

/// A scenario's text and where it came from, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The file (for a built-in scenario: `scenarios/<area>/<slug>.toml`, which is not read).
    pub path: PathBuf,
    /// The id the scenario must carry, when the path says it.
    pub id: Option<String>,
    pub text: String,
    /// Built into the binary.
    pub builtin: bool,
}

impl Source {
    /// How errors name it: the path, marked when built in.
    pub fn origin(&self) -> String {
        if self.builtin {
            format!("{} (built in)", self.path.display())
        } else {
            self.path.display().to_string()
        }
    }
}

impl Home {
    /// The checkout this crate was built from (tests, `cargo xtask`).
    pub fn workspace() -> Home {
        Home::Repo(crate::sim::suite::workspace_root())
    }

    /// Relative paths on the command line start here.
    pub fn base(&self) -> PathBuf {
        match self {
            Home::Repo(root) => root.clone(),
            Home::Installed(_) => PathBuf::from("."),
        }
    }

    /// How the user runs the suite's commands, for messages: `cargo xtask` or
    /// `fcgi-conformance`.
    pub fn command(&self) -> &'static str {
        match self {
            Home::Repo(_) => "cargo xtask",
            Home::Installed(_) => "fcgi-conformance",
        }
    }

    /// Where reports go by default.
    pub fn default_out(&self) -> PathBuf {
        match self {
            Home::Repo(root) => root.join("target/conformance"),
            Home::Installed(_) => PathBuf::from("conformance-report"),
        }
    }

    /// The suite's own scenarios, sorted by path.
    pub fn builtin(&self) -> Result<Vec<Source>, String> {
        match self {
            Home::Repo(root) => read_dir_sources(&root.join("scenarios")),
            Home::Installed(e) if e.scenarios.is_empty() => Err(
                "this fcgi-conformance was built without its scenarios (the crate was built \
                 outside the repository, where ../scenarios does not exist): build it with \
                 `cargo install --path conformance` from a checkout, or give scenario files \
                 with --scenarios DIR"
                    .into(),
            ),
            Home::Installed(e) => {
                let mut out: Vec<Source> = e
                    .scenarios
                    .iter()
                    .map(|(rel, text)| Source {
                        path: Path::new("scenarios").join(rel),
                        id: rel.strip_suffix(".toml").map(str::to_string),
                        text: (*text).to_string(),
                        builtin: true,
                    })
                    .collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// A document of the repository that requirements quote (`docs/reference/apache.md`):
    /// `None` when it is not one.
    pub fn doc(&self, file: &str) -> Option<Result<String, String>> {
        match self {
            Home::Repo(root) => {
                let path = root.join(file);
                path.is_file().then(|| {
                    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
                })
            }
            Home::Installed(e) => e
                .docs
                .iter()
                .find(|(p, _)| *p == file)
                .map(|(_, t)| Ok((*t).to_string())),
        }
    }

    /// The deviations expected of a target (`scenarios/expected/<name>.toml`).
    pub fn expected(&self, name: &str) -> Result<Expected, String> {
        match self {
            Home::Repo(root) => Expected::load(&root.join("scenarios/expected"), name),
            Home::Installed(e) => {
                let file = format!("{name}.toml");
                match e.expected.iter().find(|(p, _)| *p == file) {
                    Some((_, text)) => toml::from_str(text)
                        .map_err(|err| format!("scenarios/expected/{file} (built in): {err}")),
                    None => Ok(Expected::default()),
                }
            }
        }
    }
}

/// Every scenario file under `dir` (recursively, `expected/` left out), with its id taken from
/// the path below `dir`.
pub fn read_dir_sources(dir: &Path) -> Result<Vec<Source>, String> {
    let files = crate::scenario::find_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    files
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let id = if dir.is_dir() {
                path.strip_prefix(dir).ok().and_then(|rel| {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    parts.join("/").strip_suffix(".toml").map(str::to_string)
                })
            } else {
                crate::scenario::id_from_path(&path)
            };
            Ok(Source {
                path,
                id,
                text,
                builtin: false,
            })
        })
        .collect()
}

/// Scenario files given on the command line (files or directories): their ids are checked
/// against their paths when a directory named `scenarios` is above them.
pub fn read_path_sources(path: &Path) -> Result<Vec<Source>, String> {
    let files =
        crate::scenario::find_files(path).map_err(|e| format!("{}: {e}", path.display()))?;
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(Source {
                id: crate::scenario::id_from_path(&p),
                path: p,
                text,
                builtin: false,
            })
        })
        .collect()
}

/// Whether a built-in or added scenario `id` is picked by `selector`: an id, an area, or
/// either under `scenarios/` (`scenarios/security`, `security/s1-httpoxy-any-case.toml`).
pub fn selects(selector: &str, id: &str) -> bool {
    let s = selector.trim_end_matches('/');
    let s = s.strip_prefix("./").unwrap_or(s);
    let s = s.strip_prefix("scenarios/").unwrap_or(s);
    let s = s.strip_suffix(".toml").unwrap_or(s);
    s == "scenarios" || id == s || id.strip_prefix(s).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_ids_and_areas() {
        for (sel, id, want) in [
            ("security", "security/s1-httpoxy-any-case", true),
            ("scenarios/security/", "security/s1-httpoxy-any-case", true),
            (
                "security/s1-httpoxy-any-case.toml",
                "security/s1-httpoxy-any-case",
                true,
            ),
            ("scenarios", "cgi/meta-variables", true),
            ("sec", "security/s1-httpoxy-any-case", false),
            ("cgi/meta", "cgi/meta-variables", false),
        ] {
            assert_eq!(selects(sel, id), want, "{sel} {id}");
        }
    }

    #[test]
    fn areas_ids_and_levels_pick_scenarios() {
        use crate::scenario::Level;
        use crate::sim::suite::{at_levels, select};
        let home = Home::workspace();
        let cgi = select(&home, &["cgi".into()], &[], None).unwrap();
        assert!(cgi.len() > 5 && cgi.iter().all(|f| f.scenario.area() == "cgi"));
        let compat = at_levels(cgi.clone(), &[Level::Compat]);
        assert!(!compat.is_empty() && compat.len() < cgi.len());
        assert!(compat.iter().all(|f| f.scenario.level == Level::Compat));
        let one = select(
            &home,
            &["scenarios/cgi/meta-variables.toml".into()],
            &[],
            None,
        );
        assert_eq!(one.unwrap().len(), 1);
        let e = select(&home, &["cgi/nope".into()], &[], None).unwrap_err();
        assert!(
            e[0].contains("cgi/nope") && e[0].contains("explain"),
            "{e:?}"
        );
    }

    #[test]
    fn added_scenarios_join_the_built_in_ones_and_are_checked() {
        use crate::sim::suite::select;
        let home = Home::workspace();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("local")).unwrap();
        let mine = dir.path().join("local/mine.toml");
        std::fs::write(&mine, crate::author::template("local/mine")).unwrap();
        let added = [dir.path().to_path_buf()];
        let all = select(&home, &[], &added, None).unwrap();
        let builtin = home.builtin().unwrap().len();
        assert_eq!(all.len(), builtin + 1);
        let picked = select(&home, &["local".into()], &added, None).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].scenario.id, "local/mine");
        // The id must be the path below the directory.
        std::fs::write(&mine, crate::author::template("local/other")).unwrap();
        let e = select(&home, &[], &added, None).unwrap_err();
        assert!(
            e.iter().any(|e| e.contains("does not match the path")),
            "{e:?}"
        );
        // A mistyped document of the suite is an error, not free text.
        let text = crate::author::template("local/mine").replace(
            "source = \"RFC 3875\"",
            "source = \"docs/reference/apahce.md\"",
        );
        std::fs::write(&mine, text).unwrap();
        let e = select(&home, &[], &added, None).unwrap_err();
        assert!(e.iter().any(|e| e.contains("names no document")), "{e:?}");
        // An id the suite already has is refused.
        std::fs::create_dir_all(dir.path().join("cgi")).unwrap();
        std::fs::remove_file(&mine).unwrap();
        let copy = std::fs::read_to_string(
            crate::sim::suite::scenarios_dir().join("cgi/meta-variables.toml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("cgi/meta-variables.toml"), copy).unwrap();
        let e = select(&home, &[], &added, None).unwrap_err();
        assert!(e.iter().any(|e| e.contains("ids must be unique")), "{e:?}");
    }

    #[test]
    fn a_directory_gives_ids_from_the_paths_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("local")).unwrap();
        std::fs::write(dir.path().join("local/mine.toml"), "x").unwrap();
        let found = read_dir_sources(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id.as_deref(), Some("local/mine"));
    }
}
