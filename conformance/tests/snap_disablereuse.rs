//! For every request of every scenario in `scenarios/disablereuse`: the CGI params the backend
//! received, as YAML snapshots (one `glob!` per test target, see tests/common).

mod common;

#[test]
fn params() {
    insta::glob!("../../scenarios", "disablereuse/*.toml", |path| {
        let (settings, received) = common::received(path);
        settings.bind(|| insta::assert_yaml_snapshot!(received));
    });
}
