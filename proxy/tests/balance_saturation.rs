//! `balancer://` pools and backend saturation over real loopback TCP, read from the members'
//! journals; and the same weighted balancer through real Apache, which must pick the same
//! sequence of members.

mod front;
mod support;

use std::time::Duration;

use fcgi_mock::MockHandle;
use front::{Front, T, get, mock, send, start};
use http::StatusCode;

/// Which member (index into `members`) served `uri`.
fn served_by(members: &[&MockHandle], uri: &str) -> Option<usize> {
    members.iter().position(|m| {
        m.journal()
            .requests()
            .iter()
            .any(|r| r.param("REQUEST_URI").as_deref() == Some(uri))
    })
}

fn balancer_conf(members: &[(&MockHandle, &str)], method: &str, route_keys: &str) -> String {
    let mut c = String::from("Listen 127.0.0.1:0\n<Proxy \"balancer://pool\">\n");
    for (m, keys) in members {
        c.push_str(&format!(
            "  BalancerMember \"fcgi://{}\" {keys}\n",
            m.addr()
        ));
    }
    c.push_str(&format!("  ProxySet lbmethod={method}\n</Proxy>\n"));
    c.push_str(&format!(
        "ProxyPass \"/b/\" \"balancer://pool/\" {route_keys}\n"
    ));
    c
}

async fn sequence(addr: &str, members: &[&MockHandle], tag: &str, n: usize) -> String {
    let mut seq = String::new();
    for i in 0..n {
        let uri = format!("/b/{tag}{i}");
        let r = front::send_to(addr, get(&uri)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        let who = served_by(members, &uri).expect("served by a member");
        seq.push((b'a' + who as u8) as char);
    }
    seq
}

#[tokio::test]
async fn byrequests_with_equal_weights_alternates_strictly() {
    let (a, b) = (mock("").await, mock("").await);
    let f = start(
        &balancer_conf(&[(&a, ""), (&b, "")], "byrequests", ""),
        |_| {},
    )
    .await;
    assert_eq!(sequence(&f.addr, &[&a, &b], "eq", 8).await, "abababab");
}

#[tokio::test]
async fn byrequests_weights_3_to_1_give_apaches_sequence() {
    let (a, b) = (mock("").await, mock("").await);
    let conf = balancer_conf(
        &[(&a, "loadfactor=3"), (&b, "loadfactor=1")],
        "byrequests",
        "",
    );
    let f = start(&conf, |_| {}).await;
    assert_eq!(sequence(&f.addr, &[&a, &b], "w", 8).await, "aabaaaba");
}

#[tokio::test]
async fn bybusyness_sends_new_requests_away_from_a_busy_member() {
    let slow = "[[rule]]\nmatch = { request_uri_prefix = \"/b/slow\" }\nbody = [{ data = \"slow\", delay_ms = 800 }]\n";
    let (a, b) = (mock(slow).await, mock(slow).await);
    let f = start(
        &balancer_conf(&[(&a, ""), (&b, "")], "bybusyness", ""),
        |_| {},
    )
    .await;
    let addr = f.addr.clone();
    let held = tokio::spawn(async move { front::send_to(&addr, get("/b/slow")).await });
    // Wait until the slow request is in flight on some member.
    tokio::time::timeout(T, async {
        while a.journal().requests().len() + b.journal().requests().len() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let busy = served_by(&[&a, &b], "/b/slow").unwrap();
    for i in 0..4 {
        let uri = format!("/b/q{i}");
        assert_eq!(send(&f, get(&uri)).await.status, StatusCode::OK);
        assert_eq!(
            served_by(&[&a, &b], &uri),
            Some(1 - busy),
            "{uri} avoided the busy member"
        );
    }
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_killed_member_is_skipped_at_once_and_rejoins_after_retry() {
    let (a, b) = (mock("").await, mock("").await);
    let a_addr = a.addr().to_string();
    let conf = balancer_conf(&[(&a, "retry=1"), (&b, "retry=1")], "byrequests", "");
    let f = start(&conf, |_| {}).await;
    assert_eq!(sequence(&f.addr, &[&a, &b], "up", 2).await, "ab");
    a.shutdown().await;
    // The very next request would go to a: it fails over to b within the same request.
    for i in 0..4 {
        let uri = format!("/b/down{i}");
        let r = send(&f, get(&uri)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri} failed over");
        assert_eq!(served_by(&[&b], &uri), Some(0));
    }
    let a2 = front::mock_at(&a_addr, "").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seq = sequence(&f.addr, &[&a2, &b], "back", 4).await;
    assert!(seq.contains('a'), "a rejoined after retry: {seq}");
    assert_eq!(seq.matches('a').count(), 2, "alternating again: {seq}");
}

#[tokio::test]
async fn all_members_down_gives_503_quickly() {
    let (a, b) = (mock("").await, mock("").await);
    let f = start(
        &balancer_conf(&[(&a, ""), (&b, "")], "byrequests", ""),
        |_| {},
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let started = tokio::time::Instant::now();
    let r = send(&f, get("/b/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn hot_standby_takes_over_only_when_the_member_is_down() {
    let (a, h) = (mock("").await, mock("").await);
    let conf = balancer_conf(&[(&a, ""), (&h, "status=+H")], "byrequests", "");
    let f = start(&conf, |_| {}).await;
    assert_eq!(sequence(&f.addr, &[&a, &h], "n", 3).await, "aaa");
    a.shutdown().await;
    assert_eq!(
        sequence(&f.addr, &[&h], "s", 2).await,
        "aa",
        "all on the standby"
    );
}

// ---- saturation: a backend that serves one connection at a time (a single php-fpm worker) ----

const CAPACITY_1: &str =
    "[server]\nmax_conns = 1\n[default]\nbody = [{ data = \"ok\", delay_ms = 200 }]\n";

async fn two_at_once(f: &Front, tag: &str) -> (StatusCode, StatusCode) {
    let (a1, a2) = (f.addr.clone(), f.addr.clone());
    let t1 = format!("/app/{tag}1");
    let t2 = format!("/app/{tag}2");
    let r1 = tokio::spawn(async move { front::send_to(&a1, get(&t1)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r2 = tokio::spawn(async move { front::send_to(&a2, get(&t2)).await });
    (r1.await.unwrap().status, r2.await.unwrap().status)
}

/// (a) The documented problem, avoided: reuse on and no cap, and the first request's pooled
/// connection holds the only worker. The second request's new connection waits in the backlog;
/// when the first request ends its connection is closed instead of pooled (it yields), the
/// worker takes the waiting connection, and both are served, each exactly once.
#[tokio::test]
async fn saturation_a_reuse_without_cap_yields_the_worker_to_the_waiting_connection() {
    let m = mock(CAPACITY_1).await;
    let f = start(
        &format!(
            "ProxyPass /app/ fcgi://{}/ timeout=1
",
            m.addr()
        ),
        |_| {},
    )
    .await;
    // Steady state: one pooled connection already holds the only worker.
    assert_eq!(send(&f, get("/app/warm")).await.status, StatusCode::OK);
    let (s1, s2) = two_at_once(&f, "a").await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    let j = m.journal().snapshot();
    assert_eq!(j.requests.len(), 3, "each request executed once");
    assert_eq!(j.connection_count(), 2);
    let st = f.proxy.workers()[0].pool.stats();
    assert!(st.yields >= 1, "{st:?}");
}

/// (b) disablereuse=on: the worker is released after each request, so both succeed.
#[tokio::test]
async fn saturation_b_disablereuse_serves_both() {
    let m = mock(CAPACITY_1).await;
    let f = start(
        &format!(
            "ProxyPass /app/ fcgi://{}/ timeout=2 disablereuse=on\n",
            m.addr()
        ),
        |_| {},
    )
    .await;
    assert_eq!(two_at_once(&f, "b").await, (StatusCode::OK, StatusCode::OK));
    assert_eq!(m.journal().connection_count(), 2);
}

/// (c) The backend announces FCGI_MAX_CONNS=1: that becomes the learned limit, so a request
/// beyond it waits for the pooled connection or for its own connection to be accepted, never
/// for the timeout, and none runs twice.
#[tokio::test]
async fn saturation_c_announced_max_conns_becomes_the_limit() {
    let m = mock(&format!(
        "[server.values]\nFCGI_MAX_CONNS = \"1\"\n{CAPACITY_1}"
    ))
    .await;
    let f = start(
        &format!("ProxyPass /app/ fcgi://{}/ timeout=2\n", m.addr()),
        |_| {},
    )
    .await;
    assert_eq!(send(&f, get("/app/warm")).await.status, StatusCode::OK);
    assert_eq!(two_at_once(&f, "c").await, (StatusCode::OK, StatusCode::OK));
    let j = m.journal().snapshot();
    assert_eq!(j.requests.len(), 3);
    assert!(
        !m.journal().management().is_empty(),
        "the proxy asked with FCGI_GET_VALUES"
    );
    let st = f.proxy.workers()[0].pool.stats();
    assert_eq!(st.announced_max_conns, Some(1));
    assert_eq!(st.limit, Some(1), "{st:?}");
    assert!(st.open <= 2, "{st:?}");
}

/// (d) Cap reached and `acquire` exceeded: 503, within `acquire`.
#[tokio::test]
async fn saturation_d_acquire_exceeded_is_503_within_acquire() {
    let m = mock("[default]\nbody = [{ data = \"ok\", delay_ms = 1000 }]\n").await;
    let f = start(
        &format!(
            "ProxyPass /app/ fcgi://{}/ max=1 acquire=200 timeout=3\n",
            m.addr()
        ),
        |_| {},
    )
    .await;
    let a1 = f.addr.clone();
    let first = tokio::spawn(async move { front::send_to(&a1, get("/app/d1")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let r = send(&f, get("/app/d2")).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_millis(800),
        "{took:?}"
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let m = mock("").await;
    let f = start(&format!("ProxyPass /app/ fcgi://{}/\n", m.addr()), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(fcgi_proxy::server::serve_admin(
        listener,
        f.proxy.clone(),
        rx,
    ));
    let scrape = |admin: String| async move {
        let r = front::send_to(&admin, get("/metrics")).await;
        assert_eq!(r.status, StatusCode::OK);
        String::from_utf8(r.body.unwrap().to_vec()).unwrap()
    };
    let value = |text: &str, prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = scrape(admin.clone()).await;
    for i in 0..3 {
        send(&f, get(&format!("/app/m{i}"))).await;
    }
    let after = scrape(admin.clone()).await;
    let ok = "fcgi_proxy_requests_total{route=\"1\",status=\"200\"";
    assert_eq!(value(&before, ok), 0);
    assert_eq!(value(&after, ok), 3, "{after}");
    let opened = "fcgi_proxy_backend_connections_opened_total{";
    let reused = "fcgi_proxy_backend_connections_reused_total{";
    assert_eq!(value(&after, opened), 1, "{after}");
    assert_eq!(value(&after, reused), 2, "{after}");
    let status = front::send_to(&admin, get("/status")).await;
    let json: serde_json::Value = serde_json::from_slice(&status.body.unwrap()).unwrap();
    assert_eq!(json["workers"][0]["reused"], 2);
}

/// The same weighted balancer config through real Apache 2.4 picks the same members in the
/// same order as the proxy.
#[tokio::test]
async fn apache_picks_the_same_weighted_sequence() {
    let Some(apache) = programs::require_program("apache2", "apache2") else {
        return;
    };
    let (a, b) = (mock("").await, mock("").await);
    let dir = tempfile::tempdir().unwrap();
    support::open_up_dir(dir.path());
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let port = support::free_port();
    let d = dir.path().display();
    let conf = format!(
        "ServerRoot \"{d}\"\nPidFile \"{d}/httpd.pid\"\nDefaultRuntimeDir \"{d}/run\"\nErrorLog \"{d}/error.log\"\n\
         Mutex file:{d}/run default\nUser www-data\nGroup www-data\n\
         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
         LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n\
         LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so\n\
         LoadModule proxy_balancer_module /usr/lib/apache2/modules/mod_proxy_balancer.so\n\
         LoadModule slotmem_shm_module /usr/lib/apache2/modules/mod_slotmem_shm.so\n\
         LoadModule lbmethod_byrequests_module /usr/lib/apache2/modules/mod_lbmethod_byrequests.so\n\
         StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMaxRequestWorkers 4\n\
         ServerName balance.test\n{}",
        balancer_conf(
            &[(&a, "loadfactor=3"), (&b, "loadfactor=1")],
            "byrequests",
            ""
        )
        .replace("Listen 127.0.0.1:0", &format!("Listen 127.0.0.1:{port}"))
    );
    let path = dir.path().join("httpd.conf");
    std::fs::write(&path, &conf).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let apache_seq = {
        let _apache = support::start_apache(&apache, &path, dir.path(), addr);
        sequence(&addr.to_string(), &[&a, &b], "ap", 8).await
    };
    let (a2, b2) = (mock("").await, mock("").await);
    let conf2 = balancer_conf(
        &[(&a2, "loadfactor=3"), (&b2, "loadfactor=1")],
        "byrequests",
        "",
    );
    let f = start(&conf2, |_| {}).await;
    let ours = sequence(&f.addr, &[&a2, &b2], "us", 8).await;
    assert_eq!(ours, apache_seq, "fcgi-proxy vs Apache member sequence");
}
