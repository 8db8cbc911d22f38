//! `h2load` (Debian's `nghttp2-client`) for the HTTP/2 workload: the command line, and the
//! parsers for its summary (requests, req/s, errors, status codes, the negotiated protocol)
//! and for its per-request log (the latency percentiles it does not print).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::wrk::WrkSummary;

/// The program and its package.
pub const H2LOAD: &str = "h2load";
pub const PACKAGE: &str = "nghttp2-client";

/// Streams each connection keeps open at once.
pub const STREAMS: usize = 4;

/// The h2load command line: `connections` connections (over at most 2 threads) of
/// [`STREAMS`] streams each, offering only the TLS 1.3 suite the other clients offer, for `duration` (whole seconds, at least 1), each request logged to
/// `log`. A connection with no activity for 5 s is given up (counted as timed out).
pub fn command(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    log: &Path,
) -> Command {
    let threads = connections.clamp(1, 2);
    let mut c = Command::new(programs::program_path(H2LOAD));
    c.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-m{STREAMS}"))
        .arg(format!("--tls13-ciphers={}", super::tls::CLIENT_SUITE))
        .arg("-D")
        .arg(duration.as_secs().max(1).to_string())
        .arg("-N")
        .arg("5s")
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("https://{addr}{path}"));
    c
}

/// What h2load's summary says.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rps: f64,
    pub done: u64,
    pub succeeded: u64,
    /// Failed requests (non-2xx/3xx answers among them).
    pub failed: u64,
    /// Failed for other reasons than their status (reset streams, closed connections).
    pub errored: u64,
    pub timeout: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// `time for request` mean and max, microseconds.
    pub mean_us: f64,
    pub max_us: u64,
    /// `Application protocol:` (h2 when ALPN chose it).
    pub protocol: Option<String>,
    pub tls_protocol: Option<String>,
    pub cipher: Option<String>,
}

/// A duration as h2load prints it: `219us`, `12.72ms`, `1.5s`.
fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// `key: 10 total, 12 started, ...` -> the number before `word`.
fn count_before(line: &str, word: &str) -> Option<u64> {
    line.split(',').find_map(|part| {
        let mut it = part.split_whitespace().rev();
        let w = it.next()?;
        let n = it.next()?;
        (w == word).then(|| n.parse().ok()).flatten()
    })
}

/// Parses h2load's stdout.
pub fn parse_output(stdout: &str) -> Result<Summary, String> {
    let mut rps = None;
    let mut requests = None;
    let mut status = None;
    let mut time = None;
    let (mut protocol, mut tls_protocol, mut cipher) = (None, None, None);
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 1.01s, 4000.00 req/s, 312.76KB/s`
            rps = rest
                .split(',')
                .nth(1)
                .and_then(|p| p.trim().strip_suffix(" req/s"))
                .and_then(|n| n.trim().parse::<f64>().ok());
        } else if let Some(rest) = line.strip_prefix("requests:") {
            requests = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            status = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            time = Some(rest.to_owned());
        } else if let Some(p) = line.strip_prefix("Application protocol:") {
            protocol = Some(p.trim().to_owned());
        } else if let Some(p) = line.strip_prefix("TLS Protocol:") {
            tls_protocol = Some(p.trim().to_owned());
        } else if let Some(p) = line.strip_prefix("Cipher:") {
            cipher = Some(p.trim().to_owned());
        }
    }
    let bad = || {
        format!(
            "no summary in h2load output: {:?}",
            stdout
                .chars()
                .rev()
                .take(600)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        )
    };
    let (Some(rps), Some(requests), Some(status)) = (rps, requests, status) else {
        return Err(bad());
    };
    let n = |line: &str, word: &str| count_before(line, word).ok_or_else(bad);
    // `min max mean sd +/- sd`; no column when no request completed.
    let times: Vec<&str> = time
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let (mean_us, max_us) = match (
        times.get(2).and_then(|t| parse_duration_us(t)),
        times.get(1).and_then(|t| parse_duration_us(t)),
    ) {
        (Some(mean), Some(max)) => (mean, max as u64),
        _ => (0.0, 0),
    };
    Ok(Summary {
        rps,
        done: n(&requests, "done")?,
        succeeded: n(&requests, "succeeded")?,
        failed: n(&requests, "failed")?,
        errored: n(&requests, "errored")?,
        timeout: n(&requests, "timeout")?,
        status_4xx: n(&status, "4xx")?,
        status_5xx: n(&status, "5xx")?,
        mean_us,
        max_us,
        protocol,
        tls_protocol,
        cipher,
    })
}

/// The request times (microseconds, third column) of h2load's `--log-file`, sorted.
pub fn parse_log(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// The `p`th percentile (nearest rank) of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The run as the wrk workloads report it: requests are those done, errors split as wrk's
/// are (non-2xx/3xx answers as status errors, the rest as read errors, timeouts apart), the
/// duration the one giving h2load's req/s.
pub fn to_wrk_summary(s: &Summary, times: &[u64]) -> WrkSummary {
    let status = s.status_4xx + s.status_5xx;
    let duration_us = if s.rps > 0.0 {
        (s.done as f64 / s.rps * 1e6).round() as u64
    } else {
        0
    };
    WrkSummary {
        requests: s.done,
        duration_us,
        bytes: 0,
        errors_connect: 0,
        errors_read: s.failed.saturating_sub(status).saturating_sub(s.timeout),
        errors_write: 0,
        errors_status: status,
        errors_timeout: s.timeout,
        latency_mean_us: s.mean_us,
        latency_max_us: s.max_us,
        p50_us: percentile(times, 50.0),
        p90_us: percentile(times, 90.0),
        p99_us: percentile(times, 99.0),
    }
}

/// Runs h2load (stopped by its PID if it overruns `duration` by 15 s) and returns its summary
/// and the run as [`WrkSummary`]. An error when the server did not speak h2.
pub fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    log: &Path,
) -> Result<(Summary, WrkSummary), String> {
    // h2load appends to its log file.
    let _ = std::fs::remove_file(log);
    let out = super::output_within(
        command(addr, path, connections, duration, log),
        duration + Duration::from_secs(15),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "h2load failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let s = parse_output(&stdout)?;
    if s.protocol.as_deref() != Some("h2") {
        return Err(format!(
            "h2load did not get h2 (application protocol {:?})",
            s.protocol
        ));
    }
    let times = parse_log(&std::fs::read_to_string(log).unwrap_or_default());
    let _ = std::fs::remove_file(log);
    let w = to_wrk_summary(&s, &times);
    Ok((s, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// h2load 1.52's output for a 2 s run (progress lines shortened).
    const SAMPLE: &str = "starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
spawning thread #1: 8 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.01s, 55278.50 req/s, 4.22MB/s
requests: 110559 total, 110621 started, 110559 done, 110557 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 110556 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 8.44MB (8845344) total, 5.17MB (5417293) headers (space savings 50.51%), 1.37MB (1437241) data
                     min         max         mean         sd        +/- sd
time for request:       70us     31.51ms      1.01ms      1.80ms    94.60%
time for connect:     7.46ms     35.56ms     20.63ms      9.08ms    68.75%
time to 1st byte:    28.42ms     47.17ms     38.47ms      8.21ms    25.00%
req/s           :    2513.66     4419.14     3452.99      949.97    87.50%
";

    #[test]
    fn parses_the_summary() {
        let s = parse_output(SAMPLE).unwrap();
        assert_eq!(s.rps, 55278.50);
        assert_eq!(s.done, 110559);
        assert_eq!(s.succeeded, 110557);
        assert_eq!((s.failed, s.errored, s.timeout), (2, 1, 0));
        assert_eq!((s.status_4xx, s.status_5xx), (1, 0));
        assert_eq!(s.mean_us, 1010.0);
        assert_eq!(s.max_us, 31510);
        assert_eq!(s.protocol.as_deref(), Some("h2"));
        assert_eq!(s.tls_protocol.as_deref(), Some("TLSv1.3"));
        assert_eq!(s.cipher.as_deref(), Some("TLS_AES_256_GCM_SHA384"));

        let w = to_wrk_summary(&s, &[100, 200, 300]);
        assert_eq!(w.requests, 110559);
        assert_eq!(w.errors_status, 1);
        assert_eq!(w.errors_read, 1);
        assert_eq!(w.errors(), 2);
        assert!((w.requests_per_second() - 55278.5).abs() < 0.5, "{w:?}");
        assert_eq!((w.p50_us, w.p99_us), (200, 300));
    }

    #[test]
    fn no_summary_or_no_h2_is_told() {
        assert!(parse_output("starting benchmark...\n").is_err());
        let refused = "finished in 0.00s, 0.00 req/s, 0B/s\n\
                       requests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout\n\
                       status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let s = parse_output(refused).unwrap();
        assert_eq!((s.done, s.rps, s.mean_us), (0, 0.0, 0.0));
        assert_eq!(s.protocol, None);
        let w = to_wrk_summary(&s, &[]);
        assert_eq!((w.requests, w.duration_us, w.p99_us), (0, 0, 0));
        let http1 = SAMPLE.replace("Application protocol: h2", "Application protocol: http/1.1");
        assert_eq!(
            parse_output(&http1).unwrap().protocol.as_deref(),
            Some("http/1.1")
        );
    }

    #[test]
    fn log_times_and_percentiles() {
        let log = "1796583059598058\t200\t7644\n1796583059598058\t200\t120\n\
                   1796583059598047\t200\t7761\nbad line\n";
        let t = parse_log(log);
        assert_eq!(t, [120, 7644, 7761]);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[5], 99.0), 5);
        assert_eq!(percentile(&[], 99.0), 0);
        for d in [("219us", 219.0), ("12.72ms", 12720.0), ("1.5s", 1.5e6)] {
            assert_eq!(parse_duration_us(d.0), Some(d.1));
        }
        assert_eq!(parse_duration_us("12"), None);
    }

    #[test]
    fn command_line() {
        let c = command(
            "127.0.0.1:8443".parse().unwrap(),
            "/bench/hello",
            16,
            Duration::from_secs(5),
            Path::new("/tmp/h2.log"),
        );
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-t2",
                "-c16",
                "-m4",
                "--tls13-ciphers=TLS_AES_128_GCM_SHA256",
                "-D",
                "5",
                "-N",
                "5s",
                "--log-file=/tmp/h2.log",
                "https://127.0.0.1:8443/bench/hello"
            ]
        );
    }
}
