//! The storage abstraction every byte of the log goes through, and its
//! production implementation on `std::fs`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the lock file [`StdStorage`] keeps in the directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// One flat directory of files, addressed by name.
///
/// The log needs only these operations. Durability contract (what
/// [`SimStorage`](crate::SimStorage) simulates): data written to a file is
/// durable only after [`StorageFile::sync_data`] on that file returns `Ok`;
/// creating, renaming and removing a file is durable only after
/// [`Storage::sync_dir`] returns `Ok`; `rename` atomically replaces the target.
///
/// # Example
///
/// A storage is handed to [`Wal::open_with_storage`](crate::Wal::open_with_storage):
///
/// ```
/// use lancebranch_wal::{Options, StdStorage, Storage, Wal};
///
/// let dir = tempfile::tempdir()?;
/// let storage = StdStorage::open(dir.path())?;
/// let (wal, _) = Wal::<String>::open_with_storage(storage, Options::default())?;
/// wal.append(&"hello".to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Storage: Send + Sync + fmt::Debug {
    /// Names of all files in the directory (any order).
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates a file (truncating it if it exists) and opens it for appending.
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Renames `from` to `to`, atomically replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes all earlier creates, renames and removes durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes an exclusive lock on the directory for this process, held until
    /// the storage is dropped. Fails with [`io::ErrorKind::WouldBlock`] if
    /// another writer holds it. The default does nothing.
    fn lock(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A file opened for appending. Methods take `&self` so a handle can be
/// shared between the appender and the group-commit leader.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{SimStorage, Storage, StorageFile};
///
/// let sim = SimStorage::new();
/// let f: Box<dyn StorageFile> = sim.create("f")?;
/// f.append(b"abc")?;
/// f.truncate(2)?;
/// f.append(b"z")?;
/// f.sync_data()?;
/// assert_eq!(f.len()?, 3);
/// assert_eq!(sim.file("f").as_deref(), Some(&b"abz"[..]));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait StorageFile: Send + Sync {
    /// Writes all of `buf` at the end of the file.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts (or zero-extends) the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// The current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// [`Storage`] on a real directory through `std::fs`: `sync_data` is
/// `fdatasync`, `sync_dir` is `fsync` of the directory, and [`Storage::lock`]
/// takes an exclusive `flock` on a `LOCK` file (retrying a busy lock for half
/// a second: a child process being spawned holds the parent's locks until it
/// execs).
///
/// # Example
///
/// ```
/// use lancebranch_wal::{StdStorage, Storage};
///
/// let dir = tempfile::tempdir()?;
/// let storage = StdStorage::open(dir.path().join("wal"))?; // created if missing
/// let f = storage.create("a")?;
/// f.append(b"bytes")?;
/// f.sync_data()?;
/// storage.sync_dir()?;
/// assert_eq!(storage.read("a")?, b"bytes");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StdStorage {
    dir: PathBuf,
    lock: Mutex<Option<File>>,
}

impl fmt::Debug for StdStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dir.display())
    }
}

impl StdStorage {
    /// Uses `dir`, creating it (and making its entry durable) if it does not
    /// exist. Fails if `dir` exists and is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<StdStorage> {
        let dir = dir.as_ref().to_path_buf();
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                if let Some(parent) = dir.parent() {
                    let parent = if parent.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        parent
                    };
                    File::open(parent)?.sync_all()?;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(StdStorage {
            dir,
            lock: Mutex::new(None),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Storage for StdStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut f = File::open(self.path_of(name))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        // O_APPEND so writes after a `truncate` land at the new end.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path_of(name))?;
        file.set_len(0)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().append(true).open(self.path_of(name))?;
        Ok(Box::new(StdFile { file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path_of(from), self.path_of(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path_of(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn lock(&self) -> io::Result<()> {
        let mut slot = self
            .lock
            .lock()
            .map_err(|_| io::Error::other("lock state poisoned"))?;
        if slot.is_some() {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path_of(LOCK_FILE))?;
        // A lock released a moment ago can still be held by a child
        // process this one is spawning: between fork and exec the child
        // shares every open file description, `flock`s included. So a busy
        // lock is retried for a short while before it counts as held.
        let deadline = std::time::Instant::now() + LOCK_RETRY_FOR;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    *slot = Some(file);
                    return Ok(());
                }
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "directory locked by another writer",
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

/// How long a busy directory lock is retried before it counts as held by
/// another writer.
const LOCK_RETRY_FOR: std::time::Duration = std::time::Duration::from_millis(500);

struct StdFile {
    file: File,
}

impl StorageFile for StdFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.file).write_all(buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}
