//! Path resolution shared by every filesystem reader: absolute and relative
//! symlinks, `..`, case-insensitive names where the filesystem says so.
//! Bounded like the kernel's: at most 40 symlink hops per resolution and a
//! cap on components walked in total, so symlink loops and `a/../a/../…`
//! games end in `FsError::Limit`, not a hang.

use super::{FileType, Filesystem, FsError, InodeId};

/// Symlinks followed in one resolution (Linux's MAXSYMLINKS).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Path components walked in one resolution, symlink targets included.
pub const MAX_COMPONENTS: usize = 4096;
/// Entries read from one directory while looking a name up.
pub const MAX_DIR_ENTRIES: usize = 100_000;

fn name_eq(a: &[u8], b: &[u8], ci: bool) -> bool {
    if ci {
        // ASCII folding is enough for the paths inspection looks up; the
        // names on disk may be any UTF-8.
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Look `name` up in directory `dir`.
pub fn lookup(fs: &dyn Filesystem, dir: InodeId, name: &[u8]) -> Result<Option<InodeId>, FsError> {
    let ci = fs.case_insensitive();
    let entries = fs.read_dir(dir, MAX_DIR_ENTRIES)?;
    Ok(entries
        .iter()
        .find(|e| name_eq(&e.name, name, ci))
        .map(|e| e.inode))
}

/// Resolve `path` (absolute, or relative to the root) to an inode. The last
/// component is followed when it is a symlink only if `follow` is set.
pub fn resolve(fs: &dyn Filesystem, path: &str, follow: bool) -> Result<InodeId, FsError> {
    // The walk keeps the chain of directories from the root, so that ".."
    // needs no parent pointers (FAT and NTFS have none worth trusting).
    let mut stack: Vec<InodeId> = vec![fs.root()];
    // Components still to walk, in reverse order (next one at the end).
    let mut todo: Vec<Vec<u8>> = split_rev(path.as_bytes());
    let mut hops = 0usize;
    let mut walked = 0usize;
    while let Some(comp) = todo.pop() {
        walked += 1;
        if walked > MAX_COMPONENTS {
            return Err(FsError::Limit(format!(
                "resolving {path}: too many components"
            )));
        }
        if comp == b"." {
            continue;
        }
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let dir = *stack.last().unwrap_or(&fs.root());
        if fs.stat(dir)?.file_type != FileType::Dir {
            return Err(FsError::NotADirectory(path.to_string()));
        }
        let child = lookup(fs, dir, &comp)?.ok_or_else(|| FsError::NotFound(path.to_string()))?;
        let is_last = todo.is_empty();
        let st = fs.stat(child)?;
        if st.file_type == FileType::Symlink && (follow || !is_last) {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(FsError::Limit(format!(
                    "resolving {path}: too many symlinks"
                )));
            }
            let target = fs.read_link(child)?;
            if target.first() == Some(&b'/') {
                stack.truncate(1);
            }
            let more = split_rev(&target);
            if todo.len() + more.len() > MAX_COMPONENTS {
                return Err(FsError::Limit(format!("resolving {path}: path too long")));
            }
            todo.extend(more);
            continue;
        }
        stack.push(child);
    }
    Ok(*stack.last().unwrap_or(&fs.root()))
}

/// Components of `p`, reversed, empty ones dropped.
fn split_rev(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(|c| c.to_vec())
        .collect()
}

/// Whether `path` exists (following symlinks). Errors other than "not
/// found" are passed on: a corrupt directory is not an absent file.
pub fn exists(fs: &dyn Filesystem, path: &str) -> Result<bool, FsError> {
    match resolve(fs, path, true) {
        Ok(_) => Ok(true),
        Err(FsError::NotFound(_)) | Err(FsError::NotADirectory(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The contents of a regular file at `path` (symlinks followed), at most
/// `max` bytes; a larger file is `FsError::Limit`.
pub fn read_small_file(fs: &dyn Filesystem, path: &str, max: usize) -> Result<Vec<u8>, FsError> {
    let ino = resolve(fs, path, true)?;
    let st = fs.stat(ino)?;
    if st.file_type != FileType::File {
        return Err(FsError::NotFound(format!("{path} is not a regular file")));
    }
    if st.size > max as u64 {
        return Err(FsError::Limit(format!(
            "{path} is {} bytes, more than {max}",
            st.size
        )));
    }
    read_prefix(fs, ino, st.size as usize)
}

/// The first `n` bytes of a file (fewer if it is shorter).
pub fn read_prefix(fs: &dyn Filesystem, ino: InodeId, n: usize) -> Result<Vec<u8>, FsError> {
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        let got = fs.read(ino, done as u64, &mut buf[done..])?;
        if got == 0 {
            break;
        }
        done += got;
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    //! A tiny in-memory filesystem to exercise resolution rules.
    use super::*;
    use crate::fs::{DirEntry, Stat};

    struct Mem {
        // (id, parent, name, type, content/target)
        nodes: Vec<(u64, u64, &'static str, FileType, &'static str)>,
    }
    impl Filesystem for Mem {
        fn kind(&self) -> &'static str {
            "mem"
        }
        fn label(&self) -> Option<String> {
            None
        }
        fn uuid(&self) -> Option<String> {
            None
        }
        fn root(&self) -> InodeId {
            1
        }
        fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
            if inode == 1 {
                return Ok(Stat {
                    file_type: FileType::Dir,
                    size: 0,
                });
            }
            let n = self
                .nodes
                .iter()
                .find(|n| n.0 == inode)
                .ok_or(FsError::NotFound("x".into()))?;
            Ok(Stat {
                file_type: n.3,
                size: n.4.len() as u64,
            })
        }
        fn read_dir(&self, inode: InodeId, _limit: usize) -> Result<Vec<DirEntry>, FsError> {
            Ok(self
                .nodes
                .iter()
                .filter(|n| n.1 == inode)
                .map(|n| DirEntry {
                    name: n.2.as_bytes().to_vec(),
                    inode: n.0,
                })
                .collect())
        }
        fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
            let n = self
                .nodes
                .iter()
                .find(|n| n.0 == inode)
                .ok_or(FsError::NotFound("x".into()))?;
            let data = n.4.as_bytes();
            let start = (offset as usize).min(data.len());
            let k = (data.len() - start).min(buf.len());
            buf[..k].copy_from_slice(&data[start..start + k]);
            Ok(k)
        }
        fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
            let n = self
                .nodes
                .iter()
                .find(|n| n.0 == inode)
                .ok_or(FsError::NotFound("x".into()))?;
            Ok(n.4.as_bytes().to_vec())
        }
    }

    fn fs() -> Mem {
        use FileType::*;
        Mem {
            nodes: vec![
                (2, 1, "usr", Dir, ""),
                (3, 2, "bin", Dir, ""),
                (4, 3, "sh", File, "ELF"),
                (5, 1, "bin", Symlink, "usr/bin"),
                (6, 1, "loop", Symlink, "/loop"),
                (7, 3, "dash", Symlink, "../bin/./sh"),
                (8, 1, "a", Symlink, "b"),
                (9, 1, "b", Symlink, "a"),
                (10, 1, "abs", Symlink, "/usr/bin/../bin/sh"),
            ],
        }
    }

    #[test]
    fn follows_relative_and_absolute_links() {
        let f = fs();
        assert_eq!(resolve(&f, "/bin/sh", true).unwrap(), 4);
        assert_eq!(resolve(&f, "/bin/dash", true).unwrap(), 4);
        assert_eq!(resolve(&f, "/bin/dash", false).unwrap(), 7);
        assert_eq!(resolve(&f, "abs", true).unwrap(), 4);
        assert_eq!(resolve(&f, "/../../usr/bin/sh", true).unwrap(), 4);
        assert_eq!(read_small_file(&f, "/bin/dash", 10).unwrap(), b"ELF");
        assert!(matches!(
            read_small_file(&f, "/bin/dash", 2),
            Err(FsError::Limit(_))
        ));
    }

    #[test]
    fn loops_end_in_a_limit() {
        let f = fs();
        assert!(matches!(resolve(&f, "/loop", true), Err(FsError::Limit(_))));
        assert!(matches!(resolve(&f, "/a/x", false), Err(FsError::Limit(_))));
        assert!(matches!(
            resolve(&f, "/nope", true),
            Err(FsError::NotFound(_))
        ));
        assert!(!exists(&f, "/usr/bin/sh/x").unwrap());
    }
}
