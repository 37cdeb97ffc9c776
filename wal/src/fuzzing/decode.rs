//! The `wal_decode` harness: arbitrary bytes as the files of a log directory,
//! read in every recovery mode and checked against an independent reference
//! reader written from `FORMAT.md`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Error, Lsn, Options, Recovered, RecoveryMode, SimStorage, Wal, read_log};

/// The record type the harness reads: postcard `Vec<u8>` (a varint length
/// and the bytes).
type Rec = Vec<u8>;

const MODES: [RecoveryMode; 4] = [
    RecoveryMode::TolerateCorruptedTail,
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::PointInTime,
    RecoveryMode::SkipAnyCorrupted,
];

/// At most this many files are built from one input.
const MAX_FILES: usize = 4;
/// Longer inputs are ignored (keeps one execution fast).
const MAX_INPUT: usize = 1 << 16;

// An independent copy of the layout in FORMAT.md (not the crate's `format`
// module), so a mistake there is not repeated by the oracle.
const MAGIC: [u8; 8] = *b"LBWAL\0\r\n";
const HEADER_LEN: usize = 28;
const FRAME_HEADER: usize = 17;

const CTRL_STRUCTURED: u8 = 1;
const CTRL_TEMP_LAST: u8 = 2;
const CTRL_FROM_SHIFT: u8 = 2;

/// Builds inputs for [`wal_decode`] (seed corpora, tests). The input format:
///
/// ```text
/// input := ctrl:u8 file{0..4}        (bytes after the fourth file are ignored)
/// file  := delta:u8 len:u16le body[len]   (a short body takes what is left)
/// ```
///
/// `ctrl` bit 0 selects how a body becomes a file:
///
/// * **raw** (0): the body is the whole file, header included. It is named
///   as the segment of the LSN in its header field (bytes 16..24; 1 if the
///   body is shorter) plus `delta` read as an `i8`.
/// * **structured** (1): the body is a list of frame descriptions, and the
///   harness writes a valid header and frames with valid checksums (unless
///   told otherwise), so the fuzzer can explore batches, LSN sequencing and
///   damage classification without solving CRCs. The first LSN is `delta`
///   (as `i8`) plus 1 for the first file, plus the next LSN after the
///   previous file's frames for later ones. A description is
///   `op:u8 [arg:u8] ...` with `op & 7`: 0..=3 a FULL, FIRST, MIDDLE or LAST
///   frame `len:u8 payload[len % 48]`; 4 a frame with an unknown kind
///   `kind:u8 len payload`; 5 garbage `n:u8 bytes[n % 64]`; 6 a torn FULL
///   frame `len payload cut:u8`; 7 a copy of an earlier frame `index:u8`.
///   `op >> 3 & 3` picks the LSN: the expected one, `expected + 1 + arg`,
///   `expected - 1 - arg` or `u64::MAX - arg` (`arg` is present unless 0).
///   Bit 5 breaks the checksum, bit 6 stores the payload bytes raw instead of
///   postcard-encoding them, bit 7 adds one to the length field.
///
/// `ctrl` bit 1 makes the last file a leftover `*.wal.tmp` file;
/// `ctrl >> 2 & 3`, if not 0, is added to the first recovered LSN to test
/// `replay_from`.
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::{DecodeInput, wal_decode};
///
/// // One structured segment: a FULL frame with payload "ab", then a batch
/// // FIRST "c", LAST "d".
/// let body = [0, 2, b'a', b'b', 1, 1, b'c', 3, 1, b'd'];
/// let input = DecodeInput::structured().file(0, &body).into_bytes();
/// assert_eq!(input[..4], [1, 0, 10, 0]);
/// wal_decode(&input);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DecodeInput {
    ctrl: u8,
    files: Vec<u8>,
}

impl DecodeInput {
    /// An input whose file bodies are whole files (header included).
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::DecodeInput;
    /// assert_eq!(DecodeInput::raw().into_bytes(), vec![0]);
    /// ```
    pub fn raw() -> DecodeInput {
        DecodeInput::default()
    }

    /// An input whose file bodies are frame descriptions.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::DecodeInput;
    /// assert_eq!(DecodeInput::structured().into_bytes(), vec![1]);
    /// ```
    pub fn structured() -> DecodeInput {
        DecodeInput {
            ctrl: CTRL_STRUCTURED,
            files: Vec::new(),
        }
    }

    /// Makes the last file a leftover temporary file.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::DecodeInput;
    /// assert_eq!(DecodeInput::raw().temp_last().into_bytes(), vec![2]);
    /// ```
    pub fn temp_last(mut self) -> DecodeInput {
        self.ctrl |= CTRL_TEMP_LAST;
        self
    }

    /// Sets the `replay_from` offset (0..=3) checked against the full read.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::DecodeInput;
    /// assert_eq!(DecodeInput::raw().replay_offset(2).into_bytes(), vec![8]);
    /// ```
    pub fn replay_offset(mut self, k: u8) -> DecodeInput {
        self.ctrl = (self.ctrl & !(3 << CTRL_FROM_SHIFT)) | ((k & 3) << CTRL_FROM_SHIFT);
        self
    }

    /// Appends a file: `delta` shifts its first LSN (see the type's
    /// documentation); `body` is at most 65535 bytes (cut otherwise).
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::DecodeInput;
    /// let input = DecodeInput::raw().file(-1, b"xyz").into_bytes();
    /// assert_eq!(input, vec![0, 0xff, 3, 0, b'x', b'y', b'z']);
    /// ```
    pub fn file(mut self, delta: i8, body: &[u8]) -> DecodeInput {
        let body = &body[..body.len().min(u16::MAX as usize)];
        self.files.push(delta as u8);
        self.files
            .extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.files.extend_from_slice(body);
        self
    }

    /// The input bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::{DecodeInput, wal_decode};
    /// wal_decode(&DecodeInput::structured().file(0, &[]).into_bytes());
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = vec![self.ctrl];
        out.extend(self.files);
        out
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn seg_name(lsn: u64) -> String {
    format!("{lsn:020}.wal")
}

fn header(first: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn frame_crc(len: u32, lsn: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn frame(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(FRAME_HEADER + payload.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&frame_crc(len, lsn, kind, payload).to_le_bytes());
    f.extend_from_slice(&lsn.to_le_bytes());
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// Reads bytes of a description, yielding zeros once exhausted.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn byte_or0(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Builds a segment (header and frames) from frame descriptions; returns it
/// and the LSN after its last frame.
fn structured_segment(first: u64, body: &[u8]) -> (Vec<u8>, u64) {
    let mut out = header(first);
    let mut cur = Cursor(body);
    let mut expected = first;
    let mut frames: Vec<std::ops::Range<usize>> = Vec::new();
    while let Some(op) = cur.byte() {
        let sel = op & 7;
        let lsn_mode = (op >> 3) & 3;
        let arg = if lsn_mode != 0 {
            cur.byte_or0() as u64
        } else {
            0
        };
        let lsn = match lsn_mode {
            0 => expected,
            1 => expected.saturating_add(1 + arg),
            2 => expected.saturating_sub(1 + arg),
            _ => u64::MAX - arg,
        };
        match sel {
            5 => {
                let n = cur.byte_or0() as usize % 64;
                out.extend_from_slice(cur.take(n));
                continue;
            }
            7 => {
                let i = cur.byte_or0() as usize;
                if !frames.is_empty() {
                    let r = frames[i % frames.len()].clone();
                    let copy = out[r].to_vec();
                    out.extend_from_slice(&copy);
                }
                continue;
            }
            _ => {}
        }
        let kind = match sel {
            0..=3 => sel + 1,
            4 => match cur.byte_or0() {
                k @ 1..=4 => k | 0x80,
                k => k,
            },
            _ => 1,
        };
        let n = cur.byte_or0() as usize % 48;
        let raw = cur.take(n);
        let payload = if op & 0x40 != 0 {
            raw.to_vec()
        } else {
            postcard::to_allocvec(&raw.to_vec()).expect("postcard encodes Vec<u8>")
        };
        let mut f = frame(lsn, kind, &payload);
        if op & 0x20 != 0 {
            f[4] ^= 1;
        }
        if op & 0x80 != 0 {
            let len = le_u32(&f, 0).wrapping_add(1);
            f[0..4].copy_from_slice(&len.to_le_bytes());
        }
        if sel == 6 {
            let cut = cur.byte_or0() as usize % f.len();
            out.extend_from_slice(&f[..cut]);
        } else {
            let start = out.len();
            out.extend_from_slice(&f);
            frames.push(start..out.len());
        }
        expected = lsn.saturating_add(1);
    }
    (out, expected)
}

/// Builds the log directory an input describes. `None` if the input is
/// empty or too long.
fn build(data: &[u8]) -> Option<(SimStorage, u8)> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let (&ctrl, mut rest) = data.split_first()?;
    let mut files: Vec<(u8, &[u8])> = Vec::new();
    while files.len() < MAX_FILES && !rest.is_empty() {
        let delta = rest[0];
        let len = match rest.get(1..3) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]) as usize,
            None => rest.len(),
        };
        let body = &rest[rest.len().min(3)..];
        let take = len.min(body.len());
        files.push((delta, &body[..take]));
        rest = &body[take..];
    }
    let sim = SimStorage::new();
    let mut base = 1u64;
    let n = files.len();
    for (i, (delta, body)) in files.into_iter().enumerate() {
        let delta = delta as i8 as i64;
        let (first, bytes) = if ctrl & CTRL_STRUCTURED != 0 {
            let first = base.saturating_add_signed(delta);
            let (bytes, next) = structured_segment(first, body);
            base = next;
            (first, bytes)
        } else {
            let named = if body.len() >= 24 {
                le_u64(body, 16)
            } else {
                base
            };
            (named.saturating_add_signed(delta), body.to_vec())
        };
        let name = if ctrl & CTRL_TEMP_LAST != 0 && i + 1 == n {
            format!("{first:020}.wal.tmp")
        } else {
            seg_name(first)
        };
        sim.put_file(&name, &bytes);
    }
    Some((sim, ctrl))
}

/// A segment file of the directory, as the reference reader sees it.
struct Seg {
    first: u64,
    bytes: Vec<u8>,
}

/// The segment files (`<20 digits>.wal`) of `sim`, oldest first.
fn segments(sim: &SimStorage) -> Vec<Seg> {
    let mut segs: Vec<Seg> = sim
        .file_names()
        .into_iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".wal")?;
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let first = stem.parse().ok()?;
            Some(Seg {
                first,
                bytes: sim.file(&name)?,
            })
        })
        .collect();
    segs.sort_by_key(|s| s.first);
    segs
}

fn header_ok(bytes: &[u8], first: u64) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0..8] == MAGIC
        && le_u32(bytes, 8) == 1
        && crc32fast::hash(&bytes[0..24]) == le_u32(bytes, 24)
        && le_u32(bytes, 12) == 0
        && le_u64(bytes, 16) == first
}

/// A frame that passes its checksum with a known kind.
#[derive(Clone, Copy, Debug)]
struct RefFrame {
    lsn: u64,
    kind: u8,
    at: usize,
    payload_len: usize,
}

impl RefFrame {
    fn len(&self) -> usize {
        FRAME_HEADER + self.payload_len
    }

    fn payload<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.at + FRAME_HEADER..self.at + self.len()]
    }
}

fn parse_frame(bytes: &[u8], at: usize) -> Option<RefFrame> {
    let rest = bytes.len().checked_sub(at)?;
    if rest < FRAME_HEADER {
        return None;
    }
    let payload_len = le_u32(bytes, at) as usize;
    if payload_len > rest - FRAME_HEADER {
        return None;
    }
    let lsn = le_u64(bytes, at + 8);
    let kind = bytes[at + 16];
    let payload = &bytes[at + FRAME_HEADER..at + FRAME_HEADER + payload_len];
    if frame_crc(payload_len as u32, lsn, kind, payload) != le_u32(bytes, at + 4) {
        return None;
    }
    (1..=4).contains(&kind).then_some(RefFrame {
        lsn,
        kind,
        at,
        payload_len,
    })
}

/// Decodes a payload as the log does: postcard, every byte consumed.
fn decode(payload: &[u8]) -> Option<Rec> {
    match postcard::take_from_bytes::<Rec>(payload) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// A committed record found by the reference reader.
#[derive(Debug)]
struct RefRec {
    lsn: u64,
    value: Rec,
    seg: usize,
    frame: RefFrame,
}

/// What the reference reader predicts for the valid prefix of the log.
#[derive(Debug)]
enum Expect {
    /// A segment header reached before any damage is invalid.
    Header,
    /// A record committed before any damage does not decode.
    Decode,
    /// The committed records before the first damage (all of them if
    /// `damaged` is false), and the LSN after them.
    Prefix {
        records: Vec<RefRec>,
        next: u64,
        damaged: bool,
    },
}

/// Reads the segments frame by frame per FORMAT.md and stops at the first
/// damage of any kind (a bad frame, a wrong LSN, a broken batch sequence, a
/// batch open at the end of a segment, a lost or overlapping segment).
fn reference(segs: &[Seg]) -> Expect {
    let mut records = Vec::new();
    let mut expected: Option<u64> = None;
    for (i, seg) in segs.iter().enumerate() {
        if !header_ok(&seg.bytes, seg.first) {
            return Expect::Header;
        }
        if let Some(exp) = expected
            && seg.first != exp
        {
            return Expect::Prefix {
                records,
                next: exp,
                damaged: true,
            };
        }
        let bytes = &seg.bytes;
        let mut pos = HEADER_LEN;
        let mut exp = seg.first;
        let mut commit_next = seg.first;
        let mut batch: Vec<RefFrame> = Vec::new();
        let mut in_batch = false;
        let damage = |records, commit_next| Expect::Prefix {
            records,
            next: commit_next,
            damaged: true,
        };
        loop {
            // The scanner stops once the next LSN would be past u64::MAX.
            if !in_batch && exp == u64::MAX {
                break;
            }
            if pos >= bytes.len() {
                if in_batch {
                    return damage(records, commit_next);
                }
                break;
            }
            let Some(f) = parse_frame(bytes, pos) else {
                return damage(records, commit_next);
            };
            // LSN u64::MAX is never written: such a frame is damage.
            if f.lsn != exp || f.lsn == u64::MAX {
                return damage(records, commit_next);
            }
            let commit: Vec<RefFrame> = match (in_batch, f.kind) {
                (false, 1) => vec![f],
                (false, 2) => {
                    in_batch = true;
                    batch.push(f);
                    Vec::new()
                }
                (true, 3) => {
                    batch.push(f);
                    Vec::new()
                }
                (true, 4) => {
                    in_batch = false;
                    batch.push(f);
                    std::mem::take(&mut batch)
                }
                _ => return damage(records, commit_next),
            };
            for c in commit {
                let Some(value) = decode(c.payload(bytes)) else {
                    return Expect::Decode;
                };
                records.push(RefRec {
                    lsn: c.lsn,
                    value,
                    seg: i,
                    frame: c,
                });
                commit_next = f.lsn.saturating_add(1);
            }
            pos += f.len();
            exp = f.lsn.saturating_add(1);
        }
        expected = Some(exp);
    }
    Expect::Prefix {
        records,
        next: expected.unwrap_or(1),
        damaged: false,
    }
}

fn pairs(r: &Recovered<Rec>) -> Vec<(u64, &[u8])> {
    r.records.iter().map(|(l, v)| (l.0, v.as_slice())).collect()
}

fn ref_pairs(records: &[RefRec]) -> Vec<(u64, &[u8])> {
    records
        .iter()
        .map(|r| (r.lsn, r.value.as_slice()))
        .collect()
}

/// Every `(lsn, value)` of a checksummed frame at any offset of any segment.
fn all_valid_frames(segs: &[Seg]) -> BTreeSet<(u64, Rec)> {
    let mut set = BTreeSet::new();
    for seg in segs {
        for at in HEADER_LEN..seg.bytes.len() {
            if let Some(f) = parse_frame(&seg.bytes, at)
                && let Some(v) = decode(f.payload(&seg.bytes))
            {
                set.insert((f.lsn, v));
            }
        }
    }
    set
}

fn copy_of(sim: &SimStorage) -> SimStorage {
    let copy = SimStorage::new();
    for name in sim.file_names() {
        if let Some(bytes) = sim.file(&name) {
            copy.put_file(&name, &bytes);
        }
    }
    copy
}

fn contents(sim: &SimStorage) -> BTreeMap<String, Vec<u8>> {
    sim.file_names()
        .into_iter()
        .filter_map(|n| sim.file(&n).map(|b| (n, b)))
        .collect()
}

/// Checks one mode's read-only result against the reference.
fn check_read(
    mode: RecoveryMode,
    got: &Result<Recovered<Rec>, Error>,
    want: &Expect,
    segs: &[Seg],
    valid: &mut Option<BTreeSet<(u64, Rec)>>,
) {
    match want {
        Expect::Header => assert!(
            matches!(
                got,
                Err(Error::NotASegment { .. } | Error::UnsupportedVersion { .. })
            ),
            "{mode:?}: a bad header must be an error, got {got:?}"
        ),
        Expect::Decode => assert!(
            matches!(got, Err(Error::Decode { .. })),
            "{mode:?}: an undecodable record must be an error, got {got:?}"
        ),
        Expect::Prefix {
            records,
            next,
            damaged,
        } => {
            let exact = match (mode, damaged) {
                (_, false) | (RecoveryMode::PointInTime, true) => true,
                (RecoveryMode::AbsoluteConsistency, true) => {
                    assert!(
                        matches!(got, Err(Error::Corruption { .. })),
                        "{mode:?}: damage must be an error, got {got:?}"
                    );
                    false
                }
                (RecoveryMode::TolerateCorruptedTail, true) => {
                    assert!(
                        matches!(got, Ok(_) | Err(Error::Corruption { .. })),
                        "{mode:?}: only corruption may fail, got {got:?}"
                    );
                    got.is_ok()
                }
                (_, true) => false,
            };
            if exact {
                let r = got
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{mode:?}: must read the valid prefix: {e}"));
                assert_eq!(pairs(r), ref_pairs(records), "{mode:?}: records");
                assert_eq!(r.report.next_lsn, Lsn(*next), "{mode:?}: next lsn");
            }
            if mode == RecoveryMode::SkipAnyCorrupted
                && *damaged
                && let Ok(r) = got
            {
                let p = pairs(r);
                assert!(
                    p.len() >= records.len() && p[..records.len()] == ref_pairs(records)[..],
                    "{mode:?}: must start with the valid prefix {:?}, got {p:?}",
                    ref_pairs(records)
                );
                let valid = valid.get_or_insert_with(|| all_valid_frames(segs));
                for (lsn, v) in &r.records[records.len()..] {
                    assert!(
                        valid.contains(&(lsn.0, v.clone())),
                        "{mode:?}: record {lsn} {v:?} is in no valid frame"
                    );
                }
                if let Some((last, _)) = r.records.last() {
                    assert!(r.report.next_lsn > *last, "{mode:?}: next lsn");
                }
            }
        }
    }
    if let Ok(r) = got {
        let lsns: Vec<u64> = r.records.iter().map(|(l, _)| l.0).collect();
        let ok = if mode == RecoveryMode::SkipAnyCorrupted {
            lsns.windows(2).all(|w| w[0] < w[1])
        } else {
            lsns.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]))
        };
        assert!(ok, "{mode:?}: lsns out of sequence: {lsns:?}");
    }
}

/// The committed frames of the valid prefix re-encode to exactly the bytes
/// at their position.
fn check_reencode(want: &Expect, segs: &[Seg]) {
    let Expect::Prefix { records, .. } = want else {
        return;
    };
    for r in records {
        let bytes = &segs[r.seg].bytes;
        let raw = r.frame.payload(bytes);
        let encoded = postcard::to_allocvec(&r.value).expect("postcard encodes Vec<u8>");
        // postcard accepts overlong varints, so a checksummed frame may hold
        // a non-canonical encoding of the value; only then may they differ.
        let payload = if encoded == raw { &encoded[..] } else { raw };
        assert_eq!(decode(payload).as_ref(), Some(&r.value));
        let f = frame(r.lsn, r.frame.kind, payload);
        assert_eq!(
            &bytes[r.frame.at..r.frame.at + r.frame.len()],
            &f[..],
            "frame of lsn {} at {}",
            r.lsn,
            r.frame.at
        );
    }
}

/// Opens a copy for writing in `mode`: it must succeed exactly when the
/// read-only pass did and return the same records; an error changes
/// nothing; after the repair the log reads back cleanly and accepts an
/// append.
fn check_open(sim: &SimStorage, mode: RecoveryMode, got: &Result<Recovered<Rec>, Error>) {
    let copy = copy_of(sim);
    let before = contents(&copy);
    let opened = Wal::<Rec>::open_with_storage(copy.clone(), Options::default().recovery(mode));
    let (wal, rec) = match (got, opened) {
        (Err(_), Err(_)) => {
            assert_eq!(
                contents(&copy),
                before,
                "{mode:?}: a failed open changed files"
            );
            return;
        }
        (Ok(r), Ok((wal, rec))) => {
            assert_eq!(pairs(&rec), pairs(r), "{mode:?}: open and read_log differ");
            assert_eq!(rec.report.next_lsn, r.report.next_lsn, "{mode:?}");
            (wal, rec)
        }
        (got, opened) => panic!(
            "{mode:?}: read_log {:?} but open {:?}",
            got.as_ref().map(|r| r.records.len()),
            opened.map(|(_, r)| r.records.len())
        ),
    };
    let next = wal.next_lsn();
    assert_eq!(next, rec.report.next_lsn, "{mode:?}: next lsn after open");
    // Repaired: the torn tail and everything after a point-in-time stop is
    // gone, so a strict read agrees (damage stays on disk in SkipAny mode).
    let reread_mode = match mode {
        RecoveryMode::SkipAnyCorrupted => mode,
        _ => RecoveryMode::AbsoluteConsistency,
    };
    // Then it takes an append with the next LSN (one read checks both).
    let record = b"fuzz".to_vec();
    let mut want = rec.records;
    match wal.append(&record) {
        Ok(lsn) => {
            assert_eq!(lsn, next, "{mode:?}: lsn of the first append");
            want.push((next, record));
        }
        Err(e) => assert_eq!(next, Lsn(u64::MAX), "{mode:?}: append after open: {e}"),
    }
    drop(wal);
    let after = read_log::<Rec>(&copy, reread_mode, Lsn::ZERO)
        .unwrap_or_else(|e| panic!("{mode:?}: repaired log does not read back: {e}"));
    assert_eq!(after.records, want, "{mode:?}: after repair and one append");
}

/// Treats `data` as the files of a log directory (see [`DecodeInput`] for
/// the format) in a [`SimStorage`], reads it with [`read_log`] in every
/// [`RecoveryMode`] and opens it for writing in each. Panics if any result
/// disagrees with an independent reference reader of `FORMAT.md`:
///
/// * a bad header or an undecodable record before any damage is an error in
///   every mode;
/// * a log without damage reads completely in every mode;
/// * `PointInTime` returns exactly the committed records before the first
///   damage, with their LSN; `TolerateCorruptedTail` the same or
///   `Error::Corruption`; `AbsoluteConsistency` `Error::Corruption` on any
///   damage; `SkipAnyCorrupted` starts with that prefix, and every further
///   record is a checksummed frame of the input, with increasing LSNs;
/// * the committed frames re-encode to exactly their bytes;
/// * `replay_from` returns the same records, filtered;
/// * opening for writing succeeds exactly when reading does, with the same
///   records, changes nothing when it fails, and leaves a log that reads
///   back without damage and accepts an append with the next LSN.
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::{DecodeInput, wal_decode};
/// use lancebranch_wal::{Options, SimStorage, SyncPolicy, Wal};
///
/// // A real segment written by the writer, then the same one cut short.
/// let sim = SimStorage::new();
/// let (wal, _) = Wal::<Vec<u8>>::open_with_storage(sim.clone(), Options::default())?;
/// wal.append(&b"one".to_vec())?;
/// wal.append_batch(&[b"two".to_vec(), b"three".to_vec()])?;
/// let segment = sim.file("00000000000000000001.wal").expect("segment");
/// wal_decode(&DecodeInput::raw().file(0, &segment).into_bytes());
/// wal_decode(&DecodeInput::raw().file(0, &segment[..segment.len() - 3]).into_bytes());
/// # Ok::<(), lancebranch_wal::Error>(())
/// ```
pub fn wal_decode(data: &[u8]) {
    let Some((sim, ctrl)) = build(data) else {
        return;
    };
    let segs = segments(&sim);
    let want = reference(&segs);
    check_reencode(&want, &segs);
    let mut valid = None;
    for mode in MODES {
        let got = read_log::<Rec>(&sim, mode, Lsn::ZERO);
        check_read(mode, &got, &want, &segs, &mut valid);
        let offset = u64::from((ctrl >> CTRL_FROM_SHIFT) & 3);
        if let Ok(r) = &got
            && let Some((first, _)) = r.records.first()
            && offset > 0
        {
            let from = Lsn(first.0.saturating_add(offset));
            let part = read_log::<Rec>(&sim, mode, from)
                .unwrap_or_else(|e| panic!("{mode:?}: replay from {from} fails: {e}"));
            let filtered: Vec<_> = pairs(r).into_iter().filter(|(l, _)| *l >= from.0).collect();
            assert_eq!(pairs(&part), filtered, "{mode:?}: replay from {from}");
        }
        check_open(&sim, mode, &got);
    }
}
