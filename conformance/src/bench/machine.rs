//! The machine a run measured on: CPU, cores, kernel, clock source, virtualisation, memory and
//! the commit. Every report starts with it, so that no ratio is read without its machine.
//!
//! Read from `/proc` and `/sys` directly; `systemd-detect-virt` and `git` only when installed.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// What a run knows about its machine. A field that could not be read is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo` (or the closest field on other architectures).
    pub cpu_model: Option<String>,
    /// `std::thread::available_parallelism`: the CPUs this process may run on.
    pub logical_cores: Option<usize>,
    /// `processor` entries in `/proc/cpuinfo`.
    pub cpuinfo_processors: Option<usize>,
    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub kernel: Option<String>,
    /// `/sys/devices/system/clocksource/clocksource0/current_clocksource`.
    pub clocksource: Option<String>,
    /// The `hypervisor` CPU flag: a virtual machine (x86).
    pub hypervisor_flag: bool,
    /// `/sys/class/dmi/id/product_name`, when readable.
    pub dmi_product_name: Option<String>,
    /// `/sys/class/dmi/id/sys_vendor`, when readable.
    pub dmi_sys_vendor: Option<String>,
    /// What `systemd-detect-virt` prints (`none`, `kvm`, `docker`, ...), if it is installed.
    pub systemd_detect_virt: Option<String>,
    /// `MemTotal` from `/proc/meminfo`.
    pub mem_total_mib: Option<u64>,
    /// `/proc/sys/kernel/sched_autogroup_enabled`: the scheduler shares CPU between sessions
    /// first (Debian's default), which is why every target runs in a session of its own.
    pub sched_autogroup: Option<bool>,
    /// `git rev-parse --short HEAD` of the workspace.
    pub commit: Option<String>,
}

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub processors: usize,
    pub hypervisor: bool,
}

/// Parses `/proc/cpuinfo`: the first model name, the number of `processor` entries, and
/// whether the `hypervisor` flag is set.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    // x86 first; then what arm64, POWER, s390x and MIPS kernels print.
    const MODEL_KEYS: [&str; 5] = ["model name", "Model", "cpu model", "cpu", "Hardware"];
    let mut model: Option<(usize, String)> = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            info.processors += 1;
        } else if key == "flags" && value.split_whitespace().any(|f| f == "hypervisor") {
            info.hypervisor = true;
        } else if let Some(rank) = MODEL_KEYS.iter().position(|k| *k == key)
            && !value.is_empty()
            && model.as_ref().is_none_or(|(r, _)| rank < *r)
        {
            model = Some((rank, value.to_owned()));
        }
    }
    info.model = model.map(|(_, m)| m);
    info
}

/// `MemTotal` from `/proc/meminfo`, in MiB.
pub fn parse_meminfo_total_mib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut f = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = f.next()?.parse().ok()?;
    match f.next() {
        Some("kB") | None => Some(n / 1024),
        Some(_) => None,
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn command_output(prog: &str, args: &[&str]) -> Option<String> {
    let bin = programs::find_program(prog)?;
    let out = Command::new(bin).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

impl Machine {
    /// Reads this machine; `workspace` is where `git` looks for the commit.
    pub fn detect(workspace: &Path) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| parse_cpuinfo(&t))
            .unwrap_or_default();
        let dmi = |f: &str| read_trimmed(Path::new("/sys/class/dmi/id").join(f));
        Machine {
            cpu_model: cpu.model,
            logical_cores: std::thread::available_parallelism().ok().map(|n| n.get()),
            cpuinfo_processors: (cpu.processors > 0).then_some(cpu.processors),
            kernel: read_trimmed("/proc/sys/kernel/osrelease")
                .or_else(|| command_output("uname", &["-r"])),
            clocksource: read_trimmed(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            ),
            hypervisor_flag: cpu.hypervisor,
            dmi_product_name: dmi("product_name"),
            dmi_sys_vendor: dmi("sys_vendor"),
            // It exits 1 when it prints `none`: its output is the answer either way.
            systemd_detect_virt: command_output("systemd-detect-virt", &[]),
            mem_total_mib: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_meminfo_total_mib(&t)),
            sched_autogroup: read_trimmed("/proc/sys/kernel/sched_autogroup_enabled")
                .map(|v| v != "0"),
            commit: command_output(
                "git",
                &[
                    "-C",
                    &workspace.display().to_string(),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
            ),
        }
    }

    /// What is known about virtualisation, in words.
    pub fn virtualisation(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(v) = &self.systemd_detect_virt {
            parts.push(format!("systemd-detect-virt: {v}"));
        }
        if self.hypervisor_flag {
            parts.push("hypervisor CPU flag".to_owned());
        }
        let dmi: Vec<&str> = [&self.dmi_sys_vendor, &self.dmi_product_name]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !dmi.is_empty() {
            parts.push(format!("DMI: {}", dmi.join(" ")));
        }
        let virtual_ = self.hypervisor_flag
            || self
                .systemd_detect_virt
                .as_deref()
                .is_some_and(|v| v != "none");
        let verdict = if virtual_ {
            "virtualised"
        } else if self.systemd_detect_virt.is_some() {
            "not virtualised"
        } else {
            "virtualisation unknown"
        };
        if parts.is_empty() {
            verdict.to_owned()
        } else {
            format!("{verdict} ({})", parts.join("; "))
        }
    }

    /// One line: `machine: CPU, cores, memory, kernel, clock source, virtualisation, commit`.
    pub fn line(&self) -> String {
        let unknown = || "?".to_owned();
        let cores = match (self.logical_cores, self.cpuinfo_processors) {
            (Some(a), Some(c)) if a == c => format!("{a} logical cores"),
            (Some(a), Some(c)) => format!("{a} logical cores usable ({c} in /proc/cpuinfo)"),
            (Some(a), None) => format!("{a} logical cores"),
            (None, Some(c)) => format!("{c} logical cores (/proc/cpuinfo)"),
            (None, None) => "? logical cores".to_owned(),
        };
        format!(
            "machine: {cpu}, {cores}, {mem} RAM, Linux {kernel}, clocksource {cs}, \
             autogroup {autogroup}, {virt}, commit {commit}",
            cpu = self.cpu_model.clone().unwrap_or_else(unknown),
            mem = self
                .mem_total_mib
                .map_or_else(unknown, |m| format!("{:.1} GiB", m as f64 / 1024.0)),
            kernel = self.kernel.clone().unwrap_or_else(unknown),
            cs = self.clocksource.clone().unwrap_or_else(unknown),
            autogroup = match self.sched_autogroup {
                Some(true) => "on",
                Some(false) => "off",
                None => "?",
            },
            virt = self.virtualisation(),
            commit = self.commit.clone().unwrap_or_else(unknown),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
        model\t\t: 17\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu vme hypervisor lahf_lm\n\n\
        processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\n\
        model name\t: AMD EPYC 9B14\nflags\t\t: fpu vme hypervisor lahf_lm\n";

    const ARM64: &str = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n\
        CPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n\n\
        Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";

    #[test]
    fn cpuinfo_model_processors_and_hypervisor_flag() {
        let x = parse_cpuinfo(X86);
        assert_eq!(x.model.as_deref(), Some("AMD EPYC 9B14"));
        assert_eq!(x.processors, 2);
        assert!(x.hypervisor);

        let a = parse_cpuinfo(ARM64);
        assert_eq!(a.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(a.processors, 2);
        assert!(!a.hypervisor);

        // `model` (a number) and `flags` without the flag are not mistaken for them.
        let bare = parse_cpuinfo("processor : 0\nmodel : 85\nflags : fpu vme\n");
        assert_eq!(
            bare,
            CpuInfo {
                model: None,
                processors: 1,
                hypervisor: false
            }
        );
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn meminfo_total() {
        let m = "MemTotal:       24683784 kB\nMemFree:         5300000 kB\n";
        assert_eq!(parse_meminfo_total_mib(m), Some(24105));
        assert_eq!(parse_meminfo_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_mib("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn the_line_names_everything() {
        let m = Machine {
            cpu_model: Some("AMD EPYC".into()),
            logical_cores: Some(2),
            cpuinfo_processors: Some(2),
            kernel: Some("6.1.0-28-amd64".into()),
            clocksource: Some("kvm-clock".into()),
            hypervisor_flag: true,
            dmi_product_name: Some("Standard PC (Q35 + ICH9, 2009)".into()),
            dmi_sys_vendor: Some("QEMU".into()),
            systemd_detect_virt: Some("kvm".into()),
            mem_total_mib: Some(24105),
            sched_autogroup: Some(true),
            commit: Some("254c080".into()),
        };
        assert_eq!(
            m.line(),
            "machine: AMD EPYC, 2 logical cores, 23.5 GiB RAM, Linux 6.1.0-28-amd64, \
             clocksource kvm-clock, autogroup on, virtualised (systemd-detect-virt: kvm; hypervisor CPU flag; \
             DMI: QEMU Standard PC (Q35 + ICH9, 2009)), commit 254c080"
        );
        let bare = Machine {
            logical_cores: Some(4),
            cpuinfo_processors: Some(8),
            systemd_detect_virt: Some("none".into()),
            ..Machine::default()
        };
        let line = bare.line();
        assert!(
            line.contains("4 logical cores usable (8 in /proc/cpuinfo)"),
            "{line}"
        );
        assert!(
            line.contains("not virtualised (systemd-detect-virt: none)"),
            "{line}"
        );
        assert!(line.contains("commit ?"), "{line}");
        assert!(line.contains("autogroup ?"), "{line}");
        assert_eq!(
            Machine::default().virtualisation(),
            "virtualisation unknown"
        );
    }

    #[test]
    fn detects_this_machine() {
        let m = Machine::detect(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(m.logical_cores.is_some_and(|n| n > 0));
        assert!(m.kernel.is_some());
        assert!(m.mem_total_mib.is_some_and(|n| n > 0));
        assert!(m.line().starts_with("machine: "));
    }
}
