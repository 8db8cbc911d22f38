//! CPU time and memory of a process tree, from `/proc`.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Serialize;

use crate::peers::stat_fields;

/// utime + stime per PID, in clock ticks.
pub type CpuTicks = BTreeMap<u32, u64>;

/// `sysconf(_SC_CLK_TCK)` via `getconf` (no libc in this workspace); 100 on Linux.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`) from a stat line.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let f = stat_fields(stat)?;
    // f[0] is field 3 (state): field n is f[n - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of each process that still exists.
pub fn cpu_ticks(pids: &[u32]) -> CpuTicks {
    pids.iter()
        .filter_map(|&p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            Some((p, parse_stat_cpu(&s)?))
        })
        .collect()
}

/// CPU used between two samples: processes that appeared count from zero; processes that
/// ended in between are lost (their time went to a parent's cutime only once reaped).
pub fn cpu_delta(before: &CpuTicks, after: &CpuTicks) -> u64 {
    after
        .iter()
        .map(|(p, &a)| a.saturating_sub(before.get(p).copied().unwrap_or(0)))
        .sum()
}

/// Memory of a process tree, summed over its processes (shared pages count once per process
/// for RSS and HWM; PSS splits them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Sum of VmRSS.
    pub rss_kib: u64,
    /// Sum of VmHWM (each process's peak RSS).
    pub hwm_kib: u64,
    /// Sum of Pss from smaps_rollup (0 where unreadable).
    pub pss_kib: u64,
    /// Processes counted.
    pub processes: usize,
}

/// A `Name:   1234 kB` value from `/proc/PID/status` or `smaps_rollup`.
pub fn parse_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory summed over `pids`.
pub fn memory(pids: &[u32]) -> Memory {
    let mut m = Memory::default();
    for p in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        m.processes += 1;
        m.rss_kib += parse_kib(&status, "VmRSS").unwrap_or(0);
        m.hwm_kib += parse_kib(&status, "VmHWM").unwrap_or(0);
        if let Ok(r) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            m.pss_kib += parse_kib(&r, "Pss").unwrap_or(0);
        }
    }
    m
}

/// Soft and hard limits on open files of this process (`/proc/self/limits`).
pub fn nofile_limits() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let soft = it.next()?.parse().ok()?;
    let hard = it.next()?.parse().ok()?;
    Some((soft, hard))
}

/// Raises this process's open-file limit to at least `want` with `prlimit(1)` (children
/// started afterwards inherit it): first soft and hard to `want` (needs privilege when above
/// the hard limit), else soft to the hard limit. Returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    let Some((soft, hard)) = nofile_limits() else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let pid = std::process::id().to_string();
    let attempts = [
        format!("--nofile={}:{}", want, hard.max(want)),
        format!("--nofile={hard}:{hard}"),
    ];
    for a in attempts {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &a])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
    }
    nofile_limits().map_or(soft, |(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime() {
        let line = "1234 (nginx: worker) S 1233 1233 1233 0 -1 4194624 5 0 0 0 150 25 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(line), Some(175));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn delta_counts_new_processes_from_zero() {
        let before: CpuTicks = [(1, 100), (2, 50)].into();
        let after: CpuTicks = [(1, 130), (3, 7)].into();
        assert_eq!(cpu_delta(&before, &after), 37);
    }

    #[test]
    fn kib_values() {
        let s = "Name:\tnginx\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_kib(s, "VmHWM"), Some(10240));
        assert_eq!(parse_kib(s, "VmRSS"), Some(8192));
        assert_eq!(parse_kib(s, "VmSwap"), None);
        let r = "00400000-7fff [rollup]\nRss:  100 kB\nPss:   42 kB\n";
        assert_eq!(parse_kib(r, "Pss"), Some(42));
    }

    #[test]
    fn own_process_is_measurable() {
        let me = std::process::id();
        let m = memory(&[me]);
        assert_eq!(m.processes, 1);
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        assert!(cpu_ticks(&[me]).contains_key(&me));
        assert!(nofile_limits().is_some());
    }
}
