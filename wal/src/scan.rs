//! Frame-by-frame scan of one segment: checksum and sequence checks, batch
//! atomicity, torn-tail versus corruption classification, and the recovery
//! modes.

use crate::error::{Error, Result};
use crate::format::{
    FRAME_HEADER_LEN, Frame, Kind, SEGMENT_HEADER_LEN, plausible_frame, read_frame,
};
use crate::options::{Lsn, RecoveryMode};

/// One segment to scan.
pub(crate) struct SegInput<'a> {
    pub(crate) name: &'a str,
    pub(crate) first_lsn: u64,
    /// The whole file, header included (already checked).
    pub(crate) bytes: &'a [u8],
    /// Whether no segment follows this one.
    pub(crate) is_last: bool,
}

/// What scanning a segment found.
#[derive(Debug, Default)]
pub(crate) struct SegScan {
    /// Length of the segment to keep: just after the last committed frame
    /// when a tail was dropped or playback stopped, else the whole file.
    pub(crate) keep_len: usize,
    /// The LSN after the last committed record.
    pub(crate) next_lsn: u64,
    /// Bytes after `keep_len` that were dropped (torn tail or stop).
    pub(crate) dropped_tail: usize,
    /// [`RecoveryMode::PointInTime`] stopped here: later segments are dropped.
    pub(crate) stopped: bool,
    /// [`RecoveryMode::SkipAnyCorrupted`]: `(offset, len)` skipped.
    pub(crate) skipped: Vec<(u64, u64)>,
}

enum Flow {
    Continue,
    Done,
}

struct Scanner<'a, F> {
    seg: &'a SegInput<'a>,
    mode: RecoveryMode,
    /// Receives every committed record: `(lsn, payload)`.
    sink: F,
    pos: usize,
    /// LSN the next frame must carry.
    expected: u64,
    in_batch: bool,
    batch: Vec<Frame>,
    /// SkipAny: frames of a batch whose start was lost are dropped until a
    /// `Full` or `First` frame.
    orphans: bool,
    commit_pos: usize,
    commit_next: u64,
    out: SegScan,
    finished: bool,
}

/// Offset of the first frame after the damage at `damage_at` that passes its
/// checksum and carries an LSN a frame at its offset could have: at least
/// `lo` (the expected LSN, which the damaged frame would have carried), and
/// at most `lo` plus the number of frames that fit between `damage_at` and
/// it (each frame takes at least `FRAME_HEADER_LEN` bytes), plus one.
///
/// The bound depends only on the bytes before the candidate, never on the
/// length of the file: a writer cuts the tail after the last record it
/// recovered, and that must not change which frames are found before it
/// (it once used the file length, so in `SkipAnyCorrupted` mode a record
/// returned by recovery could vanish after the repair).
fn find_next(bytes: &[u8], damage_at: usize, lo: u64) -> Option<usize> {
    let len = bytes.len();
    if len < FRAME_HEADER_LEN {
        return None;
    }
    (damage_at + 1..=len - FRAME_HEADER_LEN).find(|&q| {
        let fit = ((q - damage_at) / FRAME_HEADER_LEN) as u64;
        let hi = lo.saturating_add(fit + 1);
        plausible_frame(bytes, q, lo, hi) && read_frame(bytes, q).is_ok()
    })
}

impl<F: FnMut(u64, &[u8]) -> Result<()>> Scanner<'_, F> {
    fn corruption(&self, reason: String) -> Error {
        Error::Corruption {
            segment: self.seg.name.to_owned(),
            offset: self.pos as u64,
            expected: Lsn(self.expected),
            reason,
        }
    }

    /// Ends the segment at the last commit point.
    fn stop_at_commit(&mut self, stopped: bool) -> Flow {
        self.batch.clear();
        self.in_batch = false;
        self.out.keep_len = self.commit_pos;
        self.out.next_lsn = self.commit_next;
        self.out.dropped_tail = self.seg.bytes.len() - self.commit_pos;
        self.out.stopped = stopped;
        self.finished = true;
        Flow::Done
    }

    /// Handles damage at `self.pos`. `valid_here`: a checksummed frame is at
    /// `pos` (so this cannot be a torn write). `skip_from`: start of the
    /// skipped range in SkipAny mode.
    fn damage(&mut self, reason: &str, valid_here: bool, skip_from: usize) -> Result<Flow> {
        let bytes = self.seg.bytes;
        let next = find_next(bytes, self.pos, self.expected);
        let followed = next.is_some() || valid_here || !self.seg.is_last;
        let skip_any = self.mode == RecoveryMode::SkipAnyCorrupted;
        let tail = !followed || (skip_any && next.is_none() && self.seg.is_last);
        if tail {
            if self.mode == RecoveryMode::AbsoluteConsistency {
                return Err(self.corruption(format!("{reason} (torn tail)")));
            }
            return Ok(self.stop_at_commit(false));
        }
        match self.mode {
            RecoveryMode::TolerateCorruptedTail | RecoveryMode::AbsoluteConsistency => {
                Err(self.corruption(format!("{reason}, and valid data follows")))
            }
            RecoveryMode::PointInTime => Ok(self.stop_at_commit(true)),
            RecoveryMode::SkipAnyCorrupted => {
                self.batch.clear();
                self.in_batch = false;
                self.orphans = true;
                let to = next.unwrap_or(bytes.len());
                self.out
                    .skipped
                    .push((skip_from as u64, (to - skip_from) as u64));
                self.pos = to;
                Ok(Flow::Continue)
            }
        }
    }

    fn emit(&mut self, f: &Frame) -> Result<()> {
        let payload = &self.seg.bytes[f.payload_at..f.payload_at + f.payload_len];
        (self.sink)(f.lsn, payload)
    }

    fn frame(&mut self, f: Frame) -> Result<Flow> {
        let skip_any = self.mode == RecoveryMode::SkipAnyCorrupted;
        // u64::MAX is never written (the writer refuses an append that
        // would reach it), and accepting it would saturate `expected`.
        if f.lsn == u64::MAX || f.lsn < self.expected || (f.lsn > self.expected && !skip_any) {
            let reason = format!("frame carries lsn {}", f.lsn);
            return self.damage(&reason, true, self.pos);
        }
        if f.lsn > self.expected {
            // SkipAny: records are missing here; an open batch is broken.
            self.batch.clear();
            self.in_batch = false;
            self.orphans = true;
        }
        match (self.in_batch, f.kind) {
            (false, Kind::Full) => {
                self.orphans = false;
                self.emit(&f)?;
                self.commit(&f);
            }
            (false, Kind::First) => {
                self.orphans = false;
                self.in_batch = true;
                self.batch.push(f);
            }
            (true, Kind::Middle) => self.batch.push(f),
            (true, Kind::Last) => {
                self.batch.push(f);
                let batch = std::mem::take(&mut self.batch);
                for b in &batch {
                    self.emit(b)?;
                }
                self.in_batch = false;
                self.commit(&f);
            }
            (false, Kind::Middle | Kind::Last) if self.orphans => {
                if f.kind == Kind::Last {
                    self.commit(&f);
                }
            }
            _ => {
                let reason = format!("frame kind {:?} out of sequence", f.kind);
                return self.damage(&reason, true, self.pos);
            }
        }
        self.pos += f.len;
        self.expected = f.lsn.saturating_add(1);
        Ok(Flow::Continue)
    }

    fn commit(&mut self, f: &Frame) {
        self.commit_pos = self.pos + f.len;
        self.commit_next = f.lsn.saturating_add(1);
    }

    fn run(mut self, limit: u64) -> Result<SegScan> {
        let len = self.seg.bytes.len();
        loop {
            if !self.in_batch && self.expected >= limit {
                break;
            }
            let flow = if self.pos >= len {
                if !self.in_batch {
                    break;
                }
                let from = self.commit_pos;
                self.damage("batch cut off at the end of the segment", false, from)?
            } else {
                match read_frame(self.seg.bytes, self.pos) {
                    Ok(f) => self.frame(f)?,
                    Err(e) => self.damage(e.describe(), false, self.pos)?,
                }
            };
            if let Flow::Done = flow {
                break;
            }
        }
        if !self.finished {
            self.out.keep_len = self.pos.min(len);
            self.out.next_lsn = self.expected;
        }
        Ok(self.out)
    }
}

/// Scans `seg`, calling `sink` for every committed record, stopping once
/// the next LSN reaches `limit` (pass `u64::MAX` to scan everything).
pub(crate) fn scan_segment<F: FnMut(u64, &[u8]) -> Result<()>>(
    seg: &SegInput<'_>,
    mode: RecoveryMode,
    limit: u64,
    sink: F,
) -> Result<SegScan> {
    let scanner = Scanner {
        seg,
        mode,
        sink,
        pos: SEGMENT_HEADER_LEN,
        expected: seg.first_lsn,
        in_batch: false,
        batch: Vec::new(),
        orphans: false,
        commit_pos: SEGMENT_HEADER_LEN,
        commit_next: seg.first_lsn,
        out: SegScan::default(),
        finished: false,
    };
    scanner.run(limit)
}
