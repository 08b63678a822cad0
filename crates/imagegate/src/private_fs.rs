//! Files only the service's own user may read: the data directory is 0700
//! and everything in it 0600 (the catalog holds source URLs with pre-signed
//! query strings; stored images are tenants' disks).
//!
//! Two layers: a process umask of 077 (so files made by SQLite, tokio or any
//! library come out private), and explicit modes where imagegate creates
//! files and folders itself (so a library that resets the umask, or a
//! caller embedding the crate, changes nothing). A data directory made by an
//! older version is tightened once at start.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every folder in the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Sets the process umask to 077. Called once at start by `serve`/`worker`.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// `create_dir_all` with every folder it makes at mode 0700.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options for a new private file (mode 0600 whatever the umask).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Writes a whole private file (like `std::fs::write`, mode 0600).
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)
}

/// Makes `data_dir` (0700) and tightens whatever an older version left in
/// it: folders to 0700, files to 0600. Symbolic links are not followed.
/// Returns how many entries were changed.
pub fn secure_data_dir(data_dir: &Path) -> io::Result<u64> {
    create_dir_all(data_dir)?;
    tighten(data_dir)
}

fn tighten(path: &Path) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    let want = if meta.is_dir() {
        DIR_MODE
    } else if meta.is_file() {
        FILE_MODE
    } else {
        return Ok(0);
    };
    let mut changed = 0;
    if meta.permissions().mode() & 0o7777 != want {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
        changed += 1;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            match tighten(&entry?.path()) {
                Ok(n) => changed += n,
                // A file removed between the listing and the chmod is fine.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_old_open_data_dir_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("images/.partial")).unwrap();
        std::fs::write(dir.join("catalog.db"), b"x").unwrap();
        std::fs::write(dir.join("images/img-00000001.qcow2"), b"x").unwrap();
        for p in ["", "images", "images/.partial"] {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in ["catalog.db", "images/img-00000001.qcow2"] {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert_eq!(secure_data_dir(&dir).unwrap(), 5);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("images/.partial")), 0o700);
        assert_eq!(mode(&dir.join("catalog.db")), 0o600);
        assert_eq!(mode(&dir.join("images/img-00000001.qcow2")), 0o600);
        assert_eq!(secure_data_dir(&dir).unwrap(), 0, "idempotent");
    }

    #[test]
    fn explicit_modes_ignore_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir_all(&dir).unwrap();
        write(&dir.join("f"), b"x").unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("f")), 0o600);
    }
}
