//! `balancer://` pools at run time, as mod_proxy_balancer chooses a member: byrequests and
//! bybusyness, lbsets, hot standbys and spares, sticky sessions, error state with `retry`, forced
//! recovery (docs/reference/apache.md §6).
//!
//! 1. If every member is in error and `forcerecovery` is on, all are released at once.
//! 2. Sticky sessions (`find_session_route`): the request's session value comes from the URL
//!    path parameter `PARAM=value`, else from the cookie `COOKIE`; the part after the first
//!    separator (`.`) is the route. The member with that `route` is chosen if usable, first
//!    among the members that are not hot standbys, then among the standbys; an unusable one
//!    with a `redirect` hands the request to the member whose route that is. Drained members
//!    (`N`) still take the sessions routed to them.
//! 3. Without a session member, and unless `nofailover` turns a session route naming a member
//!    into a 503, the method chooses (`ap_proxy_balancer_get_best_worker`): lbsets in ascending
//!    order; within a set the usable normal members are compared; each hot spare (`R`) takes the
//!    place of one unusable member of its set (disabled, stopped, draining, in error), so `n`
//!    unusable members let the first `n` usable spares compete; hot standbys (`H`) serve only
//!    when nothing else of the set can.
//! 4. When no member is usable and the balancer has a `timeout`, the request waits for one, up to
//!    that long, trying again every hundredth of it as Apache does, then gets 503.
//!
//! A member in error is usable again once its `retry` has passed. Members that already failed
//! this request count as unusable for it.

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
    /// `route` (empty when none): sessions with this route come here.
    pub route: String,
    /// `redirect` (empty when none): the route that takes this member's sessions while it is
    /// unusable.
    redirect: String,
    lbfactor: i64,
    lbset: u8,
    /// `H`: used only when nothing else in its lbset is.
    standby: bool,
    /// `R`: takes the place of one unusable member of its lbset.
    spare: bool,
    /// `D` or `S`: never usable.
    disabled: bool,
    /// `N`: only for sessions routed to it.
    drain: bool,
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

/// How a sticky balancer reads a request's session (`stickysession`, `stickysessionsep`,
/// `scolonpathdelim`, `nofailover`).
#[derive(Debug, Clone)]
struct Sticky {
    cookie: Vec<u8>,
    param: Vec<u8>,
    separator: Option<u8>,
    semicolon: bool,
    nofailover: bool,
}

/// The session a request names, as Apache reports it in `BALANCER_SESSION_STICKY` and
/// `BALANCER_SESSION_ROUTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The name the value was found under: the URL parameter's or the cookie's.
    pub sticky: String,
    /// The route: the value after the separator (may be empty).
    pub route: Vec<u8>,
}

/// A chosen member.
#[derive(Debug)]
pub struct Picked {
    pub member: usize,
    /// Holds the member's in-flight count up while the request uses it.
    pub guard: BusyGuard,
    /// The balancer has sticky sessions and the request did not go to the member its session
    /// named (no session, an unusable member, a redirect): `BALANCER_ROUTE_CHANGED=1`.
    pub route_changed: bool,
}

/// Why no member was chosen (both answer 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMember {
    /// The session route names a member that cannot take the request, and `nofailover` is on.
    SessionBroken,
    /// No member is usable (after the balancer's `timeout`, if it has one).
    NoneUsable,
}

#[derive(Debug)]
pub struct BalancerState {
    pub name: String,
    method: LbMethod,
    pub members: Vec<MemberState>,
    shared: Mutex<Shared>,
    pub max_attempts: usize,
    force_recovery: bool,
    sticky: Option<Sticky>,
    /// The balancer's `timeout`: how long a request waits for a usable member.
    wait: Option<Duration>,
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
    pub route: String,
    pub lbset: u8,
    pub lbfactor: i64,
    pub standby: bool,
    pub spare: bool,
    /// Disabled, stopped or draining: not chosen by the method.
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
                route: m.route.clone().unwrap_or_default(),
                redirect: m.redirect.clone().unwrap_or_default(),
                lbfactor: i64::from(m.loadfactor.lbfactor()),
                lbset: m.lbset,
                standby: m.status.hot_standby,
                spare: m.status.hot_spare,
                disabled: m.status.disabled || m.status.stopped,
                drain: m.status.drain,
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
        let sticky = cfg.sticky_names().map(|(cookie, param)| Sticky {
            cookie: cookie.as_bytes().to_vec(),
            param: param.as_bytes().to_vec(),
            separator: cfg
                .sticky_session_sep
                .0
                .and_then(|c| u8::try_from(u32::from(c)).ok()),
            semicolon: cfg.scolon_path_delim,
            nofailover: cfg.nofailover,
        });
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
            sticky,
            wait: cfg.timeout.filter(|t| !t.is_zero()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the balancer has sticky sessions.
    pub fn is_sticky(&self) -> bool {
        self.sticky.is_some()
    }

    /// The session a request names: `filename` is the balancer URL with the request's path as
    /// routed (`balancer://name/path`, Apache's `r->filename` after `proxy:`), searched for
    /// `PARAM=value`, then the `Cookie` headers (joined with `, ` as Apache merges them) for
    /// `COOKIE=value`. None without sticky sessions, without a value, or when the value has no
    /// separator.
    pub fn session(&self, filename: &[u8], headers: &http::HeaderMap) -> Option<Session> {
        self.sticky.as_ref()?;
        let mut cookies = headers.get_all(http::header::COOKIE).iter();
        let first = cookies.next().map(http::HeaderValue::as_bytes);
        let mut joined = Vec::new();
        let cookie = match (first, cookies.next()) {
            (Some(a), Some(b)) => {
                joined.extend_from_slice(a);
                for v in std::iter::once(b).chain(cookies) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v.as_bytes());
                }
                Some(joined.as_slice())
            }
            (first, _) => first,
        };
        self.session_in(filename, cookie)
    }

    /// [`Self::session`] with the `Cookie` header's value.
    fn session_in(&self, filename: &[u8], cookie: Option<&[u8]>) -> Option<Session> {
        let st = self.sticky.as_ref()?;
        let (name, value) = match path_param(filename, &st.param, st.semicolon) {
            Some(v) => (&st.param, v),
            None => (
                &st.cookie,
                cookie.and_then(|c| cookie_param(c, &st.cookie))?,
            ),
        };
        let route = match st.separator {
            Some(sep) => {
                let at = value.iter().position(|&b| b == sep)?;
                &value[at + 1..]
            }
            None => value,
        };
        Some(Session {
            sticky: String::from_utf8_lossy(name).into_owned(),
            route: route.to_vec(),
        })
    }

    /// Picks a member for a request with `session` (from [`Self::session`]), skipping `tried`
    /// (members that already failed this request), and counts it busy until the guard drops.
    /// Never waits: see [`Self::choose`].
    pub fn pick(
        self: &Arc<Self>,
        session: Option<&Session>,
        tried: &[usize],
    ) -> Result<Picked, NoMember> {
        let now = Instant::now();
        let mut s = self.lock();
        if self.force_recovery && self.all_in_error(&s, now) {
            tracing::warn!(balancer = %self.name, "all members in error: forcing recovery");
            for e in s.error_until.iter_mut() {
                *e = None;
            }
        }
        let route = session
            .map(|x| x.route.as_slice())
            .filter(|r| !r.is_empty());
        if let Some(route) = route
            && let Some(i) = self.route_member(&mut s, route, tried, now, 1)
        {
            self.sticky_credit(&mut s, i, now);
            let changed = self.members[i].route.as_bytes() != route;
            return Ok(self.elect(&mut s, i, changed));
        }
        if let (Some(st), Some(session)) = (&self.sticky, session)
            && st.nofailover
            && self
                .members
                .iter()
                .any(|m| !m.route.is_empty() && m.route.as_bytes() == session.route)
        {
            tracing::warn!(balancer = %self.name, route = %String::from_utf8_lossy(&session.route), "the session's member cannot take the request (nofailover)");
            return Err(NoMember::SessionBroken);
        }
        match self.select(&mut s, tried, now) {
            Some(i) => Ok(self.elect(&mut s, i, self.sticky.is_some())),
            None => Err(NoMember::NoneUsable),
        }
    }

    /// [`Self::pick`], and when no member is usable and the balancer has a `timeout`, waits for
    /// one: tries again every hundredth of the timeout (mod_proxy_balancer's
    /// `find_best_worker`), by the method alone, until the timeout has passed.
    pub async fn choose(
        self: &Arc<Self>,
        session: Option<&Session>,
        tried: &[usize],
    ) -> Result<Picked, NoMember> {
        let first = self.pick(session, tried);
        let (Err(NoMember::NoneUsable), Some(wait)) = (&first, self.wait) else {
            if let Err(NoMember::NoneUsable) = first {
                tracing::warn!(balancer = %self.name, "no usable member");
            }
            return first;
        };
        let step = (wait / 100).max(Duration::from_millis(1));
        let mut waited = Duration::ZERO;
        while waited < wait {
            tokio::time::sleep(step).await;
            let picked = {
                let now = Instant::now();
                let mut s = self.lock();
                self.select(&mut s, tried, now)
                    .map(|i| self.elect(&mut s, i, self.sticky.is_some()))
            };
            if let Some(p) = picked {
                return Ok(p);
            }
            waited += step;
        }
        tracing::warn!(balancer = %self.name, "no usable member within {wait:?}");
        Err(NoMember::NoneUsable)
    }

    fn elect(self: &Arc<Self>, s: &mut Shared, i: usize, route_changed: bool) -> Picked {
        s.busy[i] += 1;
        self.members[i].elected.fetch_add(1, Ordering::Relaxed);
        Picked {
            member: i,
            guard: BusyGuard {
                b: self.clone(),
                member: i,
            },
            route_changed,
        }
    }

    /// Every member in error (none whose `retry` has passed): Apache's `force_recovery` looks
    /// at every member, disabled ones too.
    fn all_in_error(&self, s: &Shared, now: Instant) -> bool {
        s.error_until.iter().all(|e| e.is_some_and(|t| t > now))
    }

    /// Not disabled or stopped, not tried by this request, and not in error or its `retry` has
    /// passed (then the error is cleared: Apache's `ap_proxy_retry_worker`). Draining is not
    /// looked at here.
    fn usable(&self, s: &mut Shared, i: usize, tried: &[usize], now: Instant) -> bool {
        if self.members[i].disabled || tried.contains(&i) {
            return false;
        }
        match s.error_until[i] {
            Some(t) if t > now => false,
            Some(_) => {
                s.error_until[i] = None;
                true
            }
            None => true,
        }
    }

    /// The member whose route is `route` (`find_route_worker`): the first usable one among
    /// the members that are not standbys, then among the standbys; an unusable one's `redirect`
    /// is followed (at most once per member, so redirects cannot loop).
    fn route_member(
        &self,
        s: &mut Shared,
        route: &[u8],
        tried: &[usize],
        now: Instant,
        depth: usize,
    ) -> Option<usize> {
        for standbys in [false, true] {
            for i in 0..self.members.len() {
                let m = &self.members[i];
                if m.standby != standbys || m.route.is_empty() || m.route.as_bytes() != route {
                    continue;
                }
                if self.usable(s, i, tried, now) {
                    return Some(i);
                }
                if !m.redirect.is_empty()
                    && depth < self.members.len()
                    && let Some(r) =
                        self.route_member(s, m.redirect.as_bytes(), tried, now, depth + 1)
                {
                    return Some(r);
                }
            }
        }
        None
    }

    /// A session's member counts in the credit scheme: every usable member gains its lbfactor,
    /// the chosen one pays the total (Apache's default `updatelbstatus`).
    fn sticky_credit(&self, s: &mut Shared, chosen: usize, now: Instant) {
        let mut total = 0;
        for (i, m) in self.members.iter().enumerate() {
            if !m.disabled && s.error_until[i].is_none_or(|t| t <= now) {
                s.credit[i] += m.lbfactor;
                total += m.lbfactor;
            }
        }
        s.credit[chosen] -= total;
    }

    /// The method's choice (`ap_proxy_balancer_get_best_worker`), with the credit step: every
    /// member compared gains its lbfactor, the winner pays the total (ties: first compared).
    fn select(&self, s: &mut Shared, tried: &[usize], now: Instant) -> Option<usize> {
        let mut sets: Vec<u8> = self.members.iter().map(|m| m.lbset).collect();
        sets.sort_unstable();
        sets.dedup();
        let mut total = 0;
        let mut best: Option<usize> = None;
        for set in sets {
            let mut unusable = 0;
            let mut spares = Vec::new();
            let mut standbys = Vec::new();
            for i in 0..self.members.len() {
                let m = &self.members[i];
                if m.lbset != set {
                    continue;
                }
                if m.drain {
                    // A draining member takes no new sessions; a normal one leaves a place
                    // for a spare.
                    if !m.spare && !m.standby {
                        unusable += 1;
                    }
                    continue;
                }
                let usable = self.usable(s, i, tried, now);
                if m.spare {
                    if usable {
                        spares.push(i);
                    }
                } else if m.standby {
                    if usable {
                        standbys.push(i);
                    }
                } else if usable {
                    self.compare(s, i, &mut best, &mut total);
                } else {
                    unusable += 1;
                }
            }
            for &i in spares.iter().take(unusable) {
                self.compare(s, i, &mut best, &mut total);
            }
            if best.is_none() {
                for &i in &standbys {
                    self.compare(s, i, &mut best, &mut total);
                }
            }
            if best.is_some() {
                break;
            }
        }
        let b = best?;
        s.credit[b] -= total;
        Some(b)
    }

    /// The method's `is_best`: `i` gains its lbfactor and replaces `best` if it is better.
    fn compare(&self, s: &mut Shared, i: usize, best: &mut Option<usize>, total: &mut i64) {
        s.credit[i] += self.members[i].lbfactor;
        *total += self.members[i].lbfactor;
        let better = match *best {
            None => true,
            Some(b) => match self.method {
                LbMethod::Byrequests => s.credit[i] > s.credit[b],
                LbMethod::Bybusyness => {
                    s.busy[i] < s.busy[b] || (s.busy[i] == s.busy[b] && s.credit[i] > s.credit[b])
                }
            },
        };
        if better {
            *best = Some(i);
        }
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
                route: m.route.clone(),
                lbset: m.lbset,
                lbfactor: m.lbfactor,
                standby: m.standby,
                spare: m.spare,
                off: m.disabled || m.drain,
                in_error: s.error_until[i].is_some_and(|t| t > now),
                busy: s.busy[i],
                elected: m.elected.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Apache's `get_path_param`: the value after the first `NAME=` in `url` (anywhere, as
/// `strstr` finds it) that has one, up to `?` or `&` (or `;` with `semicolon`), leading ones
/// skipped as `apr_strtok` does. None when there is no such value.
fn path_param<'a>(url: &'a [u8], name: &[u8], semicolon: bool) -> Option<&'a [u8]> {
    let delim = |b: u8| b == b'?' || b == b'&' || (semicolon && b == b';');
    let mut from = 0;
    while let Some(at) = find(url.get(from..)?, name) {
        let after = from + at + name.len();
        if url.get(after) == Some(&b'=') && after + 1 < url.len() {
            let rest = &url[after + 1..];
            let start = rest.iter().position(|&b| !delim(b))?;
            let rest = &rest[start..];
            let end = rest.iter().position(|&b| delim(b)).unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
        from = after + 1;
    }
    None
}

/// Apache's `get_cookie_param`: the value of the first `NAME=value` in the `Cookie` header
/// where `NAME` starts the header or follows `;`, `,` or white space (spaces before the `=`
/// allowed), up to `;` or `,`; a value must not be empty.
fn cookie_param<'a>(cookies: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = find(cookies.get(from..)?, name) {
        let start = from + at;
        from = start + 1;
        let boundary = start == 0 || {
            let b = cookies[start - 1];
            b == b';' || b == b',' || b.is_ascii_whitespace()
        };
        if !boundary {
            continue;
        }
        let mut p = start + name.len();
        while p < cookies.len() && cookies[p].is_ascii_whitespace() {
            p += 1;
        }
        // Apache's search goes on past the character it compared with '='.
        from = p + 2;
        if cookies.get(p) != Some(&b'=') {
            continue;
        }
        let value = &cookies[p + 1..];
        if value.is_empty() {
            continue;
        }
        let end = value
            .iter()
            .position(|&b| b == b';' || b == b',')
            .unwrap_or(value.len());
        return Some(&value[..end]);
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadFactor, MemberStatus, StickySep, WorkerUrl};

    fn config(specs: &[(u32, u8, &str)], method: LbMethod) -> Balancer {
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
        b
    }

    fn state(b: &Balancer) -> Arc<BalancerState> {
        let n = b.members.len();
        Arc::new(BalancerState::new(b, (0..n).collect(), |_| {
            Duration::from_secs(60)
        }))
    }

    fn balancer(specs: &[(u32, u8, &str)], method: LbMethod) -> Arc<BalancerState> {
        state(&config(specs, method))
    }

    /// A sticky balancer whose members have the routes `a`, `b`, ... in order.
    fn sticky(specs: &[(u32, u8, &str)], name: &str) -> Balancer {
        let mut b = config(specs, LbMethod::Byrequests);
        b.sticky_session = Some(name.into());
        for (i, m) in b.members.iter_mut().enumerate() {
            m.route = Some(((b'a' + i as u8) as char).to_string());
        }
        b
    }

    fn letter(i: usize) -> char {
        (b'a' + i as u8) as char
    }

    fn sequence(b: &Arc<BalancerState>, n: usize) -> String {
        (0..n)
            .map(|_| letter(b.pick(None, &[]).unwrap().member))
            .collect()
    }

    fn route(r: &str) -> Session {
        Session {
            sticky: "ROUTEID".into(),
            route: r.as_bytes().to_vec(),
        }
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
    fn hot_spare_takes_the_place_of_each_unusable_member() {
        // Two normal members, two spares: with both normal ones up the spares idle; with one
        // down the first spare shares the load with the other; with both down both spares do.
        let b = balancer(
            &[(1, 0, ""), (1, 0, ""), (1, 0, "+R"), (1, 0, "+R")],
            LbMethod::Byrequests,
        );
        assert_eq!(sequence(&b, 4), "abab");
        b.mark_error(0);
        assert_eq!(sequence(&b, 4), "bcbc");
        b.mark_error(1);
        assert_eq!(sequence(&b, 4), "cdcd");
    }

    #[test]
    fn a_disabled_member_leaves_its_place_to_a_spare() {
        let b = balancer(
            &[(1, 0, ""), (1, 0, "D"), (1, 0, "+R")],
            LbMethod::Byrequests,
        );
        assert_eq!(sequence(&b, 4), "acac");
        let b = balancer(
            &[(1, 0, ""), (1, 0, "N"), (1, 0, "+R")],
            LbMethod::Byrequests,
        );
        assert_eq!(sequence(&b, 4), "acac", "a draining member too");
    }

    #[test]
    fn spares_come_before_standbys_and_standbys_last() {
        // a down: the spare replaces it, the standby stays idle; spare down too: standby.
        let b = balancer(
            &[(1, 0, ""), (1, 0, "+R"), (1, 0, "+H")],
            LbMethod::Byrequests,
        );
        assert_eq!(sequence(&b, 3), "aaa");
        b.mark_error(0);
        assert_eq!(sequence(&b, 3), "bbb");
        b.mark_error(1);
        assert_eq!(sequence(&b, 3), "ccc");
    }

    #[test]
    fn spares_replace_only_within_their_lbset() {
        // The spare of set 1 does not stand in for set 0; set 1 is used only when set 0 has
        // nothing, and then its spare only in place of an unusable member of set 1.
        let b = balancer(
            &[(1, 0, ""), (1, 0, ""), (1, 1, "+R")],
            LbMethod::Byrequests,
        );
        b.mark_error(0);
        assert_eq!(sequence(&b, 3), "bbb");
        b.mark_error(1);
        assert!(b.pick(None, &[]).is_err(), "set 1 has no unusable member");
    }

    #[test]
    fn tried_members_count_as_unusable() {
        let b = balancer(&[(1, 0, ""), (1, 0, "+R")], LbMethod::Byrequests);
        assert_eq!(b.pick(None, &[0]).unwrap().member, 1);
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
        let hold = b.pick(None, &[]).unwrap();
        assert_eq!(hold.member, 0);
        for _ in 0..3 {
            assert_eq!(b.pick(None, &[]).unwrap().member, 1, "member 0 is busy");
        }
    }

    #[test]
    fn tried_members_are_excluded_and_all_down_recovers() {
        let b = balancer(&[(1, 0, ""), (1, 0, "")], LbMethod::Byrequests);
        assert_eq!(b.pick(None, &[0]).map(|p| p.member).ok(), Some(1));
        assert_eq!(b.pick(None, &[0, 1]).err(), Some(NoMember::NoneUsable));
        b.mark_error(0);
        b.mark_error(1);
        // forcerecovery: all in error are released at once.
        assert!(b.pick(None, &[]).is_ok());
    }

    #[test]
    fn no_forced_recovery_while_a_disabled_member_is_not_in_error() {
        let mut cfg = config(&[(1, 0, ""), (1, 0, "D")], LbMethod::Byrequests);
        let b = state(&cfg);
        b.mark_error(0);
        assert!(b.pick(None, &[]).is_err());
        cfg.force_recovery = false;
        let b = state(&cfg);
        b.mark_error(0);
        b.mark_error(1);
        assert!(b.pick(None, &[]).is_err(), "forcerecovery off");
    }

    #[test]
    fn session_from_cookie_or_url_parameter() {
        let b = state(&sticky(&[(1, 0, ""), (1, 0, "")], "JSESSIONID|jsessionid"));
        let url = b"balancer://t/app/x;jsessionid=abc.b?q=1";
        assert_eq!(
            b.session_in(url, Some(b"JSESSIONID=zz.a")),
            Some(Session {
                sticky: "jsessionid".into(),
                route: b"b".to_vec()
            }),
            "the URL parameter first"
        );
        assert_eq!(
            b.session_in(b"balancer://t/app/x", Some(b"other=1; JSESSIONID=zz.a")),
            Some(Session {
                sticky: "JSESSIONID".into(),
                route: b"a".to_vec()
            })
        );
        // The route is what follows the first separator; no separator, no session.
        assert_eq!(
            b.session_in(b"/", Some(b"JSESSIONID=x.y.z")).unwrap().route,
            b"y.z"
        );
        assert_eq!(b.session_in(b"/", Some(b"JSESSIONID=nodot")), None);
        assert_eq!(b.session_in(b"/", Some(b"XJSESSIONID=1.a")), None);
        assert_eq!(b.session_in(b"/", Some(b"a=JSESSIONID=1.a")), None);
        assert_eq!(b.session_in(b"/", None), None);
        let mut cfg = sticky(&[(1, 0, "")], "ROUTEID");
        cfg.sticky_session_sep = StickySep(None);
        let b = state(&cfg);
        assert_eq!(b.session_in(b"/", Some(b"ROUTEID=a")).unwrap().route, b"a");
        assert_eq!(
            b.session_in(b"/x/ROUTEID=a", None).unwrap().sticky,
            "ROUTEID",
            "one name serves both"
        );
    }

    #[test]
    fn cookie_values_as_apache_cuts_them() {
        assert_eq!(cookie_param(b"R=1.a", b"R"), Some(&b"1.a"[..]));
        assert_eq!(cookie_param(b"x=1;R =1.b,y", b"R"), Some(&b"1.b"[..]));
        assert_eq!(cookie_param(b"x=1, R=1.c", b"R"), Some(&b"1.c"[..]));
        assert_eq!(cookie_param(b"R=", b"R"), None);
        assert_eq!(cookie_param(b"RR=1.a", b"R"), None);
        assert_eq!(cookie_param(b"RR=1.a; R=2.b", b"R"), Some(&b"2.b"[..]));
        assert_eq!(path_param(b"/a;s=1.a&x", b"s", false), Some(&b"1.a"[..]));
        assert_eq!(
            path_param(b"/a;s=1.a;x=2", b"s", false),
            Some(&b"1.a;x=2"[..])
        );
        assert_eq!(path_param(b"/a;s=1.a;x=2", b"s", true), Some(&b"1.a"[..]));
        assert_eq!(path_param(b"/a;s=", b"s", false), None);
        assert_eq!(path_param(b"/s/a;s=1.b", b"s", false), Some(&b"1.b"[..]));
    }

    #[test]
    fn sticky_session_goes_to_its_member_and_changes_route_otherwise() {
        let b = state(&sticky(&[(1, 0, ""), (1, 0, "")], "ROUTEID"));
        for _ in 0..3 {
            let p = b.pick(Some(&route("b")), &[]).unwrap();
            assert_eq!((p.member, p.route_changed), (1, false));
        }
        let p = b.pick(None, &[]).unwrap();
        assert!(p.route_changed, "no session: the route changes");
        let p = b.pick(Some(&route("zz")), &[]).unwrap();
        assert!(p.route_changed, "an unknown route");
        b.mark_error(1);
        let p = b.pick(Some(&route("b")), &[]).unwrap();
        assert_eq!((p.member, p.route_changed), (0, true), "failover");
    }

    #[test]
    fn sticky_sessions_count_in_the_credits() {
        // Sessions for b keep b's credit low, so requests without a session go to a.
        let b = state(&sticky(&[(1, 0, ""), (1, 0, "")], "ROUTEID"));
        for _ in 0..3 {
            b.pick(Some(&route("b")), &[]).unwrap();
        }
        assert_eq!(sequence(&b, 4), "aaaa");
    }

    #[test]
    fn nofailover_breaks_the_session_only_for_a_member_route() {
        let mut cfg = sticky(&[(1, 0, ""), (1, 0, "")], "ROUTEID");
        cfg.nofailover = true;
        let b = state(&cfg);
        b.mark_error(1);
        assert_eq!(
            b.pick(Some(&route("b")), &[]).err(),
            Some(NoMember::SessionBroken)
        );
        assert_eq!(
            b.pick(Some(&route("b")), &[1]).err(),
            Some(NoMember::SessionBroken)
        );
        assert_eq!(b.pick(Some(&route("zz")), &[]).unwrap().member, 0);
        assert_eq!(b.pick(None, &[]).unwrap().member, 0);
    }

    #[test]
    fn redirect_takes_the_sessions_of_an_unusable_member() {
        // a (route a) redirects to c; b is another member. a disabled: sessions for a go to c,
        // requests without a session are balanced over b and c.
        let mut cfg = sticky(&[(1, 0, "D"), (1, 0, ""), (1, 0, "")], "ROUTEID");
        cfg.members[0].redirect = Some("c".into());
        let b = state(&cfg);
        for _ in 0..3 {
            let p = b.pick(Some(&route("a")), &[]).unwrap();
            assert_eq!((p.member, p.route_changed), (2, true));
        }
        // While a is usable its redirect is not used.
        cfg.members[0].status = MemberStatus::default();
        let b = state(&cfg);
        assert_eq!(b.pick(Some(&route("a")), &[]).unwrap().member, 0);
        let b = state(&cfg);
        assert_eq!(
            sequence(&b, 3),
            "abc",
            "no session: the method, redirect or not"
        );
    }

    #[test]
    fn redirects_do_not_loop() {
        let mut cfg = sticky(&[(1, 0, "D"), (1, 0, "D"), (1, 0, "")], "ROUTEID");
        cfg.members[0].redirect = Some("b".into());
        cfg.members[1].redirect = Some("a".into());
        let b = state(&cfg);
        let p = b.pick(Some(&route("a")), &[]).unwrap();
        assert_eq!(p.member, 2, "the method, after the redirects found nothing");
    }

    #[test]
    fn a_draining_member_keeps_its_sessions_only() {
        let b = state(&sticky(&[(1, 0, "N"), (1, 0, "")], "ROUTEID"));
        assert_eq!(b.pick(Some(&route("a")), &[]).unwrap().member, 0);
        assert_eq!(sequence(&b, 3), "bbb");
    }

    #[test]
    fn a_standby_with_the_route_comes_after_the_others() {
        // Two members share route x; the standby one serves x only when the other cannot.
        let mut cfg = sticky(&[(1, 0, "+H"), (1, 0, "")], "ROUTEID");
        cfg.members[0].route = Some("x".into());
        cfg.members[1].route = Some("x".into());
        let b = state(&cfg);
        assert_eq!(b.pick(Some(&route("x")), &[]).unwrap().member, 1);
        b.mark_error(1);
        assert_eq!(b.pick(Some(&route("x")), &[]).unwrap().member, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_balancer_timeout_waits_for_a_member_out_of_error() {
        let mut cfg = config(&[(1, 0, "")], LbMethod::Byrequests);
        cfg.force_recovery = false;
        cfg.timeout = Some(Duration::from_secs(3));
        let b = Arc::new(BalancerState::new(&cfg, vec![0], |_| {
            Duration::from_secs(1)
        }));
        b.mark_error(0);
        let t0 = Instant::now();
        let p = b.choose(None, &[]).await.unwrap();
        assert_eq!(p.member, 0);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1030),
            "{waited:?}"
        );
        // Nothing comes back within the timeout: 503 after it.
        cfg.timeout = Some(Duration::from_millis(500));
        let b = Arc::new(BalancerState::new(&cfg, vec![0], |_| {
            Duration::from_secs(60)
        }));
        b.mark_error(0);
        let t0 = Instant::now();
        assert_eq!(b.choose(None, &[]).await.err(), Some(NoMember::NoneUsable));
        assert!(t0.elapsed() >= Duration::from_millis(500));
        // Without a timeout: at once.
        cfg.timeout = None;
        let b = Arc::new(BalancerState::new(&cfg, vec![0], |_| {
            Duration::from_secs(60)
        }));
        b.mark_error(0);
        let t0 = Instant::now();
        assert!(b.choose(None, &[]).await.is_err());
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }
}
