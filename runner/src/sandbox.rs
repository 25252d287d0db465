//! Starting the command inside the local sandbox (bubblewrap), as [`SandboxSpec`] says.
//!
//! The runner stays outside: it keeps the record stream (its stdout) and the only handle on the
//! sandbox, and the command, in its own user and pid namespaces under another uid, can neither
//! see nor reach it. Joining the cgroups and dropping to the sandbox uid happen between fork and
//! exec, so no process of the command ever runs outside its limits or as the runner's user.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use runvoy_proto::sandbox::{Rlimit, SandboxSpec};

/// A loaded spec, with the files the launcher needs already open.
pub struct Sandbox {
    spec: SandboxSpec,
    seccomp_fds: Vec<RawFd>,
    cgroup_procs: Vec<File>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for fd in self.seccomp_fds.drain(..) {
            // SAFETY: fds we opened and own.
            unsafe { libc::close(fd) };
        }
    }
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "nproc" => libc::RLIMIT_NPROC,
        "nofile" => libc::RLIMIT_NOFILE,
        "fsize" => libc::RLIMIT_FSIZE,
        "core" => libc::RLIMIT_CORE,
        "as" => libc::RLIMIT_AS,
        _ => return None,
    })
}

impl Sandbox {
    /// Reads the spec at `path` and opens what the launcher inherits.
    pub fn load(path: &Path) -> Result<Sandbox, String> {
        let raw = std::fs::read(path)
            .map_err(|e| format!("cannot read sandbox spec {}: {e}", path.display()))?;
        let spec: SandboxSpec = serde_json::from_slice(&raw)
            .map_err(|e| format!("invalid sandbox spec {}: {e}", path.display()))?;
        if spec.launcher.is_empty() {
            return Err("sandbox spec names no launcher".into());
        }
        for r in &spec.rlimits {
            rlimit_resource(&r.resource)
                .ok_or_else(|| format!("unknown rlimit {:?} in sandbox spec", r.resource))?;
        }
        let mut sb = Sandbox {
            spec,
            seccomp_fds: Vec::new(),
            cgroup_procs: Vec::new(),
        };
        for f in sb.spec.seccomp.clone() {
            let c = CString::new(f.as_bytes()).map_err(|_| format!("bad path {f:?}"))?;
            // Deliberately without O_CLOEXEC: the launcher inherits it and reads the filter.
            // SAFETY: valid C string.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                return Err(format!(
                    "cannot open seccomp filter {f}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            sb.seccomp_fds.push(fd);
        }
        for p in &sb.spec.cgroup_procs {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| format!("cannot open {p}: {e}"))?;
            sb.cgroup_procs.push(f);
        }
        Ok(sb)
    }

    /// The launcher command that runs `program args…` in the sandbox. The returned command
    /// must be spawned while `self` is alive (it inherits the seccomp descriptors).
    /// `chdir` (a path inside the sandbox) replaces the launcher's own working directory.
    pub fn command(&self, program: &OsStr, args: &[OsString], chdir: Option<&Path>) -> Command {
        let (launcher, largs) = self.spec.launcher.split_first().expect("checked in load");
        let mut cmd = Command::new(launcher);
        cmd.args(largs);
        if let Some(dir) = chdir {
            // bubblewrap keeps the last --chdir it is given.
            cmd.arg("--chdir").arg(dir);
        }
        for fd in &self.seccomp_fds {
            cmd.arg("--add-seccomp-fd").arg(fd.to_string());
        }
        cmd.arg("--").arg(program).args(args);
        let cgroup_fds: Vec<RawFd> = self.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        let rlimits: Vec<(libc::__rlimit_resource_t, u64)> = self
            .spec
            .rlimits
            .iter()
            .filter_map(|Rlimit { resource, value }| Some((rlimit_resource(resource)?, *value)))
            .collect();
        let ids = self.spec.uid.zip(self.spec.gid);
        // SAFETY: only async-signal-safe calls (write, setrlimit, setgroups, setres[ug]id,
        // prctl) between fork and exec; the vectors were built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &cgroup_fds {
                    // "0" moves the writing process: the launcher, before anything runs.
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (res, v) in &rlimits {
                    let lim = libc::rlimit {
                        rlim_cur: *v,
                        rlim_max: *v,
                    };
                    if libc::setrlimit(*res, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some((uid, gid)) = ids
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // No setuid binary in the sandbox may gain privileges.
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

/// Parent-pid and process-group of every process, read from /proc.
fn processes() -> Vec<(libc::pid_t, libc::pid_t, libc::pid_t)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(pgrp)) = (
            f.get(1).and_then(|v| v.parse().ok()),
            f.get(2).and_then(|v| v.parse().ok()),
        ) {
            out.push((pid, ppid, pgrp));
        }
    }
    out
}

/// The process groups of everything the sandboxed command runs, given the launcher's pid.
///
/// bubblewrap with a pid namespace is two processes deep (the launcher, then the namespace's
/// init) before the command, which it starts in a new session: those two must not be
/// signalled — the launcher would die of SIGTERM and take the sandbox down with SIGKILL, with
/// no grace for the command.
pub fn command_groups(launcher: libc::pid_t) -> Vec<libc::pid_t> {
    let procs = processes();
    let children = |p: libc::pid_t| -> Vec<libc::pid_t> {
        procs
            .iter()
            .filter(|(_, pp, _)| *pp == p)
            .map(|(c, _, _)| *c)
            .collect()
    };
    let mut frontier: Vec<libc::pid_t> =
        children(launcher).into_iter().flat_map(&children).collect();
    let mut groups = Vec::new();
    while let Some(p) = frontier.pop() {
        if let Some((_, _, g)) = procs.iter().find(|(pid, _, _)| *pid == p)
            && !groups.contains(g)
        {
            groups.push(*g);
        }
        frontier.extend(children(p));
    }
    groups
}
