//! Reading the log: directory listing, recovery analysis (read-only), the
//! public [`read_log`] and the [`Iter`] returned by
//! [`Wal::iter_from`](crate::Wal::iter_from).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result, io_err};
use crate::format::{FORMAT_VERSION, FileClass, HeaderError, check_segment_header, classify};
use crate::options::{Lsn, Position, Recovered, RecoveryMode, RecoveryReport, SkippedRange};
use crate::scan::{SegInput, scan_segment};
use crate::storage::Storage;

/// A segment file known to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentRef {
    pub(crate) first_lsn: u64,
    pub(crate) name: String,
}

/// The classified content of the log directory.
pub(crate) struct Listing {
    /// Segments sorted by first LSN.
    pub(crate) segments: Vec<SegmentRef>,
    /// Leftover temporary files.
    pub(crate) temps: Vec<String>,
}

/// Lists and classifies the directory; any foreign file is an error.
pub(crate) fn list_dir(storage: &dyn Storage) -> Result<Listing> {
    let names = storage.list().map_err(|source| Error::UnreadableDir {
        dir: format!("{storage:?}"),
        source,
    })?;
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    for name in names {
        match classify(&name) {
            FileClass::Segment(first_lsn) => segments.push(SegmentRef { first_lsn, name }),
            FileClass::Temp => temps.push(name),
            FileClass::Lock => {}
            FileClass::Other => return Err(Error::UnexpectedFile { name }),
        }
    }
    segments.sort_by_key(|s| s.first_lsn);
    temps.sort();
    Ok(Listing { segments, temps })
}

/// Decodes one record, requiring the payload to be consumed exactly.
pub(crate) fn decode<R: DeserializeOwned>(segment: &str, lsn: u64, payload: &[u8]) -> Result<R> {
    let err = |source| Error::Decode {
        lsn: Lsn(lsn),
        segment: segment.to_owned(),
        source,
    };
    let (value, rest) = postcard::take_from_bytes::<R>(payload).map_err(err)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(err(postcard::Error::DeserializeBadEncoding))
    }
}

/// Reads a segment and checks its header.
pub(crate) fn read_segment(storage: &dyn Storage, seg: &SegmentRef) -> Result<Vec<u8>> {
    let bytes = storage
        .read(&seg.name)
        .map_err(|e| io_err("read", &seg.name, e))?;
    check_segment_header(&bytes, seg.first_lsn).map_err(|e| match e {
        HeaderError::Invalid(reason) => Error::NotASegment {
            name: seg.name.clone(),
            reason,
        },
        HeaderError::NewerVersion(found) => Error::UnsupportedVersion {
            name: seg.name.clone(),
            found,
            supported: FORMAT_VERSION,
        },
    })?;
    Ok(bytes)
}

/// The result of a read-only recovery pass.
pub(crate) struct Analysis {
    /// Segments kept, oldest first.
    pub(crate) kept: Vec<SegmentRef>,
    /// Segments after a point-in-time stop (to delete when writing).
    pub(crate) dropped: Vec<String>,
    /// The last kept segment with the bytes to keep of it.
    pub(crate) last: Option<(SegmentRef, Vec<u8>)>,
    pub(crate) report: RecoveryReport,
}

/// Reads every segment, applying `mode`, and collects records at or above
/// `from` into `records`. Changes nothing on storage.
pub(crate) fn analyze<R: DeserializeOwned>(
    storage: &dyn Storage,
    segments: &[SegmentRef],
    mode: RecoveryMode,
    from: u64,
    records: &mut Vec<(Lsn, R)>,
) -> Result<Analysis> {
    let mut report = RecoveryReport::default();
    let mut kept: Vec<SegmentRef> = Vec::new();
    let mut last: Option<(SegmentRef, Vec<u8>)> = None;
    let mut dropped = Vec::new();
    let mut expected: Option<u64> = None;
    for (i, seg) in segments.iter().enumerate() {
        let bytes = read_segment(storage, seg)?;
        report.segments_read += 1;
        report.bytes_read += bytes.len() as u64;
        if let Some(exp) = expected
            && seg.first_lsn != exp
            && at_gap(seg, exp, mode, &mut report)? == Gap::Stop
        {
            report.stopped_at = Some(Position {
                segment: seg.name.clone(),
                offset: 0,
            });
            dropped.extend(segments[i..].iter().map(|s| s.name.clone()));
            break;
        }
        let input = SegInput {
            name: &seg.name,
            first_lsn: seg.first_lsn,
            bytes: &bytes,
            is_last: i + 1 == segments.len(),
        };
        let scan = scan_segment(&input, mode, u64::MAX, |lsn, payload| {
            if lsn >= from {
                records.push((Lsn(lsn), decode(&seg.name, lsn, payload)?));
            }
            Ok(())
        })?;
        for (offset, len) in &scan.skipped {
            report.skipped.push(SkippedRange {
                segment: seg.name.clone(),
                offset: *offset,
                len: *len,
            });
        }
        expected = Some(scan.next_lsn);
        kept.push(seg.clone());
        let keep = scan.keep_len.min(bytes.len());
        if scan.stopped {
            report.stopped_at = Some(Position {
                segment: seg.name.clone(),
                offset: keep as u64,
            });
            dropped.extend(segments[i + 1..].iter().map(|s| s.name.clone()));
        } else {
            report.torn_tail_bytes = scan.dropped_tail as u64;
        }
        let mut bytes = bytes;
        bytes.truncate(keep);
        last = Some((seg.clone(), bytes));
        if scan.stopped {
            break;
        }
    }
    report.next_lsn = Lsn(expected.unwrap_or(1));
    report.dropped_segments = dropped.clone();
    Ok(Analysis {
        kept,
        dropped,
        last,
        report,
    })
}

/// What to do at a segment that does not start where the previous one
/// ended.
#[derive(Debug, PartialEq, Eq)]
enum Gap {
    /// Read the segment (its gap was recorded as skipped).
    Read,
    /// Stop before the segment (point-in-time recovery).
    Stop,
}

/// Segment `seg` starts at another LSN than `exp`, the next one expected:
/// by `mode`, stop there, skip the missing records, or fail.
fn at_gap(
    seg: &SegmentRef,
    exp: u64,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<Gap> {
    match mode {
        RecoveryMode::PointInTime => Ok(Gap::Stop),
        RecoveryMode::SkipAnyCorrupted if seg.first_lsn > exp => {
            report.skipped.push(SkippedRange {
                segment: seg.name.clone(),
                offset: 0,
                len: 0,
            });
            Ok(Gap::Read)
        }
        _ => {
            let reason = if seg.first_lsn > exp {
                format!(
                    "records {exp}..{} are missing (lost segment)",
                    seg.first_lsn
                )
            } else {
                format!(
                    "segment starts at {} and overlaps the previous one",
                    seg.first_lsn
                )
            };
            Err(Error::Corruption {
                segment: seg.name.clone(),
                offset: 0,
                expected: Lsn(exp),
                reason,
            })
        }
    }
}

/// Reads a log without changing anything: no truncation, no deletion, no
/// lock. Returns the records at or above `from` and what a writer's recovery
/// would repair. Useful for inspection tools and tests.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{read_log, Lsn, Options, RecoveryMode, SimStorage, Wal};
///
/// let sim = SimStorage::new();
/// let (wal, _) = Wal::<u8>::open_with_storage(sim.clone(), Options::default())?;
/// wal.append_batch(&[1, 2, 3])?;
/// drop(wal);
/// let got = read_log::<u8>(&sim, RecoveryMode::TolerateCorruptedTail, Lsn(2))?;
/// assert_eq!(got.records, vec![(Lsn(2), 2), (Lsn(3), 3)]);
/// # Ok::<(), lancebranch_wal::Error>(())
/// ```
pub fn read_log<R: DeserializeOwned>(
    storage: &dyn Storage,
    mode: RecoveryMode,
    from: Lsn,
) -> Result<Recovered<R>> {
    let listing = list_dir(storage)?;
    let mut records = Vec::new();
    let analysis = analyze(storage, &listing.segments, mode, from.0, &mut records)?;
    Ok(Recovered {
        records,
        report: analysis.report,
    })
}

/// Iterator over `(lsn, record)` from [`Wal::iter_from`](crate::Wal::iter_from).
/// Reads one segment at a time. Yields an error (and then ends) if a segment
/// cannot be read, for example because
/// [`Wal::truncate_before`](crate::Wal::truncate_before) removed it meanwhile.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
///
/// let (wal, _) = Wal::<u8>::open_with_storage(SimStorage::new(), Options::default())?;
/// wal.append_batch(&[10, 20, 30])?;
/// let tail: Vec<_> = wal.iter_from(Lsn(2))?.collect::<Result<_, _>>()?;
/// assert_eq!(tail, vec![(Lsn(2), 20), (Lsn(3), 30)]);
/// # Ok::<(), lancebranch_wal::Error>(())
/// ```
pub struct Iter<R> {
    storage: Arc<dyn Storage>,
    segments: VecDeque<SegmentRef>,
    mode: RecoveryMode,
    from: u64,
    end: u64,
    buf: VecDeque<(Lsn, R)>,
    failed: bool,
}

impl<R> std::fmt::Debug for Iter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("from", &self.from)
            .field("end", &self.end)
            .field("segments_left", &self.segments.len())
            .finish()
    }
}

impl<R: DeserializeOwned> Iter<R> {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        segments: Vec<SegmentRef>,
        mode: RecoveryMode,
        from: u64,
        end: u64,
    ) -> Iter<R> {
        Iter {
            storage,
            segments: segments.into(),
            mode,
            from,
            end,
            buf: VecDeque::new(),
            failed: false,
        }
    }

    fn load(&mut self, seg: &SegmentRef) -> Result<()> {
        let bytes = read_segment(&*self.storage, seg)?;
        let input = SegInput {
            name: &seg.name,
            first_lsn: seg.first_lsn,
            bytes: &bytes,
            is_last: self.segments.is_empty(),
        };
        let (from, buf) = (self.from, &mut self.buf);
        scan_segment(&input, self.mode, self.end, |lsn, payload| {
            if lsn >= from {
                buf.push_back((Lsn(lsn), decode(&seg.name, lsn, payload)?));
            }
            Ok(())
        })?;
        Ok(())
    }
}

impl<R: DeserializeOwned> Iterator for Iter<R> {
    type Item = Result<(Lsn, R)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buf.pop_front() {
                return Some(Ok(item));
            }
            if self.failed {
                return None;
            }
            let seg = self.segments.pop_front()?;
            if let Err(e) = self.load(&seg) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}
