//! The catalog directory's own files and the checks made when it is opened:
//! the format marker, the checkpoint, and the rule that the log continues
//! the checkpoint (`CATALOG.md` in the repository describes the format).
//!
//! * `<store>/_lancebranch/FORMAT` holds one line,
//!   `lancebranch catalog format N`: the newest catalog format (record
//!   variants, checkpoint layout) the store may contain. A store of a newer
//!   format than [`CATALOG_FORMAT`] is refused before anything is read or
//!   repaired ([`Error::UnsupportedFormat`]); an older or missing marker
//!   (stores written before the marker existed are format 1) is rewritten
//!   with this build's format once the store is open for writing.
//! * `<store>/_lancebranch/checkpoint` is one format byte
//!   ([`CHECKPOINT_FORMAT`]) and the postcard encoding of the state, with
//!   nothing after it.
//! * The log must hold every record after the checkpoint: a log that ends
//!   before the checkpoint's LSN, or starts after the record that follows
//!   it, is [`Error::CorruptCatalog`] (replaying it would lose acknowledged
//!   operations silently).

use std::path::Path;

use anyhow::{Context, Result};

use crate::backend::Error;
use crate::branched::catalog::CatalogState;

/// The catalog format this build writes and the newest it reads.
pub const CATALOG_FORMAT: u32 = 2;

/// The format byte in front of a checkpoint.
pub const CHECKPOINT_FORMAT: u8 = 1;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "lancebranch catalog format ";
const CHECKPOINT: &str = "checkpoint";

fn corrupt(dir: &Path, detail: String) -> anyhow::Error {
    Error::CorruptCatalog {
        path: dir.display().to_string(),
        detail,
    }
    .into()
}

/// The format named by `dir`'s marker (`None`: no marker).
///
/// # Errors
/// [`Error::UnsupportedFormat`] for a format newer than this build's,
/// [`Error::CorruptCatalog`] for a marker that does not parse, or I/O.
pub(crate) fn check_format(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(FORMAT_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    parse_format(&dir.display().to_string(), &bytes).map(Some)
}

/// Mark the store as holding catalog format `writes` (the newest format of
/// the records its log may get) unless `found` already says that or more:
/// a store is marked with a newer format only once it may hold records an
/// older build cannot read.
pub(crate) fn upgrade_format(dir: &Path, found: Option<u32>, writes: u32) -> Result<()> {
    if found.is_some_and(|f| f >= writes) {
        return Ok(());
    }
    write_atomic(dir, FORMAT_FILE, format_line(writes).as_bytes())
}

/// The format marker's text for format `n`.
pub(crate) fn format_line(n: u32) -> String {
    format!("{FORMAT_PREFIX}{n}\n")
}

/// The format a marker's text names.
///
/// # Errors
/// [`Error::UnsupportedFormat`] for a format newer than this build's,
/// [`Error::CorruptCatalog`] for a marker that does not parse.
pub(crate) fn parse_format(place: &str, bytes: &[u8]) -> Result<u32> {
    let text = String::from_utf8_lossy(bytes);
    let found = text
        .strip_suffix('\n')
        .and_then(|t| t.strip_prefix(FORMAT_PREFIX))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            anyhow::Error::from(Error::CorruptCatalog {
                path: place.to_string(),
                detail: format!("the format marker reads {text:?}"),
            })
        })?;
    if found > CATALOG_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "catalog",
            path: place.to_string(),
            found,
            supported: CATALOG_FORMAT,
        }
        .into());
    }
    Ok(found)
}

/// The contents of `path`, or `None` when there is no such file.
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replace `dir/name` with `bytes`: a synced temporary file renamed over
/// it, then the directory synced.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("installing {}", dir.join(name).display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context("syncing the catalog directory")?;
    Ok(())
}

/// The checkpoint in `dir`, if there is one.
///
/// # Errors
/// [`Error::UnsupportedFormat`] for a newer checkpoint format,
/// [`Error::CorruptCatalog`] for one that does not decode exactly, or I/O.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Option<CatalogState>> {
    let path = dir.join(CHECKPOINT);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    decode_checkpoint(&path.display().to_string(), &bytes).map(Some)
}

/// Decode a checkpoint's bytes (`place` names it in errors).
///
/// # Errors
/// [`Error::UnsupportedFormat`] for a newer checkpoint format,
/// [`Error::CorruptCatalog`] for one that does not decode exactly.
pub(crate) fn decode_checkpoint(place: &str, bytes: &[u8]) -> Result<CatalogState> {
    let corrupt = |detail: String| -> anyhow::Error {
        Error::CorruptCatalog {
            path: place.to_string(),
            detail,
        }
        .into()
    };
    match bytes.split_first() {
        Some((&CHECKPOINT_FORMAT, payload)) => match postcard::take_from_bytes(payload) {
            Ok((state, [])) => Ok(state),
            Ok((_, rest)) => Err(corrupt(format!(
                "the checkpoint has {} bytes after its state",
                rest.len()
            ))),
            Err(e) => Err(corrupt(format!("decoding the checkpoint: {e}"))),
        },
        Some((&v, _)) if v > CHECKPOINT_FORMAT => Err(Error::UnsupportedFormat {
            what: "checkpoint",
            path: place.to_string(),
            found: u32::from(v),
            supported: u32::from(CHECKPOINT_FORMAT),
        }
        .into()),
        Some((v, _)) => Err(corrupt(format!(
            "the checkpoint has the unknown format byte {v}"
        ))),
        None => Err(corrupt("the checkpoint is empty".to_string())),
    }
}

/// A checkpoint's bytes: the format byte and the postcard state.
pub(crate) fn encode_checkpoint(state: &CatalogState) -> Result<Vec<u8>> {
    let mut bytes = vec![CHECKPOINT_FORMAT];
    bytes.extend(postcard::to_stdvec(state).context("encoding the checkpoint")?);
    Ok(bytes)
}

/// Write `state` as the checkpoint in `dir` (atomically, durably).
pub(crate) fn write_checkpoint(dir: &Path, state: &CatalogState) -> Result<()> {
    write_atomic(dir, CHECKPOINT, &encode_checkpoint(state)?)
}

/// Check that a log whose replay (from `covered + 1`) began at
/// `first_replayed` and whose next record would get `next_lsn` holds every
/// record after a checkpoint covering `1..=covered`.
///
/// # Errors
/// [`Error::CorruptCatalog`] naming the missing records.
pub(crate) fn check_continuity(
    dir: &Path,
    covered: u64,
    first_replayed: Option<u64>,
    next_lsn: u64,
) -> Result<()> {
    let wanted = covered + 1;
    if next_lsn < wanted {
        return Err(corrupt(
            dir,
            format!(
                "the checkpoint covers records up to {covered} but the log ends before \
                 record {wanted} (next {next_lsn}): was the log replaced or removed?"
            ),
        ));
    }
    if next_lsn > wanted && first_replayed != Some(wanted) {
        return Err(corrupt(
            dir,
            format!(
                "records from {wanted} are missing from the log (it resumes at {}): \
                 the checkpoint is older than the log, was it replaced or removed?",
                first_replayed.map_or("nothing".to_string(), |l| l.to_string())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_accepts_exactly_a_continued_log() {
        let d = Path::new("/x");
        // Fresh store; a log right after its checkpoint; records after it.
        assert!(check_continuity(d, 0, None, 1).is_ok());
        assert!(check_continuity(d, 7, None, 8).is_ok());
        assert!(check_continuity(d, 7, Some(8), 12).is_ok());
        // A log behind the checkpoint; one that skips records.
        for (covered, first, next) in [(7, None, 1), (7, None, 7), (0, Some(5), 9), (7, None, 9)] {
            let e = check_continuity(d, covered, first, next).unwrap_err();
            assert!(matches!(Error::of(&e), Some(Error::CorruptCatalog { .. })));
        }
    }

    #[test]
    fn format_marker_round_trip_and_newer_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_format(dir.path()).unwrap(), None);
        upgrade_format(dir.path(), None, 1).unwrap();
        assert_eq!(check_format(dir.path()).unwrap(), Some(1));
        upgrade_format(dir.path(), Some(1), CATALOG_FORMAT).unwrap();
        assert_eq!(check_format(dir.path()).unwrap(), Some(CATALOG_FORMAT));
        std::fs::write(
            dir.path().join(FORMAT_FILE),
            "lancebranch catalog format 99\n",
        )
        .unwrap();
        let e = check_format(dir.path()).unwrap_err();
        assert!(matches!(
            Error::of(&e),
            Some(Error::UnsupportedFormat { found: 99, .. })
        ));
        std::fs::write(dir.path().join(FORMAT_FILE), "garbage").unwrap();
        let e = check_format(dir.path()).unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::CorruptCatalog { .. })));
    }

    #[test]
    fn checkpoint_must_decode_exactly() {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &CatalogState::default()).unwrap();
        assert!(read_checkpoint(dir.path()).unwrap().is_some());
        let path = dir.path().join(CHECKPOINT);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(0);
        std::fs::write(&path, &bytes).unwrap();
        let e = read_checkpoint(dir.path()).unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::CorruptCatalog { .. })));
        bytes[0] = CHECKPOINT_FORMAT + 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_checkpoint(dir.path()).unwrap_err();
        assert!(matches!(
            Error::of(&e),
            Some(Error::UnsupportedFormat { .. })
        ));
    }

    /// The byte examples of `CATALOG.md`: the format is written down right.
    #[test]
    fn catalog_md_examples() {
        use crate::branched::catalog::{Record, TableRef};
        let enc = |r: &Record| postcard::to_stdvec(r).unwrap();
        assert_eq!(enc(&Record::EndLine { op: 5 }), [0x04, 0x05]);
        let fork = Record::Fork {
            name: "dev".into(),
            parent: "main".into(),
            id: 3,
        };
        let want = [
            0x00, 0x03, 0x64, 0x65, 0x76, 0x04, 0x6d, 0x61, 0x69, 0x6e, 0x03,
        ];
        assert_eq!(enc(&fork), want);
        let publish = Record::Publish {
            branch: "dev".into(),
            tables: vec![(
                "t".into(),
                Some(TableRef {
                    line: Some("lb3".into()),
                    version: 7,
                }),
            )],
        };
        let want = [
            0x02, 0x03, 0x64, 0x65, 0x76, 0x01, 0x01, 0x74, 0x01, 0x01, 0x03, 0x6c, 0x62, 0x33,
            0x07,
        ];
        assert_eq!(enc(&publish), want);
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &CatalogState::default()).unwrap();
        let want = [
            0x01, 0x01, 0x04, 0x6d, 0x61, 0x69, 0x6e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x01, 0x00, 0x00, 0x00,
        ];
        assert_eq!(std::fs::read(dir.path().join(CHECKPOINT)).unwrap(), want);
    }
}
