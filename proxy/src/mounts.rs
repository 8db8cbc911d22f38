//! Where filesystem lookups run (a site's, and the walks of `proxy-fcgi-pathinfo=full` routes):
//! on the serving thread, or in the blocking pool.
//!
//! Mapping a request to the filesystem (a `stat` per path component, `realpath`, opening the
//! file) costs a few microseconds on a local filesystem, about what a trip to the blocking
//! pool and back costs on its own (two thread wake-ups). On a network or FUSE filesystem a
//! lookup can wait for as long as the server takes to answer, and on a serving thread it would
//! hold up every connection of that thread. So lookups run on the serving thread only while
//! every filesystem mounted (outside `/proc`, `/sys` and `/dev`) is one the kernel answers
//! from its own memory or a local disk: a symbolic link in a site can point anywhere, so the
//! filesystems under its roots are not enough to know. The mount table is read when the
//! configuration loads and again, off the serving thread, at most every [`RECHECK`] while
//! requests come, so a network filesystem mounted later moves the lookups off within about
//! that long. A configuration without a site (whose only lookups are the walks of routes with
//! `proxy-fcgi-pathinfo=full`) reads it first when a request needs a lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `filesystem_lookups`: where filesystem lookups run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LookupMode {
    /// On the serving thread while every mounted filesystem is local, else in the pool.
    #[default]
    Auto,
    /// Always in the blocking pool (storage whose latency the mount table does not show, such
    /// as a network block device under ext4).
    Pool,
    /// Always on the serving thread, whatever is mounted (a filesystem the list does not know
    /// that answers at once, an automount of a local disk).
    ServingThread,
}

impl std::str::FromStr for LookupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LookupMode::Auto),
            "pool" => Ok(LookupMode::Pool),
            "serving-thread" => Ok(LookupMode::ServingThread),
            _ => Err(format!("`{s}`: expected auto, pool or serving-thread")),
        }
    }
}

/// How often the mount table is read again while requests come.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Filesystems whose lookups are answered from memory or a local disk.
const LOCAL: &[&str] = &[
    // On a disk (or an image of one).
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "zfs",
    "f2fs",
    "jfs",
    "reiserfs",
    "nilfs2",
    "bcachefs",
    "vfat",
    "msdos",
    "exfat",
    "ntfs",
    "ntfs3",
    "hfsplus",
    "udf",
    "iso9660",
    "squashfs",
    "erofs",
    // In memory, or made of other mounts.
    "rootfs",
    "tmpfs",
    "ramfs",
    "overlay",
    "aufs",
    "shiftfs",
    "ecryptfs",
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "hugetlbfs",
    "configfs",
    "efivarfs",
    "binfmt_misc",
    "fusectl",
    "nsfs",
    "selinuxfs",
    "rpc_pipefs",
];

/// Mounts under these are the kernel's and the container runtime's, never a site's (LXC puts
/// a FUSE filesystem over files of `/proc`).
const SYSTEM: &[&str] = &["/proc", "/sys", "/dev"];

/// A mounted filesystem lookups on a serving thread must not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLocal {
    pub mount_point: String,
    pub fs_type: String,
}

/// The first mount in `mountinfo` (the text of `/proc/self/mountinfo`) that is not local.
pub fn first_not_local(mountinfo: &str) -> Option<NotLocal> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        // ID, parent, dev, root, mount point, options, optional fields..., "-", type, source.
        let sep = fields.iter().position(|f| *f == "-")?;
        let mount_point = unescape(fields.get(4)?);
        let fs_type = *fields.get(sep + 1)?;
        let system = SYSTEM.iter().any(|s| {
            mount_point
                .strip_prefix(s)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        (!system && !LOCAL.contains(&fs_type)).then(|| NotLocal {
            mount_point,
            fs_type: fs_type.to_owned(),
        })
    })
}

/// A mount point as the kernel writes it: space, tab, newline and backslash in octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What reading the mount table found: `None` when lookups may run on the serving thread.
fn check() -> Option<NotLocal> {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => first_not_local(&text),
        Err(e) => Some(NotLocal {
            mount_point: format!("/proc/self/mountinfo ({e})"),
            fs_type: "unknown".to_owned(),
        }),
    }
}

/// `checked` before the first reading of a place made with [`LookupPlace::lazy`].
const NEVER: u64 = u64::MAX;

/// Where lookups run now, shared by the serving threads.
#[derive(Debug)]
pub struct LookupPlace {
    mode: LookupMode,
    inline: AtomicBool,
    /// When the table was last read, in milliseconds since `start` ([`NEVER`]: not yet).
    checked: AtomicU64,
    checking: AtomicBool,
    start: tokio::time::Instant,
    /// What the last reading found off the list (for `/status`).
    found: std::sync::Mutex<Option<NotLocal>>,
}

impl LookupPlace {
    /// Reads the mount table now (under [`LookupMode::Auto`]) and says where lookups go.
    pub fn new(mode: LookupMode) -> Arc<LookupPlace> {
        let found = match mode {
            LookupMode::Auto => check(),
            LookupMode::Pool | LookupMode::ServingThread => None,
        };
        let place = Self::made(mode, mode != LookupMode::Pool && found.is_none(), 0, found);
        tracing::info!("{}", place.describe_line());
        place
    }

    /// Reads the mount table (under [`LookupMode::Auto`]) only when a lookup is first wanted;
    /// until then lookups go to the pool.
    pub fn lazy(mode: LookupMode) -> Arc<LookupPlace> {
        Self::made(mode, mode == LookupMode::ServingThread, NEVER, None)
    }

    fn made(
        mode: LookupMode,
        inline: bool,
        checked: u64,
        found: Option<NotLocal>,
    ) -> Arc<LookupPlace> {
        Arc::new(LookupPlace {
            mode,
            inline: AtomicBool::new(inline),
            checked: AtomicU64::new(checked),
            checking: AtomicBool::new(false),
            start: tokio::time::Instant::now(),
            found: std::sync::Mutex::new(found),
        })
    }

    /// Whether a lookup may run on the serving thread now. Under [`LookupMode::Auto`], reads
    /// the mount table again off the serving thread when the last reading is older than
    /// [`RECHECK`] (or there was none); this request goes by the last one.
    pub fn inline(self: &Arc<Self>) -> bool {
        if self.mode != LookupMode::Auto {
            return self.mode == LookupMode::ServingThread;
        }
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.checked.load(Ordering::Relaxed);
        if (last == NEVER || now.saturating_sub(last) >= RECHECK.as_millis() as u64)
            && !self.checking.swap(true, Ordering::AcqRel)
        {
            let me = self.clone();
            tokio::task::spawn_blocking(move || {
                let found = check();
                let inline = found.is_none();
                if let Ok(mut f) = me.found.lock() {
                    *f = found;
                }
                let first = me.checked.swap(now, Ordering::Relaxed) == NEVER;
                if me.inline.swap(inline, Ordering::Relaxed) != inline || first {
                    tracing::info!("{}", me.describe_line());
                }
                me.checking.store(false, Ordering::Release);
            });
        }
        self.inline.load(Ordering::Relaxed)
    }

    /// Where lookups run and why, for `/status` (`None` while a lazy place has not read the
    /// mount table: nothing has needed a lookup).
    pub fn describe(&self) -> Option<serde_json::Value> {
        if self.mode == LookupMode::Auto && self.checked.load(Ordering::Relaxed) == NEVER {
            return None;
        }
        let (place, why) = self.place_and_why();
        Some(serde_json::json!({ "place": place, "why": why }))
    }

    fn describe_line(&self) -> String {
        let (place, why) = self.place_and_why();
        format!("filesystem lookups: {place} ({why})")
    }

    fn place_and_why(&self) -> (&'static str, String) {
        let place = if self.inline.load(Ordering::Relaxed) {
            "serving-threads"
        } else {
            "pool"
        };
        let why = match (self.mode, self.found.lock().ok().and_then(|f| f.clone())) {
            (LookupMode::Pool, _) => "filesystem_lookups = \"pool\"".to_owned(),
            (LookupMode::ServingThread, _) => "filesystem_lookups = \"serving-thread\"".to_owned(),
            (LookupMode::Auto, Some(n)) => format!("{} is {}", n.mount_point, n.fs_type),
            (LookupMode::Auto, None) => "every mounted filesystem is local".to_owned(),
        };
        (place, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "\
1191 1072 0:99 / / rw,relatime master:376 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1192 1191 0:103 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1193 1191 0:104 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1198 1193 0:102 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1199 1191 0:105 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1200 1199 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1205 1191 259:1 /var/lib/docker/volumes/www/_data /var/www rw,relatime - ext4 /dev/nvme0n1p1 rw
";

    #[test]
    fn a_machine_with_only_local_filesystems_looks_up_on_the_serving_thread() {
        assert_eq!(first_not_local(DOCKER), None);
    }

    #[test]
    fn a_network_fuse_or_automounted_filesystem_anywhere_moves_lookups_off() {
        for (line, point, ty) in [
            (
                "1300 1191 0:120 / /mnt/shared rw - nfs4 fs:/export rw,vers=4.2",
                "/mnt/shared",
                "nfs4",
            ),
            (
                "1300 1205 0:121 / /var/www/up\\040loads rw shared:9 - cifs //nas/u rw",
                "/var/www/up loads",
                "cifs",
            ),
            (
                "1300 1191 0:122 / /home/u/remote rw - fuse.sshfs u@h: rw",
                "/home/u/remote",
                "fuse.sshfs",
            ),
            (
                "1300 1191 0:123 / /net rw - autofs /etc/auto.net rw",
                "/net",
                "autofs",
            ),
        ] {
            let table = format!("{DOCKER}{line}\n");
            assert_eq!(
                first_not_local(&table),
                Some(NotLocal {
                    mount_point: point.to_owned(),
                    fs_type: ty.to_owned()
                }),
                "{line}"
            );
        }
    }

    #[test]
    fn fuse_over_proc_files_in_a_container_is_not_the_sites() {
        let lxcfs = "1301 1192 0:60 /proc/meminfo /proc/meminfo rw - fuse.lxcfs lxcfs rw\n\
                     1302 1199 0:60 /sys/devices/system/cpu /sys/devices/system/cpu rw - fuse.lxcfs lxcfs rw\n";
        assert_eq!(first_not_local(&format!("{DOCKER}{lxcfs}")), None);
        // Only under those directories, not beside them.
        let beside = "1303 1191 0:61 / /procdata rw - fuse.lxcfs lxcfs rw\n";
        assert_eq!(
            first_not_local(&format!("{DOCKER}{beside}")).map(|n| n.mount_point),
            Some("/procdata".to_owned())
        );
    }

    #[test]
    fn modes_read_from_text() {
        assert_eq!("auto".parse(), Ok(LookupMode::Auto));
        assert_eq!("pool".parse(), Ok(LookupMode::Pool));
        assert_eq!("serving-thread".parse(), Ok(LookupMode::ServingThread));
        assert!("inline".parse::<LookupMode>().is_err());
    }

    /// Told where to look up, the proxy does so whatever is mounted; told `auto`, it goes by
    /// the mount table.
    #[test]
    fn a_mode_that_names_a_place_is_that_place() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _in = rt.enter();
        assert!(!LookupPlace::new(LookupMode::Pool).inline());
        let forced = LookupPlace::new(LookupMode::ServingThread);
        assert!(forced.inline());
        assert_eq!(
            forced.describe().expect("a place")["place"],
            "serving-threads"
        );
        let auto = LookupPlace::new(LookupMode::Auto);
        assert_eq!(auto.inline(), check().is_none());
        // Lazy: nothing read, and lookups in the pool, until a lookup is wanted; then the
        // table is read off the serving thread and decides.
        let lazy = LookupPlace::lazy(LookupMode::Auto);
        assert!(lazy.describe().is_none());
        rt.block_on(async {
            assert!(
                !lazy.inline(),
                "the first lookup goes by no reading: the pool"
            );
            for _ in 0..500 {
                if lazy.describe().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(lazy.describe().is_some(), "read off the serving thread");
        assert_eq!(lazy.inline(), check().is_none());
        assert!(LookupPlace::lazy(LookupMode::ServingThread).inline());
    }
}
