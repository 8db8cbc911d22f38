//! `fcgi-conformance`: the conformance suite as an installed program
//! (`cargo install --path conformance`), its scenarios, the peers' expected deviations and the
//! reference documents built in (`build.rs`).

use std::process::ExitCode;

use conformance::home::{Embedded, Home};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

const EMBEDDED: Embedded = Embedded {
    scenarios: embedded::SCENARIOS,
    expected: embedded::EXPECTED,
    docs: embedded::DOCS,
};

fn main() -> ExitCode {
    conformance::cli::main(&Home::Installed(EMBEDDED))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary carries every scenario and deviation list of the checkout it was built from,
    /// and they load as they do from the files.
    #[test]
    fn the_built_in_files_are_the_checkout_s() {
        let root = conformance::sim::suite::workspace_root();
        let on_disk = conformance::home::read_dir_sources(&root.join("scenarios")).unwrap();
        let home = Home::Installed(EMBEDDED);
        let built_in = home.builtin().unwrap();
        assert_eq!(built_in.len(), on_disk.len());
        for (b, d) in built_in.iter().zip(&on_disk) {
            assert_eq!(b.id, d.id);
            assert_eq!(b.text, d.text, "{:?}", b.id);
        }
        let loaded = conformance::sim::suite::load_sources(built_in, &home)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(loaded.len(), on_disk.len());
        let nginx = home.expected("nginx").unwrap();
        assert!(!nginx.deviations.is_empty());
        assert!(home.doc("docs/reference/apache.md").is_some());
        assert!(home.doc("docs/reference/nope.md").is_none());
    }

    /// `fcgi-conformance differ` outside a checkout uses the known differences built in.
    #[test]
    fn differ_reads_its_known_differences_built_in() {
        use conformance::differ::{DifferArgs, KnownSource, Setup};
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            args: DifferArgs,
        }
        let args = <Cmd as clap::Parser>::parse_from(["differ"]).args;
        let setup = Setup::new(&Home::Installed(EMBEDDED), &args);
        assert!(matches!(setup.expected, KnownSource::BuiltIn(_)));
        let ours = setup.expected.load("ours").unwrap();
        assert!(
            ours.file
                .as_deref()
                .is_some_and(|f| f.ends_with("(built in)"))
        );
        let on_disk =
            KnownSource::Dir(conformance::sim::suite::workspace_root().join("scenarios/expected"))
                .load("ours")
                .unwrap();
        assert_eq!(ours.len(), on_disk.len());
        assert!(ours.len() > 5);
    }
}
