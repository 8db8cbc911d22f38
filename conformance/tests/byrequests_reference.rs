//! The byrequests sequences written in the balance scenarios are recomputed here from the algorithm
//! as docs/reference/apache.md §6.2 describes it (independently of any proxy): every usable member
//! gains its lbfactor (loadfactor x 100) in credit, the one with strictly the most credit wins
//! (ties: configuration order) and pays the total. Hot spares (`R`) count as usable one for each
//! unusable member of the set, in configuration order (mod_proxy docs, `status`).

mod common;

use conformance::scenario::LbMethod;

/// The first `n` picks among members with these load factors (disabled ones are `None`).
fn byrequests(factors: &[Option<u32>], n: usize) -> Vec<usize> {
    let mut credit = vec![0i64; factors.len()];
    let mut picks = Vec::new();
    for _ in 0..n {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, f) in factors.iter().enumerate() {
            let Some(f) = f else { continue };
            credit[i] += i64::from(*f) * 100;
            total += i64::from(*f) * 100;
            if best.is_none_or(|b| credit[i] > credit[b]) {
                best = Some(i);
            }
        }
        let b = best.expect("a usable member");
        credit[b] -= total;
        picks.push(b);
    }
    picks
}

#[test]
fn documented_examples() {
    let names = |picks: Vec<usize>, n: &[&str]| -> String {
        picks.iter().map(|&i| n[i]).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        names(byrequests(&[Some(1), Some(1)], 4), &["a", "b"]),
        "a b a b"
    );
    assert_eq!(
        names(byrequests(&[Some(3), Some(1)], 8), &["a", "b"]),
        "a a b a a a b a"
    );
    let seventy = byrequests(&[Some(70), Some(30)], 10);
    assert_eq!(seventy.iter().filter(|&&i| i == 0).count(), 7);
    assert_eq!(
        names(
            byrequests(&[Some(25), None, Some(25), Some(25)], 6),
            &["a", "b", "c", "d"]
        ),
        "a c d a c d"
    );
}

#[test]
fn balance_scenarios_match_the_algorithm() {
    let mut checked = 0;
    for f in common::all_scenarios() {
        let s = &f.scenario;
        if !s.faults.is_empty() || s.clients.len() != 1 {
            continue;
        }
        let [b] = s.topology.balancers.as_slice() else {
            continue;
        };
        // Sessions routed to a member move the credits too: not this algorithm alone.
        if b.method != LbMethod::Byrequests || b.sticky_session.is_some() {
            continue;
        }
        for seq in &s.expect.sequences {
            // Members usable for normal balancing: lowest lbset, not disabled, stopped,
            // draining or standby; then as many usable spares as there are unusable members.
            let lowest = b.members.iter().map(|m| m.lbset).min().unwrap_or(0);
            let unusable = |m: &conformance::scenario::Member| m.status.contains(['D', 'S', 'N']);
            let kind = |m: &conformance::scenario::Member| {
                (m.status.contains('R'), m.status.contains('H'))
            };
            let set = || b.members.iter().filter(|m| m.lbset == lowest);
            let mut places = set()
                .filter(|m| kind(m) == (false, false) && unusable(m))
                .count();
            let factors: Vec<Option<u32>> = b
                .members
                .iter()
                .map(|m| {
                    let usable = m.lbset == lowest && !unusable(m);
                    let on = match kind(m) {
                        (false, false) => usable,
                        (true, _) if usable && places > 0 => {
                            places -= 1;
                            true
                        }
                        _ => false,
                    };
                    on.then_some(m.loadfactor)
                })
                .collect();
            let want: Vec<String> = byrequests(&factors, seq.served_by.len())
                .into_iter()
                .map(|i| b.members[i].backend.clone())
                .collect();
            assert_eq!(seq.served_by, want, "{}: sequence {}", s.id, seq.requests);
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} byrequests sequences found");
}
