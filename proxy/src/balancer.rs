//! `balancer://` pools at run time: member selection (byrequests, bybusyness), lbsets, hot
//! standbys, error state with `retry`, forced recovery (docs/reference/apache.md §6.1 to §6.4).
//!
//! Selection follows Apache's order: lbsets ascending; within a set, usable normal members are
//! compared by the method; hot spares and standbys serve only when no normal member of the set
//! can; a member in error is retried once its `retry` has passed. If every member is in error
//! and `forcerecovery` is on, all are released at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Balancer, LbMethod, Member};

/// One member's run-time state.
#[derive(Debug)]
pub struct MemberState {
    /// Index of the member's worker in the proxy's worker table.
    pub worker: usize,
    /// Label for logs and metrics: the member URL.
    pub name: String,
    lbfactor: i64,
    lbset: u8,
    standby: bool,
    /// Never selected (D, S, or drained).
    off: bool,
    ignore_errors: bool,
    retry: Duration,
    /// Requests this member was picked for.
    pub elected: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    /// byrequests credit (`lbstatus`).
    credit: Vec<i64>,
    /// In-flight requests (`busy`).
    busy: Vec<u64>,
    /// In error until this instant.
    error_until: Vec<Option<Instant>>,
}

#[derive(Debug)]
pub struct BalancerState {
    pub name: String,
    method: LbMethod,
    pub members: Vec<MemberState>,
    shared: Mutex<Shared>,
    pub max_attempts: usize,
    force_recovery: bool,
}

/// Holds a member's in-flight count up while a request uses it.
#[derive(Debug)]
pub struct BusyGuard {
    b: Arc<BalancerState>,
    member: usize,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut s = self.b.lock();
        s.busy[self.member] = s.busy[self.member].saturating_sub(1);
    }
}

/// A member's state as seen from outside (status page, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub name: String,
    pub lbset: u8,
    pub lbfactor: i64,
    pub standby: bool,
    pub off: bool,
    pub in_error: bool,
    pub busy: u64,
    pub elected: u64,
}

impl BalancerState {
    /// `workers[i]` is the worker index of member `i`.
    pub fn new(
        cfg: &Balancer,
        workers: Vec<usize>,
        default_retry: impl Fn(&Member) -> Duration,
    ) -> Self {
        let n = cfg.members.len();
        let now = Instant::now();
        let members = cfg
            .members
            .iter()
            .zip(workers)
            .map(|(m, worker)| MemberState {
                worker,
                name: m.url.name(),
                lbfactor: i64::from(m.loadfactor.lbfactor()),
                lbset: m.lbset,
                standby: m.status.hot_standby || m.status.hot_spare,
                off: m.status.disabled || m.status.stopped || m.status.drain,
                ignore_errors: m.status.ignore_errors,
                retry: default_retry(m),
                elected: AtomicU64::new(0),
            })
            .collect();
        let error_until = cfg
            .members
            .iter()
            .map(|m| m.status.in_error.then(|| now + default_retry(m)))
            .collect();
        BalancerState {
            name: cfg.url_name(),
            method: cfg.lbmethod,
            members,
            shared: Mutex::new(Shared {
                credit: vec![0; n],
                busy: vec![0; n],
                error_until,
            }),
            max_attempts: cfg.max_attempts.map_or(n.saturating_sub(1), |m| m as usize),
            force_recovery: cfg.force_recovery,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Picks a member, skipping `tried` (members that already failed this request), and counts
    /// it busy until the guard drops.
    pub fn pick(self: &Arc<Self>, tried: &[usize]) -> Option<(usize, BusyGuard)> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut choice = self.select(&mut s, tried, now);
        if choice.is_none() && self.force_recovery && self.all_in_error(&s, now) {
            tracing::warn!(balancer = %self.name, "all members in error: forcing recovery");
            for e in s.error_until.iter_mut() {
                *e = None;
            }
            choice = self.select(&mut s, tried, now);
        }
        let i = choice?;
        s.busy[i] += 1;
        self.members[i].elected.fetch_add(1, Ordering::Relaxed);
        drop(s);
        Some((
            i,
            BusyGuard {
                b: self.clone(),
                member: i,
            },
        ))
    }

    fn all_in_error(&self, s: &Shared, now: Instant) -> bool {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.off)
            .all(|(i, _)| s.error_until[i].is_some_and(|t| t > now))
    }

    fn select(&self, s: &mut Shared, tried: &[usize], now: Instant) -> Option<usize> {
        let mut sets: Vec<u8> = self.members.iter().map(|m| m.lbset).collect();
        sets.sort_unstable();
        sets.dedup();
        for set in sets {
            for standby in [false, true] {
                let candidates: Vec<usize> = (0..self.members.len())
                    .filter(|&i| {
                        let m = &self.members[i];
                        m.lbset == set
                            && m.standby == standby
                            && !m.off
                            && !tried.contains(&i)
                            && Self::usable(s, i, now)
                    })
                    .collect();
                if let Some(best) = self.best(s, &candidates) {
                    return Some(best);
                }
            }
        }
        None
    }

    /// Not in error, or its `retry` has passed (then the error is cleared: Apache's
    /// `ap_proxy_retry_worker`).
    fn usable(s: &mut Shared, i: usize, now: Instant) -> bool {
        match s.error_until[i] {
            Some(t) if t > now => false,
            Some(_) => {
                s.error_until[i] = None;
                true
            }
            None => true,
        }
    }

    /// The method's choice among `candidates`, with the credit step: every candidate gains its
    /// lbfactor, the winner pays the total (ties: first in config order).
    fn best(&self, s: &mut Shared, candidates: &[usize]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let mut total = 0;
        let mut best: Option<usize> = None;
        for &i in candidates {
            s.credit[i] += self.members[i].lbfactor;
            total += self.members[i].lbfactor;
            let better = match best {
                None => true,
                Some(b) => match self.method {
                    LbMethod::Byrequests => s.credit[i] > s.credit[b],
                    LbMethod::Bybusyness => {
                        s.busy[i] < s.busy[b]
                            || (s.busy[i] == s.busy[b] && s.credit[i] > s.credit[b])
                    }
                },
            };
            if better {
                best = Some(i);
            }
        }
        let b = best?;
        s.credit[b] -= total;
        Some(b)
    }

    /// The member failed in a way that says it is down: keep it out for `retry`.
    pub fn mark_error(&self, member: usize) {
        let m = &self.members[member];
        if m.ignore_errors {
            return;
        }
        tracing::warn!(balancer = %self.name, member = %m.name, "member in error for {:?}", m.retry);
        self.lock().error_until[member] = Some(Instant::now() + m.retry);
    }

    pub fn view(&self) -> Vec<MemberView> {
        let now = Instant::now();
        let s = self.lock();
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberView {
                name: m.name.clone(),
                lbset: m.lbset,
                lbfactor: m.lbfactor,
                standby: m.standby,
                off: m.off,
                in_error: s.error_until[i].is_some_and(|t| t > now),
                busy: s.busy[i],
                elected: m.elected.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadFactor, MemberStatus, WorkerUrl};

    fn balancer(specs: &[(u32, u8, &str)], method: LbMethod) -> Arc<BalancerState> {
        let mut b = Balancer::new("t");
        b.lbmethod = method;
        for (i, (lf, set, status)) in specs.iter().enumerate() {
            let mut m =
                Member::new(WorkerUrl::parse(&format!("fcgi://127.0.0.1:{}", 9000 + i)).unwrap());
            m.loadfactor = LoadFactor::from_hundredths(lf * 100).unwrap();
            m.lbset = *set;
            m.status = MemberStatus::parse(status).unwrap();
            b.members.push(m);
        }
        let n = b.members.len();
        Arc::new(BalancerState::new(&b, (0..n).collect(), |_| {
            Duration::from_secs(60)
        }))
    }

    fn sequence(b: &Arc<BalancerState>, n: usize) -> String {
        (0..n)
            .map(|_| {
                let (i, _g) = b.pick(&[]).unwrap();
                (b'a' + i as u8) as char
            })
            .collect()
    }

    #[test]
    fn equal_weights_alternate() {
        let b = balancer(&[(1, 0, ""), (1, 0, "")], LbMethod::Byrequests);
        assert_eq!(sequence(&b, 6), "ababab");
    }

    #[test]
    fn weights_3_to_1_follow_the_credit_algorithm() {
        // a: +300 -400 ... worked by hand from docs/reference/apache.md §6.2:
        // credits (a,b): (300,100)->a (-100,100); (200,200)->a tie first (−200,200);
        // (100,300)->b (100,-100); (400,0)->a (0,0); repeat.
        let b = balancer(&[(3, 0, ""), (1, 0, "")], LbMethod::Byrequests);
        assert_eq!(sequence(&b, 8), "aabaaaba");
    }

    #[test]
    fn disabled_member_is_skipped() {
        let b = balancer(
            &[(1, 0, ""), (1, 0, "D"), (1, 0, ""), (1, 0, "")],
            LbMethod::Byrequests,
        );
        assert_eq!(sequence(&b, 6), "acdacd");
    }

    #[test]
    fn hot_standby_serves_only_when_the_others_are_down() {
        let b = balancer(&[(1, 0, ""), (1, 0, "+H")], LbMethod::Byrequests);
        assert_eq!(sequence(&b, 3), "aaa");
        b.mark_error(0);
        assert_eq!(sequence(&b, 2), "bb");
    }

    #[test]
    fn lower_lbset_first() {
        let b = balancer(&[(1, 1, ""), (1, 0, "")], LbMethod::Byrequests);
        assert_eq!(sequence(&b, 3), "bbb");
        b.mark_error(1);
        assert_eq!(sequence(&b, 2), "aa");
    }

    #[test]
    fn bybusyness_avoids_the_busy_member() {
        let b = balancer(&[(1, 0, ""), (1, 0, "")], LbMethod::Bybusyness);
        let (first, _hold) = b.pick(&[]).unwrap();
        assert_eq!(first, 0);
        for _ in 0..3 {
            let (i, _g) = b.pick(&[]).unwrap();
            assert_eq!(i, 1, "member 0 is busy");
        }
    }

    #[test]
    fn tried_members_are_excluded_and_all_down_recovers() {
        let b = balancer(&[(1, 0, ""), (1, 0, "")], LbMethod::Byrequests);
        assert_eq!(b.pick(&[0]).map(|p| p.0), Some(1));
        assert!(b.pick(&[0, 1]).is_none());
        b.mark_error(0);
        b.mark_error(1);
        // forcerecovery: all in error are released at once.
        assert!(b.pick(&[]).is_some());
    }
}
