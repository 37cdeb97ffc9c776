//! The on-disk format (documented in `FORMAT.md`): segment names, the
//! segment header and frames.

/// Magic bytes at the start of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"LBWAL\0\r\n";
/// The segment format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header: magic 8, version 4, flags 4, first LSN 8, crc 4.
pub(crate) const SEGMENT_HEADER_LEN: usize = 28;
/// Size of a frame header: length 4, crc 4, lsn 8, kind 1.
pub(crate) const FRAME_HEADER_LEN: usize = 17;
/// Largest payload a frame can carry.
pub(crate) const MAX_PAYLOAD: usize = u32::MAX as usize;

const SEGMENT_SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";
const NAME_DIGITS: usize = 20;

/// Frame kinds. A batch of n > 1 records is `First, Middle*, Last`; a single
/// record is `Full`. Only `Full` and `Last` commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Full = 1,
    First = 2,
    Middle = 3,
    Last = 4,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Full),
            2 => Some(Kind::First),
            3 => Some(Kind::Middle),
            4 => Some(Kind::Last),
            _ => None,
        }
    }

    /// The kind of record `i` of a batch of `n`.
    pub(crate) fn in_batch(i: usize, n: usize) -> Kind {
        if n == 1 {
            Kind::Full
        } else if i == 0 {
            Kind::First
        } else if i + 1 == n {
            Kind::Last
        } else {
            Kind::Middle
        }
    }
}

/// File name of the segment whose first record has LSN `first_lsn`.
pub(crate) fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// File name of the temporary file a segment is prepared in.
pub(crate) fn temp_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{TEMP_SUFFIX}")
}

fn parse_digits(stem: &str) -> Option<u64> {
    if stem.len() == NAME_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileClass {
    Segment(u64),
    Temp,
    Lock,
    Other,
}

/// Classifies a file name found in the log directory.
pub(crate) fn classify(name: &str) -> FileClass {
    if name == crate::storage::LOCK_FILE {
        return FileClass::Lock;
    }
    if let Some(stem) = name.strip_suffix(TEMP_SUFFIX) {
        if parse_digits(stem).is_some() {
            return FileClass::Temp;
        }
        return FileClass::Other;
    }
    match name.strip_suffix(SEGMENT_SUFFIX).and_then(parse_digits) {
        Some(lsn) => FileClass::Segment(lsn),
        None => FileClass::Other,
    }
}

/// Encodes the header of a segment whose first record has LSN `first_lsn`.
pub(crate) fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header_version(first_lsn, FORMAT_VERSION)
}

/// Like [`encode_segment_header`] with an explicit version (tests write
/// "future" segments with it).
pub(crate) fn encode_segment_header_version(
    first_lsn: u64,
    version: u32,
) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    // 12..16: flags, zero in version 1.
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Invalid(String),
    NewerVersion(u32),
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks the header of a segment named for `name_lsn`.
pub(crate) fn check_segment_header(bytes: &[u8], name_lsn: u64) -> Result<(), HeaderError> {
    if bytes.len() < 12 {
        return Err(HeaderError::Invalid(format!(
            "{} bytes, shorter than a segment header",
            bytes.len()
        )));
    }
    if bytes[0..8] != MAGIC {
        return Err(HeaderError::Invalid("bad magic".into()));
    }
    let version = le_u32(bytes, 8);
    if version > FORMAT_VERSION {
        return Err(HeaderError::NewerVersion(version));
    }
    if version == 0 {
        return Err(HeaderError::Invalid("format version 0".into()));
    }
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderError::Invalid(format!(
            "{} bytes, shorter than a segment header",
            bytes.len()
        )));
    }
    if crc32fast::hash(&bytes[0..24]) != le_u32(bytes, 24) {
        return Err(HeaderError::Invalid("header checksum mismatch".into()));
    }
    let flags = le_u32(bytes, 12);
    if flags != 0 {
        return Err(HeaderError::Invalid(format!("unknown flags {flags:#x}")));
    }
    let first = le_u64(bytes, 16);
    if first != name_lsn {
        return Err(HeaderError::Invalid(format!(
            "header says first lsn {first}, file name says {name_lsn}"
        )));
    }
    Ok(())
}

/// A serialized record with the checksum of its payload precomputed, so the
/// part done under the writer lock is small.
pub(crate) struct Encoded {
    pub(crate) payload: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl Encoded {
    pub(crate) fn new(payload: Vec<u8>) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&payload);
        Encoded { payload, crc }
    }

    /// Size of the frame this record becomes.
    pub(crate) fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

fn frame_crc(len: u32, lsn: u64, kind: u8, payload_crc: &crc32fast::Hasher) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(&[kind]);
    h.combine(payload_crc);
    h.finalize()
}

/// Appends the frame of `rec` with `lsn` and `kind` to `out`. The payload
/// length must have been checked against [`MAX_PAYLOAD`].
pub(crate) fn put_frame(out: &mut Vec<u8>, lsn: u64, kind: Kind, rec: &Encoded) {
    let len = u32::try_from(rec.payload.len()).unwrap_or(u32::MAX);
    let crc = frame_crc(len, lsn, kind as u8, &rec.crc);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&rec.payload);
}

/// A frame with any kind byte (tests build damaged logs with it).
pub(crate) fn encode_frame_raw(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let rec = Encoded::new(payload.to_vec());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(rec.frame_len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, lsn, kind, &rec.crc).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// A frame that passed its checksum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) lsn: u64,
    pub(crate) kind: Kind,
    /// Offset of the payload in the buffer.
    pub(crate) payload_at: usize,
    pub(crate) payload_len: usize,
    /// Whole frame length.
    pub(crate) len: usize,
}

/// Why no frame could be read at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The header or payload runs past the end of the data.
    Incomplete,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the kind byte is unknown.
    Kind,
}

impl FrameError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FrameError::Incomplete => "frame runs past the end of the segment",
            FrameError::Checksum => "frame checksum mismatch",
            FrameError::Kind => "unknown frame kind",
        }
    }
}

/// Reads the frame at `pos`, checking its length and checksum (not its LSN).
pub(crate) fn read_frame(buf: &[u8], pos: usize) -> Result<Frame, FrameError> {
    let rest = buf.len().saturating_sub(pos);
    if rest < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = le_u32(buf, pos) as usize;
    if len > rest - FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let stored = le_u32(buf, pos + 4);
    let lsn = le_u64(buf, pos + 8);
    let kind_byte = buf[pos + 16];
    let payload_at = pos + FRAME_HEADER_LEN;
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[pos..pos + 4]);
    h.update(&buf[pos + 8..payload_at]);
    h.update(&buf[payload_at..payload_at + len]);
    if h.finalize() != stored {
        return Err(FrameError::Checksum);
    }
    let kind = Kind::from_byte(kind_byte).ok_or(FrameError::Kind)?;
    Ok(Frame {
        lsn,
        kind,
        payload_at,
        payload_len: len,
        len: FRAME_HEADER_LEN + len,
    })
}

/// Cheap pre-check used when scanning for the next valid frame: is the LSN
/// field at `pos` in `lo..=hi` and does the length fit? Avoids computing a
/// checksum at every byte offset.
pub(crate) fn plausible_frame(buf: &[u8], pos: usize, lo: u64, hi: u64) -> bool {
    let rest = buf.len().saturating_sub(pos);
    if rest < FRAME_HEADER_LEN {
        return false;
    }
    let len = le_u32(buf, pos) as usize;
    let lsn = le_u64(buf, pos + 8);
    len <= rest - FRAME_HEADER_LEN && (lo..=hi).contains(&lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(1), "00000000000000000001.wal");
        assert_eq!(classify(&segment_name(42)), FileClass::Segment(42));
        assert_eq!(classify(&temp_name(42)), FileClass::Temp);
        assert_eq!(classify("1.wal"), FileClass::Other);
        assert_eq!(classify("x0000000000000000001.wal"), FileClass::Other);
        assert_eq!(classify("LOCK"), FileClass::Lock);
    }

    #[test]
    fn header_round_trip() {
        let h = encode_segment_header(7);
        assert_eq!(check_segment_header(&h, 7), Ok(()));
        assert!(matches!(
            check_segment_header(&h, 8),
            Err(HeaderError::Invalid(_))
        ));
        let h2 = encode_segment_header_version(7, FORMAT_VERSION + 1);
        assert_eq!(
            check_segment_header(&h2, 7),
            Err(HeaderError::NewerVersion(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn frame_round_trip_and_crc_covers_length_and_lsn() {
        let rec = Encoded::new(b"hello".to_vec());
        let mut buf = Vec::new();
        put_frame(&mut buf, 9, Kind::Full, &rec);
        let f = read_frame(&buf, 0).expect("valid frame");
        assert_eq!(
            (f.lsn, f.kind, f.payload_len, f.len),
            (9, Kind::Full, 5, 22)
        );
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 1;
            assert!(read_frame(&b, 0).is_err(), "flip at {byte} validated");
        }
    }
}
