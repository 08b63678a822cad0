//! `cos_root` sources: an object of the operator's local stand-in for COS,
//! read in place, never copied.
//!
//! Threat model: the object name comes from the caller's `ImageUrl`, and the
//! folder's contents may be writable by people other than the operator. So
//! `<root>/<bucket>-<appid>/<key>` is opened such that nothing inside the
//! folder can lead outside it: no `.`/`..` component, no symbolic link at any
//! step, and the object must be a regular file (a FIFO or a device must not
//! hang or feed the worker). The root itself is operator configuration and
//! may be a symbolic link.
//!
//! Where the kernel offers `openat2` (Linux 5.6+), one call with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` has the kernel enforce that for
//! the whole path at once. Older kernels (or a sandbox that hides the call)
//! get the equivalent walk: one `openat(O_NOFOLLOW)` per component. The walk
//! also names the offending component when `openat2` refuses a path.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use super::fetch::{FetchError, FetchHandle, FetchOutcome};
use super::spool::{hash_file_in_place, FetchProgress, Spool};
use crate::config::LimitsConfig;

/// Which object of the folder, and the limits it must respect.
pub(super) struct LocalObject<'a> {
    pub root: &'a Path,
    /// `<bucket>-<appid>`: the first folder below the root.
    pub bucket_full: &'a str,
    pub key: &'a str,
}

/// Opens the object and hashes it on a thread; the spool is the file itself,
/// complete at once.
pub(super) fn start_local(
    obj: &LocalObject<'_>,
    limits: &LimitsConfig,
    progress: Arc<FetchProgress>,
    cancel: CancellationToken,
) -> Result<FetchHandle, FetchError> {
    let (file, path) = open_under_root(obj.root, obj.bucket_full, obj.key)?;
    let len = file
        .metadata()
        .map_err(|e| FetchError::Internal(format!("cannot stat {}: {e}", path.display())))?
        .len();
    if len > limits.max_source_size {
        return Err(FetchError::TooLarge {
            size: len,
            limit: limits.max_source_size,
        });
    }
    progress.bytes_total.store(len, Ordering::Relaxed);
    let spool = Arc::new(Spool::complete_file(file, path, len));
    let hashed = hash_file_in_place(spool.clone(), progress, cancel.clone());
    let done = tokio::spawn(async move {
        let r = tokio::select! {
            _ = cancel.cancelled() => return Err(FetchError::Cancelled),
            r = hashed => r,
        };
        match r {
            Ok(Ok(d)) => Ok(FetchOutcome {
                sha256: d.sha256,
                bytes: d.bytes,
                resumes: 0,
                reused_bytes: 0,
            }),
            Ok(Err(e)) => Err(FetchError::Internal(e)),
            Err(_) => Err(FetchError::Internal("the hashing thread vanished".into())),
        }
    });
    Ok(FetchHandle {
        spool,
        total_len: len,
        tail: None,
        done,
    })
}

/// How the last component is opened: read only, never a controlling
/// terminal, and non-blocking so that a FIFO cannot hang the worker.
fn object_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// Opens `<root>/<bucket_full>/<key>` (module docs) and checks that it is a
/// regular file. Returns the file and its path (for messages only).
pub(super) fn open_under_root(
    root: &Path,
    bucket_full: &str,
    key: &str,
) -> Result<(File, PathBuf), FetchError> {
    let shown = format!("{bucket_full}/{key}");
    let mut components = vec![bucket_full];
    components.extend(key.split('/'));
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(FetchError::PathRefused(format!(
            "the object name {shown:?} has an empty, \".\" or \"..\" component"
        )));
    }
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        FetchError::Internal(format!(
            "cannot open source.cos_root {}: {}",
            root.display(),
            std::io::Error::from(e)
        ))
    })?;
    let fd = match open_beneath(&root_fd, &components.join("/")) {
        Opened::Fd(fd) => fd,
        Opened::Refused(e) => return Err(open_error(e, &shown, None)),
        // The walk tells which component is a link or not a folder, or
        // stands in for an `openat2` the kernel does not offer.
        Opened::Walk => walk(root_fd, &components, &shown)?,
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| FetchError::Internal(format!("cannot stat {shown}: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(FetchError::PathRefused(format!(
            "the COS object {shown} is not a regular file"
        )));
    }
    Ok((file, root.join(bucket_full).join(key)))
}

enum Opened {
    Fd(OwnedFd),
    /// A final answer (missing, unreadable, …).
    Refused(Errno),
    /// Ask the component walk.
    Walk,
}

/// One `openat2` below `root`. A rename racing the resolution makes the
/// kernel answer `EAGAIN`: tried a few times, then left to the walk.
fn open_beneath(root: &OwnedFd, path: &str) -> Opened {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for _ in 0..3 {
        match rustix::fs::openat2(root, path, object_flags(), Mode::empty(), resolve) {
            Ok(fd) => return Opened::Fd(fd),
            Err(Errno::AGAIN | Errno::INTR) => continue,
            // Old kernel (ENOSYS), a seccomp filter that hides the call
            // (ENOSYS or EPERM), or a link / non-folder / escape to name.
            Err(Errno::NOSYS | Errno::PERM | Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => {
                return Opened::Walk
            }
            Err(e) => return Opened::Refused(e),
        }
    }
    Opened::Walk
}

/// The walk: one `openat(O_NOFOLLOW)` per component, each relative to the
/// folder opened before it, so a component swapped for a link between two
/// steps is refused too.
fn walk(root: OwnedFd, components: &[&str], shown: &str) -> Result<OwnedFd, FetchError> {
    let mut dir = root;
    let last = components.len() - 1;
    for (i, c) in components.iter().enumerate() {
        let flags = if i == last {
            object_flags()
        } else {
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC
        };
        dir = rustix::fs::openat(&dir, *c, flags, Mode::empty())
            .map_err(|e| open_error(e, shown, Some(c)))?;
    }
    Ok(dir)
}

/// The failure code for an open that failed at `component` (when known).
fn open_error(e: Errno, shown: &str, component: Option<&str>) -> FetchError {
    match e {
        Errno::NOENT => {
            FetchError::InvalidUrl(format!("the COS object {shown} does not exist (404)"))
        }
        Errno::LOOP | Errno::NOTDIR | Errno::XDEV => {
            let at = component.map(|c| format!(" at {c:?}")).unwrap_or_default();
            FetchError::PathRefused(format!(
                "the COS object path {shown} goes through a symbolic link or a \
                 non-folder{at}; objects in source.cos_root must be plain files \
                 in plain folders"
            ))
        }
        Errno::ACCESS | Errno::PERM => {
            FetchError::InvalidUrl(format!("the COS object {shown} is not readable (403)"))
        }
        e => FetchError::Internal(format!(
            "cannot open {shown} in cos_root: {}",
            std::io::Error::from(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("b-1");
        std::fs::create_dir_all(b.join("dir")).unwrap();
        std::fs::write(b.join("dir/obj"), b"data").unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        symlink(d.path().join("outside"), b.join("link")).unwrap();
        symlink(b.join("dir"), b.join("dirlink")).unwrap();
        d
    }

    fn root_fd(d: &Path) -> OwnedFd {
        rustix::fs::open(d, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn plain_object_opens() {
        let d = tree();
        let (f, _) = open_under_root(d.path(), "b-1", "dir/obj").unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4);
    }

    #[test]
    fn links_are_refused_at_any_step() {
        let d = tree();
        for key in ["link", "dirlink/obj"] {
            let e = open_under_root(d.path(), "b-1", key).unwrap_err();
            assert_eq!(e.code().as_str(), "SourcePathRefused", "{key}: {e}");
        }
    }

    #[test]
    fn openat2_refuses_links_or_is_absent() {
        let d = tree();
        let root = root_fd(d.path());
        assert!(!matches!(open_beneath(&root, "b-1/link"), Opened::Fd(_)));
        assert!(!matches!(
            open_beneath(&root, "b-1/dirlink/obj"),
            Opened::Fd(_)
        ));
        match open_beneath(&root, "b-1/dir/obj") {
            Opened::Fd(_) | Opened::Walk => {}
            Opened::Refused(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_walk_alone_refuses_links_and_names_the_component() {
        let d = tree();
        let e = walk(root_fd(d.path()), &["b-1", "dirlink", "obj"], "x").unwrap_err();
        assert_eq!(e.code().as_str(), "SourcePathRefused");
        assert!(e.to_string().contains("\"dirlink\""), "{e}");
        let e = walk(root_fd(d.path()), &["b-1", "link"], "x").unwrap_err();
        assert_eq!(e.code().as_str(), "SourcePathRefused");
        assert!(walk(root_fd(d.path()), &["b-1", "dir", "obj"], "x").is_ok());
        let e = walk(root_fd(d.path()), &["b-1", "nope"], "x").unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidUrl");
    }
}
