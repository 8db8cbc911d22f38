//! A shrunk disagreement as a scenario file for `scenarios/found/`: the route configuration,
//! the one raw request, the oracle's behaviour as the expectation and the target's as the
//! mutant (so the file FAILs for a proxy that does what the target did).
//!
//! The scenario format requires a level and a requirement; the file carries placeholders
//! (`level = "COMPAT"`, Apache's behaviour without a specification behind it, and a requirement
//! naming the run) marked `TO FILL IN`, so that it loads and runs (a COMPAT failure fails a run
//! only with `--strict`) until a person picks the level and quotes the requirement.

use std::fmt::Write as _;

use super::cases::{Case, RouteConfig, compress_runs};
use super::compare::Diff;
use super::harness::Obs;

/// Marks what a person has to fill in.
pub const PLACEHOLDER: &str = "TO FILL IN";

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The scenario slug: the target and the kind in lower-case words, and a number.
pub fn slug(target: &str, kind: &str, n: usize) -> String {
    let mut s = String::new();
    for c in kind.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-');
    let s: String = s.chars().take(48).collect();
    format!("{target}-{}-{n}", s.trim_end_matches('-'))
}

/// The expectation of the oracle's behaviour for `d`, and the mutant with the target's, as
/// TOML (`[[expect.request]]` and `[[mutant]]`), or `None` when the kind has none.
fn expectation(d: &Diff, case: &Case, oracle: &Obs, target: &Obs, tname: &str) -> Option<String> {
    let mut t = String::from("[[expect.request]]\nrequests = \"case\"\n");
    let mutant;
    if d.kind.starts_with("status ") {
        let a = oracle.status?;
        let _ = writeln!(t, "status = [{a}]");
        mutant = match target.status {
            Some(b) => format!("set = {{ \"expect.request.0.status\" = [{b}] }}"),
            None => "set = { \"expect.request.0.outcome\" = [\"error\"] }".to_string(),
        };
    } else if let Some(rest) = d.kind.strip_prefix("param ") {
        let (name, how) = rest.rsplit_once(' ')?;
        let values = |o: &Obs| -> Vec<String> {
            o.backend
                .as_ref()
                .map(|b| {
                    b.params
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| v.replace("app2:9001", "app:9000"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (va, vb) = (values(oracle), values(target));
        let table = |v: &[String]| -> String {
            match v {
                [] => format!("{{ absent = [{}] }}", q(name)),
                [one] => format!(
                    "{{ equal = {{ {} = {} }}, unique = true }}",
                    q(name),
                    q(&compress_runs(one))
                ),
                _ => format!("{{ present = [{}] }}", q(name)),
            }
        };
        if how == "repeated" && va.len() > 1 && vb.len() == 1 {
            let _ = writeln!(t, "params = {{ present = [{}] }}", q(name));
            mutant = format!("set = {{ \"expect.request.0.params\" = {} }}", table(&vb));
        } else {
            let _ = writeln!(t, "params = {}", table(&va));
            mutant = format!("set = {{ \"expect.request.0.params\" = {} }}", table(&vb));
        }
        if let Some(s) = oracle.status {
            let _ = writeln!(t, "status = [{s}]");
        }
    } else if d.kind.starts_with("stdin") {
        let a = oracle.backend.as_ref()?;
        let b = target.backend.as_ref()?;
        let full = case.body_len() as u64;
        if a.stdin_len != full || !a.stdin_complete {
            return None;
        }
        let body: String = (0..full).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let cut: String = body.chars().take(b.stdin_len as usize).collect();
        let _ = writeln!(t, "stdin = {}", q(&compress_runs(&body)));
        mutant = format!("set = {{ \"expect.request.0.stdin\" = {} }}", q(&cut));
    } else if d.kind == "backend not reached" {
        t.push_str("served_by = [\"app\", \"app2\"]\n");
        mutant = "set = { \"expect.request.0.served_by\" = [\"none\"] }".to_string();
    } else if d.kind == "backend reached" {
        t.push_str("served_by = [\"none\"]\n");
        mutant = "set = { \"expect.request.0.served_by\" = [\"app\", \"app2\"] }".to_string();
    } else {
        return None;
    }
    let _ = write!(
        t,
        "\n[[mutant]]\nwhy = {}\n{mutant}\n",
        q(&format!("what {tname} does: {}", d.target))
    );
    Some(t)
}

/// The scenario file text.
#[allow(clippy::too_many_arguments)]
pub fn scenario(
    id: &str,
    oracle_name: &str,
    tname: &str,
    route: &RouteConfig,
    case: &Case,
    d: &Diff,
    oracle: &Obs,
    target: &Obs,
    seed: u64,
) -> Option<String> {
    let expect = expectation(d, case, oracle, target, tname)?;
    let mut t = String::new();
    let _ = write!(
        t,
        "# Found by `cargo xtask differ --seed {seed}` with {oracle_name} as the oracle, shrunk to one\n\
         # request. {oracle_name}: {}. {tname}: {}.\n\
         # {PLACEHOLDER}: `level` and `[requirement]` (placeholders keep the file loadable), and\n\
         # whether the expectation (the oracle's behaviour) is the right one.\n\
         id = {}\n\
         description = \"\"\"\n{}: {oracle_name} and {tname} disagree ({}) on route configuration {}.\n\
         {oracle_name}: {}. {tname}: {}.\n\"\"\"\n\
         level = \"COMPAT\" # {PLACEHOLDER}: COMPAT while the expectation is only what Apache does\n\n\
         [requirement]\n\
         quote = {}\n\
         source = \"differential run against {oracle_name} (cargo xtask differ)\"\n\
         section = {}\n\n",
        d.oracle,
        d.target,
        q(id),
        case.one_line()
            .replace('\\', "\\\\")
            .replace("\"\"\"", "\\\"\\\"\\\""),
        d.kind,
        route.name(),
        d.oracle,
        d.target,
        q(&format!(
            "{PLACEHOLDER}: the requirement this request checks"
        )),
        q(PLACEHOLDER),
    );
    t.push_str(&route.topology_toml());
    let _ = write!(
        t,
        "\n[[client]]\nname = \"c1\"\nconnection = \"per-request\"\ntimeout = \"10s\"\n\
         [[client.request]]\nlabel = \"case\"\ntarget = {}\nraw = {}\n",
        q(&compress_runs(&case.target)),
        q(&compress_runs(&case.raw()))
    );
    if case.body.early_close() {
        t.push_str("half_close = true\n");
    }
    t.push('\n');
    t.push_str(&expect);
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::super::cases::Body;
    use super::super::harness::Received;
    use super::*;
    use crate::scenario::Scenario;

    fn obs(status: u16, script: &str) -> Obs {
        Obs {
            status: Some(status),
            responses: 1,
            backend: Some(Received {
                params: vec![("SCRIPT_NAME".into(), script.into())],
                stdin_len: 0,
                stdin_hash: 0,
                stdin_complete: true,
                finished: true,
            }),
            note: None,
        }
    }

    /// A written file loads with the scenario loader, and its mutant is a different
    /// expectation.
    #[test]
    fn written_scenarios_load_and_carry_both_behaviours() {
        let case = Case {
            method: "GET".into(),
            target: "/app/a%2fb.php?x=\"1\"".into(),
            headers: vec![("X-Fold".into(), "a\r\n b".into())],
            body: Body::Length { size: 40, sent: 20 },
        };
        for (kind, a, b) in [
            ("status 200 -> 404", obs(200, "/a"), obs(404, "/a")),
            ("param SCRIPT_NAME value", obs(200, "/a"), obs(200, "/b")),
        ] {
            let d = Diff {
                kind: kind.into(),
                oracle: "x".into(),
                target: "y".into(),
            };
            let id = format!("found/{}", slug("nginx", kind, 1));
            let text = scenario(
                &id,
                "apache",
                "nginx",
                &RouteConfig::PLAIN,
                &case,
                &d,
                &a,
                &b,
                3,
            )
            .unwrap();
            let s = Scenario::parse(&text, "t").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(s.id, id);
            assert_eq!(s.mutants.len(), 1);
            assert!(text.contains(PLACEHOLDER));
            let m = Scenario::mutated(&text, "t", &s.mutants[0]).unwrap();
            assert_ne!(
                format!("{:?}", m.expect.requests[0]),
                format!("{:?}", s.expect.requests[0])
            );
            let raw = s.clients[0].requests[0].raw.as_deref().unwrap();
            assert_eq!(crate::scenario::repeat_runs(raw), case.raw());
        }
        assert_eq!(
            slug("ours", "param HTTP_X.DOT absent", 2),
            "ours-param-http-x-dot-absent-2"
        );
    }
}
