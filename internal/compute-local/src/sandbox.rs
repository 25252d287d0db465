//! The bubblewrap sandbox of one execution: what the command may see, which syscalls it may
//! make, which host uid it runs as, and the limits it runs under.
//!
//! Threat model: the command is hostile. It runs in new user, pid, ipc, uts, cgroup and (unless
//! the network is shared) net namespaces, with no capabilities, as an unprivileged host uid of
//! its own (uid 0 only inside its namespace), under a seccomp filter that refuses the syscalls
//! that reach past namespaces (file handles, mounts, keyrings, bpf, new user namespaces...). It
//! sees read-only `/usr`, a generated minimal `/etc`, its own `/workspace`, `/tmp`, `/proc` and
//! `/dev` — never the data dir, runvoyd's keys or other executions. The runner that owns the
//! record stream stays outside the sandbox (see `runvoy_proto::sandbox`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use runvoy_proto::sandbox::{Rlimit, SandboxSpec};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use serde::{Deserialize, Serialize};

/// Resource limits of one execution. `None` means not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (and swap) in bytes, including what the command writes to its tmpfs mounts.
    pub memory_bytes: Option<u64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// CPU time in thousandths of a core (1000 = one full core).
    pub cpu_millis: Option<u64>,
    /// Size of the in-memory `/workspace`.
    pub workspace_bytes: Option<u64>,
    /// Size of `/tmp`.
    pub tmp_bytes: Option<u64>,
}

impl Limits {
    /// These limits with a run's own requests in place of the defaults.
    pub fn with(mut self, r: &runvoy_domain::Resources) -> Limits {
        if let Some(m) = r.memory_mb {
            self.memory_bytes = Some(m << 20);
        }
        if let Some(c) = r.cpu_millis {
            self.cpu_millis = Some(c);
        }
        if let Some(p) = r.pids {
            self.pids = Some(p);
        }
        if let Some(w) = r.workspace_mb {
            self.workspace_bytes = Some(w << 20);
        }
        self
    }
}

/// How each limit is enforced on this machine, as `GET /api/v1/health` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// `cgroup-v1`, `cgroup-v2`, `rlimit` or `none`, by limit name.
    pub limits: BTreeMap<String, String>,
    /// Commands run as an unprivileged host uid of their own.
    pub own_uid: bool,
}

/// Which cgroup hierarchy this machine offers runvoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cgroups {
    /// Separate v1 hierarchies, by controller name, under `/sys/fs/cgroup/<controller>`.
    V1(Vec<(&'static str, PathBuf)>),
    /// The unified v2 hierarchy.
    V2(PathBuf),
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// runvoy's own group below each hierarchy's root.
const CGROUP_PARENT: &str = "runvoy";

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

impl Cgroups {
    /// The hierarchies runvoy can create groups in (root only), with the controllers it uses.
    pub(crate) fn detect() -> Option<Cgroups> {
        if !is_root() {
            return None;
        }
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            let parent = root.join(CGROUP_PARENT);
            std::fs::create_dir_all(&parent).ok()?;
            // Delegate the controllers to runvoy's group and its children.
            for dir in [root, parent.as_path()] {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu");
            }
            return Some(Cgroups::V2(parent));
        }
        let mut v1 = Vec::new();
        for c in ["memory", "pids", "cpu"] {
            let parent = root.join(c).join(CGROUP_PARENT);
            if root.join(c).join("cgroup.procs").exists()
                && std::fs::create_dir_all(&parent).is_ok()
            {
                v1.push((c, parent));
            }
        }
        (!v1.is_empty()).then_some(Cgroups::V1(v1))
    }

    pub(crate) fn has(&self, controller: &str) -> bool {
        match self {
            Cgroups::V1(v) => v.iter().any(|(c, _)| *c == controller),
            Cgroups::V2(p) => std::fs::read_to_string(p.join("cgroup.subtree_control"))
                .map(|s| s.split_whitespace().any(|c| c == controller))
                .unwrap_or(false),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Cgroups::V1(_) => "cgroup-v1",
            Cgroups::V2(_) => "cgroup-v2",
        }
    }

    /// Creates the execution's group(s), writes the limits and returns the `cgroup.procs`
    /// files to join.
    pub(crate) fn create(&self, id: &str, l: &Limits) -> std::io::Result<Vec<PathBuf>> {
        let write = |dir: &Path, file: &str, v: String| -> std::io::Result<()> {
            std::fs::write(dir.join(file), v).map_err(|e| {
                std::io::Error::new(e.kind(), format!("writing {}/{file}: {e}", dir.display()))
            })
        };
        let mut procs = Vec::new();
        match self {
            Cgroups::V1(v) => {
                for (c, parent) in v {
                    let dir = parent.join(id);
                    std::fs::create_dir_all(&dir)?;
                    match *c {
                        "memory" => {
                            if let Some(m) = l.memory_bytes {
                                write(&dir, "memory.limit_in_bytes", m.to_string())?;
                                // Without swap accounting the file is absent; with it, the
                                // command must not escape its limit into swap.
                                if dir.join("memory.memsw.limit_in_bytes").exists() {
                                    write(&dir, "memory.memsw.limit_in_bytes", m.to_string())?;
                                }
                            }
                        }
                        "pids" => {
                            if let Some(p) = l.pids {
                                write(&dir, "pids.max", p.to_string())?;
                            }
                        }
                        "cpu" => {
                            if let Some(c) = l.cpu_millis {
                                write(&dir, "cpu.cfs_period_us", "100000".into())?;
                                write(&dir, "cpu.cfs_quota_us", (c * 100).to_string())?;
                            }
                        }
                        _ => {}
                    }
                    procs.push(dir.join("cgroup.procs"));
                }
            }
            Cgroups::V2(parent) => {
                let dir = parent.join(id);
                std::fs::create_dir_all(&dir)?;
                if let Some(m) = l.memory_bytes {
                    write(&dir, "memory.max", m.to_string())?;
                    let _ = write(&dir, "memory.swap.max", "0".into());
                }
                if let Some(p) = l.pids {
                    write(&dir, "pids.max", p.to_string())?;
                }
                if let Some(c) = l.cpu_millis {
                    write(&dir, "cpu.max", format!("{} 100000", c * 100))?;
                }
                procs.push(dir.join("cgroup.procs"));
            }
        }
        Ok(procs)
    }

    /// Moves the calling process into runvoy's own group of the v1 pids hierarchy, which has
    /// no limit. Every cgroup migration waits for an RCU grace period (about 6 ms here) unless
    /// another migration ran within the last one; the supervisor does this on a thread as it
    /// starts, so that wait overlaps the sidecar and the sandbox's own join soon after is
    /// quick. (On v2 the parent may hold no process, and nothing is done.)
    pub(crate) fn warm_migration(&self) {
        if let Cgroups::V1(v) = self
            && let Some((_, parent)) = v.iter().find(|(c, _)| *c == "pids")
        {
            let _ = std::fs::write(parent.join("cgroup.procs"), "0");
        }
    }

    /// Whether the execution's memory group hit its limit and the kernel killed a process.
    pub(crate) fn oom_killed(&self, id: &str) -> bool {
        match self {
            Cgroups::V1(v) => v.iter().filter(|(c, _)| *c == "memory").any(|(_, p)| {
                std::fs::read_to_string(p.join(id).join("memory.oom_control"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                    })
                    .is_some_and(|n| n > 0)
            }),
            Cgroups::V2(p) => std::fs::read_to_string(p.join(id).join("memory.events"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                })
                .is_some_and(|n| n > 0),
        }
    }

    /// Removes the execution's groups once nothing runs in them.
    pub(crate) fn remove(&self, id: &str) {
        let dirs: Vec<PathBuf> = match self {
            Cgroups::V1(v) => v.iter().map(|(_, p)| p.join(id)).collect(),
            Cgroups::V2(p) => vec![p.join(id)],
        };
        for d in dirs {
            // A group can only be removed once empty; the sandbox's last processes may take a
            // moment to be reaped after the launcher exits.
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// How each limit is enforced here (for `/api/v1/health`).
pub fn enforcement() -> Enforcement {
    let cg = Cgroups::detect();
    let mut limits = BTreeMap::new();
    for (name, controller) in [("memory", "memory"), ("pids", "pids"), ("cpu", "cpu")] {
        let how = match &cg {
            Some(c) if c.has(controller) => c.label(),
            _ if name == "pids" && is_root() => "rlimit",
            _ if name == "memory" => "rlimit",
            _ => "none",
        };
        limits.insert(name.to_owned(), how.to_owned());
    }
    // Size-limited tmpfs mounts need root for the workspace; /tmp is bubblewrap's own.
    limits.insert(
        "workspace".into(),
        if is_root() { "tmpfs" } else { "none" }.into(),
    );
    limits.insert("tmp".into(), "tmpfs".into());
    limits.insert("open_files".into(), "rlimit".into());
    Enforcement {
        limits,
        own_uid: is_root(),
    }
}

/// The unprivileged host uid (and gid) of an execution: one per execution, from a range no
/// real user has, so executions cannot signal, ptrace or read each other even by accident.
pub fn sandbox_uid(base: u32, id: &str) -> u32 {
    const SLOTS: u32 = 1 << 20;
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    base + h % SLOTS
}

/// Small host files under `/etc` worth having (no secrets; much software misbehaves without
/// them): copied into the generated `/etc` (symlinks recreated) when runvoyd starts, which costs
/// nothing per execution, unlike a bind mount each.
const ETC_COPIED: &[&str] = &[
    "ld.so.cache",
    "localtime",
    "timezone",
    "os-release",
    "debian_version",
    "protocols",
    "services",
    "mime.types",
    "ca-certificates.conf",
];

/// Host directories under `/etc` bound read-only over their mount points (CA certificates; the
/// `alternatives` links that `awk`, `editor` and friends resolve through).
const ETC_BOUND: &[&str] = &["ssl", "alternatives"];

/// Writes a generated `/etc` into `etc`.
pub(crate) fn generate_etc(etc: &Path, share_net: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(etc)?;
    std::fs::set_permissions(etc, std::fs::Permissions::from_mode(0o755))?;
    let files: [(&str, &str); 6] = [
        (
            "passwd",
            "root:x:0:0:root:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
        (
            "hosts",
            "127.0.0.1\tlocalhost runvoy\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        ("hostname", "runvoy\n"),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
        ),
        ("shells", "/bin/sh\n/bin/bash\n"),
    ];
    for (name, body) in files {
        std::fs::write(etc.join(name), body)?;
    }
    if share_net && let Ok(r) = std::fs::read("/etc/resolv.conf") {
        std::fs::write(etc.join("resolv.conf"), r)?;
    }
    for name in ETC_COPIED {
        let host = Path::new("/etc").join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        let at = etc.join(name);
        let _ = std::fs::remove_file(&at);
        if meta.file_type().is_symlink() {
            // Relative or into /usr: the same link works inside.
            std::os::unix::fs::symlink(std::fs::read_link(&host)?, &at)?;
        } else if meta.is_file() {
            std::fs::copy(&host, &at)?;
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    // The mount points must exist beforehand: the bound /etc is read-only.
    for name in ETC_BOUND {
        if Path::new("/etc").join(name).is_dir() {
            std::fs::create_dir_all(etc.join(name))?;
        }
    }
    Ok(())
}

/// The bubblewrap arguments that bind [`ETC_BOUND`] over a generated `/etc`.
fn etc_binds() -> Vec<String> {
    ETC_BOUND
        .iter()
        .filter(|n| Path::new("/etc").join(n).is_dir())
        .flat_map(|n| ["--ro-bind".into(), format!("/etc/{n}"), format!("/etc/{n}")])
        .collect()
}

/// The sandbox files every execution shares, written once when runvoyd starts: the generated
/// `/etc` without and with the host's resolver (`etc/`, `etc-net/`) and the compiled seccomp
/// programs.
pub(crate) fn write_assets(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    generate_etc(&dir.join("etc"), false)?;
    generate_etc(&dir.join("etc-net"), true)?;
    for (i, prog) in seccomp_programs()
        .map_err(std::io::Error::other)?
        .into_iter()
        .enumerate()
    {
        crate::compute::write_atomic(&dir.join(format!("seccomp-{i}.bpf")), &prog, 0o600)?;
    }
    Ok(())
}

/// Syscalls refused with EPERM: each reaches past the namespaces (file handles open any inode
/// of a mounted filesystem; mounts, keyrings, bpf, perf, module and kexec calls act on the host
/// kernel), or is a frequent source of kernel exploits (userfaultfd, io_uring).
fn denied_syscalls() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_lookup_dcookie,
    ]);
    v
}

/// On x86_64 the x32 ABI reaches the same kernel entry points with bit 30 set in the syscall
/// number: a deny list must name those numbers too, or it can be walked around.
#[cfg(target_arch = "x86_64")]
fn with_x32(nrs: Vec<i64>) -> Vec<i64> {
    const X32: i64 = 0x4000_0000;
    // x32 variants that live at their own numbers (compat entry points).
    const X32_KEXEC_LOAD: i64 = 528;
    let mut out: Vec<i64> = nrs.iter().flat_map(|n| [*n, n | X32]).collect();
    out.push(X32 | X32_KEXEC_LOAD);
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn with_x32(nrs: Vec<i64>) -> Vec<i64> {
    nrs
}

fn flag_rule(flag: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )?])
}

/// The compiled seccomp programs, in the byte layout `bwrap --add-seccomp-fd` reads.
///
/// Two programs: the deny list (EPERM, and new user namespaces through clone/unshare), and
/// `clone3` answered with ENOSYS — its flags live in memory a filter cannot inspect, and ENOSYS
/// makes libc fall back to `clone`, whose flags the first program checks.
pub(crate) fn seccomp_programs() -> Result<Vec<Vec<u8>>, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = with_x32(denied_syscalls())
        .into_iter()
        .map(|n| (n, vec![]))
        .collect();
    let newuser = libc::CLONE_NEWUSER as u64;
    for nr in with_x32(vec![libc::SYS_clone, libc::SYS_unshare]) {
        deny.insert(nr, vec![flag_rule(newuser).map_err(|e| e.to_string())?]);
    }
    let first: BpfProgram = SeccompFilter::new(
        deny,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| format!("seccomp: {e}"))?;
    let clone3: BpfProgram = SeccompFilter::new(
        with_x32(vec![libc::SYS_clone3])
            .into_iter()
            .map(|n| (n, vec![]))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| format!("seccomp: {e}"))?;
    Ok([first, clone3]
        .iter()
        .map(|p| {
            p.iter()
                .flat_map(|f| {
                    let mut b = Vec::with_capacity(8);
                    b.extend_from_slice(&f.code.to_ne_bytes());
                    b.push(f.jt);
                    b.push(f.jf);
                    b.extend_from_slice(&f.k.to_ne_bytes());
                    b
                })
                .collect()
        })
        .collect())
}

/// Everything the supervisor decided for one sandboxed runner step.
pub(crate) struct Plan<'a> {
    pub bwrap: &'a Path,
    /// See [`write_assets`].
    pub assets: &'a Path,
    pub workspace: &'a Path,
    pub share_net: bool,
    pub limits: Limits,
    pub uid: Option<u32>,
    pub cgroup_procs: Vec<PathBuf>,
    /// The memory limit is enforced by a cgroup (else by RLIMIT_AS, a cruder stand-in).
    pub memory_cgroup: bool,
}

/// Builds the sandbox spec (bubblewrap arguments, seccomp files, uid, rlimits) and writes the
/// files it refers to into the execution dir.
pub(crate) fn build_spec(p: &Plan<'_>) -> std::io::Result<SandboxSpec> {
    let mut a: Vec<String> = vec![p.bwrap.display().to_string()];
    a.extend(
        [
            "--unshare-user",
            "--uid",
            "0",
            "--gid",
            "0",
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "runvoy",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        .map(String::from),
    );
    if !p.share_net {
        a.push("--unshare-net".into());
    }
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(target) => a.extend(["--symlink".into(), target.display().to_string(), top.into()]),
            Err(_) if path.is_dir() => a.extend(["--ro-bind".into(), top.into(), top.into()]),
            Err(_) => {}
        }
    }
    // The sandbox uid resolves these paths itself: the data dir must be traversable by it
    // (see `LocalCompute::new`), though nothing in it is readable.
    let etc = p.assets.join(if p.share_net { "etc-net" } else { "etc" });
    a.extend(["--ro-bind".into(), etc.display().to_string(), "/etc".into()]);
    a.extend(etc_binds());
    a.extend(["--proc", "/proc", "--dev", "/dev"].map(String::from));
    if let Some(t) = p.limits.tmp_bytes {
        a.extend(["--size".into(), t.to_string()]);
    }
    a.extend(["--tmpfs", "/tmp"].map(String::from));
    a.extend([
        "--bind".into(),
        p.workspace.display().to_string(),
        "/workspace".into(),
        "--chdir".into(),
        "/workspace".into(),
    ]);

    let seccomp = (0..2)
        .map(|i| {
            p.assets
                .join(format!("seccomp-{i}.bpf"))
                .display()
                .to_string()
        })
        .collect();
    let mut rlimits = vec![
        Rlimit {
            resource: "nofile".into(),
            value: 4096,
        },
        Rlimit {
            resource: "core".into(),
            value: 0,
        },
    ];
    // Without a memory cgroup, address space is the only handle: cruder (it counts reservations,
    // not use), but a runaway allocation still ends in ENOMEM instead of the host's OOM killer.
    if let (Some(m), false) = (p.limits.memory_bytes, p.memory_cgroup) {
        rlimits.push(Rlimit {
            resource: "as".into(),
            value: m,
        });
    }
    // With a uid of its own the process count is per execution, so it backs up pids.max.
    if let (Some(pids), Some(_)) = (p.limits.pids, p.uid) {
        rlimits.push(Rlimit {
            resource: "nproc".into(),
            value: pids,
        });
    }
    Ok(SandboxSpec {
        launcher: a,

        seccomp,
        cgroup_procs: p
            .cgroup_procs
            .iter()
            .map(|c| c.display().to_string())
            .collect(),
        uid: p.uid,
        gid: p.uid,
        rlimits,
    })
}

/// Gives the supervisor a mount namespace of its own with a size-limited tmpfs on the workspace:
/// the workspace then lives in memory (charged to the command's memory limit), cannot fill the
/// data dir's disk, and disappears with the supervisor — no mount is ever left behind.
pub(crate) fn private_workspace(ws: &Path, bytes: u64, uid: Option<u32>) -> std::io::Result<()> {
    use std::ffi::CString;
    let os_err = |what: &str| {
        let e = std::io::Error::last_os_error();
        std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    // SAFETY: plain syscalls with valid C strings; the supervisor is single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(os_err("unshare(CLONE_NEWNS)"));
        }
        let root = CString::new("/").expect("no NUL");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(os_err("making mounts private"));
        }
        let target = CString::new(ws.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::other("workspace path has a NUL byte"))?;
        let id = uid.unwrap_or(0);
        let opts =
            CString::new(format!("size={bytes},mode=0700,uid={id},gid={id}")).expect("no NUL");
        let fstype = CString::new("tmpfs").expect("no NUL");
        if libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        ) != 0
        {
            return Err(os_err("mounting the workspace tmpfs"));
        }
    }
    Ok(())
}

/// Hands everything in the workspace to the sandbox uid, except the environment file, which
/// the runner reads (and removes) before the command starts.
pub(crate) fn chown_workspace(ws: &Path, uid: u32) -> std::io::Result<()> {
    fn walk(p: &Path, uid: u32, skip: &Path) -> std::io::Result<()> {
        if p == skip {
            return Ok(());
        }
        std::os::unix::fs::lchown(p, Some(uid), Some(uid))?;
        if std::fs::symlink_metadata(p)?.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, skip)?;
            }
        }
        Ok(())
    }
    walk(ws, uid, &ws.join(".env"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_distinct_and_in_range() {
        let base = 1_900_000_000;
        let a = sandbox_uid(base, "0123456789abcdef0123456789abcdef");
        assert_eq!(a, sandbox_uid(base, "0123456789abcdef0123456789abcdef"));
        assert_ne!(a, sandbox_uid(base, "0123456789abcdef0123456789abcdee"));
        assert!((base..base + (1 << 20)).contains(&a));
    }

    #[test]
    fn seccomp_programs_compile_to_whole_instructions() {
        let progs = seccomp_programs().unwrap();
        assert_eq!(progs.len(), 2);
        for p in progs {
            assert!(!p.is_empty());
            assert_eq!(p.len() % 8, 0, "struct sock_filter is 8 bytes");
        }
    }

    #[test]
    fn generated_etc_has_no_host_accounts() {
        let d = tempfile::tempdir().unwrap();
        write_assets(d.path()).unwrap();
        let passwd = std::fs::read_to_string(d.path().join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"));
        assert_eq!(passwd.lines().count(), 2);
        assert!(!d.path().join("etc/resolv.conf").exists());
        assert!(!d.path().join("etc/shadow").exists());
        assert!(d.path().join("seccomp-1.bpf").exists());
        assert!(
            !etc_binds()
                .iter()
                .any(|a| a.contains("shadow") || a.contains("passwd"))
        );
    }
}
