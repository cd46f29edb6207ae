//! The daemon's pid file, guarded by an `flock`: one daemon per pid file, and a stale file (left by
//! `kill -9`, a crash, a reboot) is taken over without asking, because a lock dies with its holder
//! while the file does not.
//!
//! The lock, not the content, says whether a daemon runs: [`PidFile::acquire`] locks with
//! `flock(LOCK_EX|LOCK_NB)` *before* truncating, so it never rewrites the file of a running daemon,
//! and [`holder`] probes with `flock(LOCK_SH|LOCK_NB)` on its own descriptor. The pid inside is
//! only what the messages and `bin/forklift stop` report.
//!
//! `flock` locks belong to the open file description, not to the process: two `open()`s of the file
//! conflict even within one process, and a forked child inherits the description, hence the lock.
//! The lock goes away only when every descriptor of that description is closed, so a child that
//! outlives the daemon would keep it "running": a forked child must close [`PidFile::fd`] (the
//! dispatcher does so right after `fork`). The file is opened with `O_CLOEXEC`, which covers
//! `exec`.
//!
//! The path is never followed through a symbolic link (`O_NOFOLLOW`), and only a regular file is
//! accepted: a pid file in a shared directory must not become a way to truncate another file.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use crate::core::error::{Error, Result};

/// How many times a lock that is busy is tried again before it counts as held: [`holder`] holds a
/// shared lock for a few microseconds while probing, which must not make a starting daemon think
/// another one runs.
const BUSY_RETRIES: u32 = 5;
/// The pause between those tries.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// How many times [`PidFile::acquire`] starts over when the file it locked was unlinked or replaced
/// meanwhile (a daemon that stopped between our `open` and our `flock`).
const REPLACED_RETRIES: u32 = 10;

/// The daemon's pid file, open and locked (`LOCK_EX`) for as long as this value lives.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// The locked file; its descriptor is the lock.
    fd: File,
}

impl PidFile {
    /// Opens (creating, mode 0644) and locks `path` with `flock(LOCK_EX|LOCK_NB)`, then writes
    /// `pid` and a newline (truncating first). A stale file (unlocked) is taken over; a file locked
    /// by a live process is left untouched and refused, with its pid in the message.
    pub fn acquire(path: &Path, pid: i32) -> Result<PidFile> {
        for _ in 0..REPLACED_RETRIES {
            let file = open_for_lock(path)?;
            lock_exclusive(&file, path)?;
            // A daemon that was stopping may have unlinked the file between our open and our lock:
            // the lock would then be on a file nobody can find. Start over on the path's file.
            if !same_file(&file, path)? {
                continue;
            }
            let pidfile = PidFile {
                path: path.to_path_buf(),
                fd: file,
            };
            pidfile.write_pid(pid)?;
            return Ok(pidfile);
        }
        Err(Error::InvalidArgument(format!(
            "pid file {} keeps being replaced while Forklift locks it; another program is \
             creating or removing it: stop that program or choose another pidFile",
            path.display()
        )))
    }

    /// The path the pid file was acquired at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked descriptor, so that a forked child can close it (otherwise the child keeps the
    /// lock, see the module doc). Still owned by this `PidFile`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Rewrites the pid (e.g. after `--daemonize` forked again); the lock is kept.
    pub fn write_pid(&self, pid: i32) -> Result<()> {
        let file = &self.fd;
        file.set_len(0).map_err(|e| io_error("ftruncate", &e))?;
        std::os::unix::fs::FileExt::write_all_at(file, format!("{pid}\n").as_bytes(), 0)
            .map_err(|e| io_error("pwrite", &e))?;
        Ok(())
    }

    /// Removes the file if the path still names the file we locked (same device and inode), then
    /// unlocks by closing; called at a clean exit. A file that replaced ours (a newer daemon's) is
    /// left alone. Failures are ignored: the lock goes away with the descriptor anyway, and a file
    /// left behind is stale, which the next [`PidFile::acquire`] takes over.
    pub fn release(self) {
        if let Ok(true) = same_file(&self.fd, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        drop(self.fd);
    }
}

/// Who holds the pid file at `path`: `Some(pid)` when a live process holds its lock, `None` when
/// the file is absent, unlocked (stale) or cannot be opened for reading. Probes with
/// `flock(LOCK_SH|LOCK_NB)` on a fresh `O_RDONLY|O_NOFOLLOW` descriptor (held: `EWOULDBLOCK`).
/// A symbolic link is refused as in [`PidFile::acquire`]; a file that is locked but holds no pid
/// is an error, since the holder cannot be named.
pub fn holder(path: &Path) -> Result<Option<i32>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) => {
            return match errno_of(&e) {
                Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES => Ok(None),
                Errno::ELOOP => Err(symlink_error(path)),
                errno => Err(Error::sys("open", errno)),
            }
        }
    };
    check_regular(&file, path)?;
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => return Ok(None),
        Err(Errno::EWOULDBLOCK) => {}
        Err(errno) => return Err(Error::sys("flock", errno)),
    }
    // Held. A daemon that just locked it may not have written its pid yet: give it a moment.
    for _ in 0..BUSY_RETRIES {
        if let Some(pid) = read_pid(&file) {
            return Ok(Some(pid));
        }
        std::thread::sleep(BUSY_PAUSE);
    }
    match read_pid(&file) {
        Some(pid) => Ok(Some(pid)),
        None => Err(Error::InvalidArgument(format!(
            "pid file {} is locked by a running process but holds no pid; find that process with \
             `fuser {}` (or lsof) and stop it",
            path.display(),
            path.display()
        ))),
    }
}

/// Opens `path` for locking: read-write, created with mode 0644, never through a symlink, never
/// truncated (that waits for the lock). Maps the failures to messages that say what to change.
fn open_for_lock(path: &Path) -> Result<File> {
    // Refuse a FIFO or a device before opening it (opening one can block or have effects); the
    // fstat after opening closes the race with a file swapped in between.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(symlink_error(path));
        }
        if !meta.file_type().is_file() {
            return Err(not_regular_error(path));
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, &e))?;
    check_regular(&file, path)?;
    Ok(file)
}

/// Takes `LOCK_EX|LOCK_NB` on `file`, retrying briefly while it is busy (see [`BUSY_RETRIES`]);
/// a lock still busy then belongs to a running daemon, named by the pid in the file.
fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    for attempt in 0..=BUSY_RETRIES {
        match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => return Ok(()),
            Err(Errno::EWOULDBLOCK) if attempt < BUSY_RETRIES => std::thread::sleep(BUSY_PAUSE),
            Err(Errno::EWOULDBLOCK) => break,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::sys("flock", errno)),
        }
    }
    let pid = match read_pid(file) {
        Some(pid) => pid.to_string(),
        None => "unknown".to_owned(),
    };
    let path = path.display();
    Err(Error::InvalidArgument(format!(
        "daemon already running as pid {pid} (pid file {path}); stop it first: bin/forklift stop \
         --pid-file={path}"
    )))
}

/// `flock(2)` on `file`; `op` is `LOCK_EX`, `LOCK_SH`, `LOCK_UN`, possibly with `LOCK_NB`.
/// (nix 0.29 deprecates its `flock` for `Flock`, which wants to own the file.)
fn flock(file: &File, op: libc::c_int) -> std::result::Result<(), Errno> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    Errno::result(unsafe { libc::flock(file.as_raw_fd(), op) }).map(drop)
}

/// The pid at the start of `file`, read from offset 0 without moving the file offset.
fn read_pid(file: &File) -> Option<i32> {
    let mut buf = [0u8; 32];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Whether `path` (not followed) still names the file open as `file`.
fn same_file(file: &File, path: &Path) -> Result<bool> {
    let ours = file.metadata().map_err(|e| io_error("fstat", &e))?;
    match std::fs::symlink_metadata(path) {
        Ok(theirs) => Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("lstat", &e)),
    }
}

/// Refuses an open `file` that is not a regular file.
fn check_regular(file: &File, path: &Path) -> Result<()> {
    let meta = file.metadata().map_err(|e| io_error("fstat", &e))?;
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(not_regular_error(path))
    }
}

fn open_error(path: &Path, e: &std::io::Error) -> Error {
    let uid = euid();
    match errno_of(e) {
        Errno::ELOOP => symlink_error(path),
        Errno::EISDIR | Errno::ENXIO => not_regular_error(path),
        Errno::ENOENT | Errno::ENOTDIR => {
            let dir = parent_of(path);
            Error::InvalidArgument(format!(
                "cannot create pid file {}: its directory {} does not exist; create it \
                 (mkdir -p {}) or choose another pidFile",
                path.display(),
                dir.display(),
                dir.display()
            ))
        }
        Errno::EACCES | Errno::EPERM | Errno::EROFS => Error::InvalidArgument(format!(
            "cannot open pid file {} for writing as uid {uid}: {}; fix the permissions of the \
             file or its directory {} (or run as a user that may write there), or choose \
             another pidFile",
            path.display(),
            errno_of(e).desc(),
            parent_of(path).display()
        )),
        errno => Error::sys("open", errno),
    }
}

fn symlink_error(path: &Path) -> Error {
    let target = match std::fs::read_link(path) {
        Ok(target) => target.display().to_string(),
        Err(_) => "?".to_owned(),
    };
    Error::InvalidArgument(format!(
        "pid file {} is a symbolic link; Forklift does not follow links for its pid file: point \
         pidFile at a real path (e.g. the link's target {target})",
        path.display()
    ))
}

fn not_regular_error(path: &Path) -> Error {
    Error::InvalidArgument(format!(
        "pid file {} exists and is not a regular file (a directory, FIFO, socket or device); \
         remove it if it is left over, or choose another pidFile",
        path.display()
    ))
}

/// The directory `path` is created in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The effective uid, for messages (nix's `geteuid` needs its `user` feature, which is not on).
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn io_error(call: &'static str, e: &std::io::Error) -> Error {
    Error::sys(call, errno_of(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    fn content(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("forklift-pidfile-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn message(err: Error) -> String {
        match err {
            Error::InvalidArgument(msg) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn acquire_writes_pid_and_release_removes() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        let pf = PidFile::acquire(&path, 4242).unwrap();
        assert_eq!(content(&path), "4242\n");
        assert_eq!(pf.path(), path.as_path());
        assert!(pf.fd() >= 0);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        pf.write_pid(7).unwrap();
        assert_eq!(content(&path), "7\n");
        pf.release();
        assert!(!path.exists());
    }

    #[test]
    fn flock_conflicts_between_descriptions_in_one_process() {
        // The premise of the next test: two open() of one file do not share a flock.
        let dir = TempDir::new();
        let path = dir.join("f");
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        flock(&a, libc::LOCK_EX | libc::LOCK_NB).unwrap();
        assert_eq!(
            flock(&b, libc::LOCK_SH | libc::LOCK_NB),
            Err(Errno::EWOULDBLOCK)
        );
        flock(&a, libc::LOCK_UN).unwrap();
        flock(&b, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    }

    #[test]
    fn second_acquire_refused_without_rewriting() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        let first = PidFile::acquire(&path, 111).unwrap();
        let msg = message(PidFile::acquire(&path, 222).unwrap_err());
        let p = path.display();
        assert_eq!(
            msg,
            format!(
                "daemon already running as pid 111 (pid file {p}); stop it first: bin/forklift \
                 stop --pid-file={p}"
            )
        );
        assert_eq!(content(&path), "111\n");
        first.release();
        let again = PidFile::acquire(&path, 333).unwrap();
        assert_eq!(content(&path), "333\n");
        again.release();
    }

    #[test]
    fn held_with_garbage_says_pid_unknown() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        let first = PidFile::acquire(&path, 111).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        let msg = message(PidFile::acquire(&path, 222).unwrap_err());
        assert!(msg.contains("running as pid unknown"), "{msg}");
        first.release();
    }

    #[test]
    fn stale_file_taken_over() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        // Left by a kill -9: a pid, maybe of a live unrelated process (ours), and no lock.
        std::fs::write(
            &path,
            format!("{}\nextra junk that is longer\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(holder(&path).unwrap(), None);
        let pf = PidFile::acquire(&path, 555).unwrap();
        assert_eq!(content(&path), "555\n");
        pf.release();
    }

    #[test]
    fn symlink_refused_and_target_untouched() {
        let dir = TempDir::new();
        let target = dir.join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let link = dir.join("d.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let msg = message(PidFile::acquire(&link, 1).unwrap_err());
        assert!(msg.contains("is a symbolic link"), "{msg}");
        assert!(msg.contains(&target.display().to_string()), "{msg}");
        assert_eq!(content(&target), "precious\n");
        assert!(matches!(holder(&link), Err(Error::InvalidArgument(_))));

        // A dangling link is refused too, and nothing is created at its target.
        let missing = dir.join("missing");
        let dangling = dir.join("dangling.pid");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();
        let msg = message(PidFile::acquire(&dangling, 1).unwrap_err());
        assert!(msg.contains("is a symbolic link"), "{msg}");
        assert!(!missing.exists());
    }

    #[test]
    fn symlink_refused_by_open_itself() {
        // The lstat pre-check can be raced; O_NOFOLLOW's ELOOP maps to the same message.
        let dir = TempDir::new();
        let link = dir.join("d.pid");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let e = std::io::Error::from_raw_os_error(libc::ELOOP);
        let msg = message(open_error(&link, &e));
        assert!(msg.contains("is a symbolic link"), "{msg}");
        assert!(msg.contains("/etc/hostname"), "{msg}");
    }

    #[test]
    fn not_a_regular_file_refused() {
        let dir = TempDir::new();
        let sub = dir.join("d.pid");
        std::fs::create_dir(&sub).unwrap();
        let msg = message(PidFile::acquire(&sub, 1).unwrap_err());
        assert!(msg.contains("not a regular file"), "{msg}");
        let fifo = dir.join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let msg = message(PidFile::acquire(&fifo, 1).unwrap_err());
        assert!(msg.contains("not a regular file"), "{msg}");
        assert!(matches!(holder(&fifo), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn missing_directory_named() {
        let dir = TempDir::new();
        let missing = dir.join("no/such");
        let path = missing.join("d.pid");
        let msg = message(PidFile::acquire(&path, 1).unwrap_err());
        let m = missing.display();
        assert!(
            msg.contains(&format!("its directory {m} does not exist")),
            "{msg}"
        );
        assert!(msg.contains(&format!("mkdir -p {m}")), "{msg}");
        assert!(msg.contains("choose another pidFile"), "{msg}");
        assert_eq!(holder(&path).unwrap(), None);
    }

    #[test]
    fn permission_denied_names_path_and_uid() {
        // Root ignores mode bits, so check the mapping itself as well as the real thing.
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let msg = message(open_error(&path, &e));
        let uid = euid();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("uid {uid}")), "{msg}");
        assert!(msg.contains("fix the permissions"), "{msg}");
        let e = std::io::Error::from_raw_os_error(libc::EROFS);
        assert!(message(open_error(&path, &e)).contains("choose another pidFile"));
        if uid != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555)).unwrap();
            let msg = message(PidFile::acquire(&path, 1).unwrap_err());
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert!(msg.contains(&format!("uid {uid}")), "{msg}");
        }
    }

    #[test]
    fn holder_some_while_held_none_after() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        assert_eq!(holder(&path).unwrap(), None);
        let pf = PidFile::acquire(&path, 9876).unwrap();
        assert_eq!(holder(&path).unwrap(), Some(9876));
        // The probe must not break the holder's lock.
        assert!(PidFile::acquire(&path, 1).is_err());
        pf.release();
        assert_eq!(holder(&path).unwrap(), None);
        // Stale: present, unlocked.
        std::fs::write(&path, "9876\n").unwrap();
        assert_eq!(holder(&path).unwrap(), None);
    }

    #[test]
    fn release_keeps_a_replaced_file() {
        let dir = TempDir::new();
        let path = dir.join("d.pid");
        let pf = PidFile::acquire(&path, 1).unwrap();
        let newer = dir.join("newer");
        std::fs::write(&newer, "2\n").unwrap();
        std::fs::rename(&newer, &path).unwrap();
        pf.release();
        assert_eq!(content(&path), "2\n");
    }
}
