//! RecordIO framing, as Mesos frames its streaming responses (docs/recordio.md): every record
//! is its length in bytes as ASCII decimal, a `\n`, then exactly that many bytes. There is no
//! delimiter after a record, so the only safe way to read a stream is by length.
//!
//! [`RecordIoDecoder`] is fed whatever chunks the transport delivers (proxies and HTTP chunked
//! encoding split and merge frames freely) and hands back whole records as [`Bytes`], without
//! copying them a second time. It must never panic on input, never buffer more than one
//! record's worth beyond its limit, and never try to resynchronise after a framing error: once a
//! length is wrong every later byte is ambiguous, so the error is final and the caller must open
//! a new stream.

use bytes::{Buf, Bytes, BytesMut};

/// The largest record accepted unless told otherwise. A Mesos SUBSCRIBED event carries the
/// whole cluster state, which reaches several MiB on large clusters; 16 MiB leaves room while
/// still refusing lengths that can only be garbage.
pub const DEFAULT_MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// More digits than this can only be padding or garbage: 20 digits already exceed `u64`.
const MAX_LENGTH_DIGITS: usize = 20;

/// How much of a bad header to quote in an error.
const MAX_QUOTED_HEADER: usize = 40;

/// Why a stream is not valid RecordIO. Offsets count bytes from the start of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("RecordIO length header {header:?} at byte {offset} is not a decimal number followed by a newline")]
    InvalidLength { header: String, offset: u64 },
    #[error("RecordIO record at byte {offset} claims a length of {length} bytes, above the limit of {max} bytes")]
    TooLong {
        /// The digits read so far (the header may not even be complete).
        length: String,
        offset: u64,
        max: usize,
    },
}

#[derive(Debug)]
enum State {
    /// Reading a length header; `value` is the number its `digits` digits spell so far.
    Header { value: usize, digits: usize },
    /// Waiting for `len` bytes of record.
    Body { len: usize },
    /// Framing is lost for good.
    Failed(RecordIoError),
}

/// Turns a byte stream, pushed in arbitrary chunks, into the records it frames.
///
/// ```
/// use squall_sensors::recordio::RecordIoDecoder;
/// let mut decoder = RecordIoDecoder::new();
/// decoder.push(b"5\nhel");
/// assert!(decoder.next_record().is_none());
/// decoder.push(b"lo2\nok");
/// let records: Vec<_> = decoder.records().collect::<Result<_, _>>().unwrap();
/// assert_eq!(records, vec![&b"hello"[..], &b"ok"[..]]);
/// ```
#[derive(Debug)]
pub struct RecordIoDecoder {
    buf: BytesMut,
    state: State,
    max_record_len: usize,
    /// Bytes taken off the front of `buf` so far, for error offsets.
    consumed: u64,
    /// Where the header being read started, for error offsets.
    header_start: u64,
}

impl Default for RecordIoDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordIoDecoder {
    /// A decoder accepting records up to [`DEFAULT_MAX_RECORD_LEN`] bytes.
    pub fn new() -> Self {
        Self::with_max_record_len(DEFAULT_MAX_RECORD_LEN)
    }

    /// A decoder that rejects any record longer than `max_record_len` bytes, as soon as its
    /// header says so (before buffering it).
    pub fn with_max_record_len(max_record_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            state: State::Header {
                value: 0,
                digits: 0,
            },
            max_record_len,
            consumed: 0,
            header_start: 0,
        }
    }

    /// Appends the next chunk of the stream. Chunks may cut anywhere: inside a length, between
    /// a length and its record, inside a record, or hold several records.
    pub fn push(&mut self, chunk: &[u8]) {
        // A failed stream is never read again; keeping its bytes would only grow memory.
        if !matches!(self.state, State::Failed(_)) {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete record, `None` if more bytes are needed, or the framing error. The
    /// error is final: it is returned again on every later call.
    pub fn next_record(&mut self) -> Option<Result<Bytes, RecordIoError>> {
        loop {
            match self.state {
                State::Failed(ref error) => return Some(Err(error.clone())),
                State::Body { len } => {
                    if self.buf.len() < len {
                        return None;
                    }
                    let record = self.buf.split_to(len).freeze();
                    self.consumed += len as u64;
                    self.header_start = self.consumed;
                    self.state = State::Header {
                        value: 0,
                        digits: 0,
                    };
                    return Some(Ok(record));
                }
                State::Header { value, digits } => match self.read_header(value, digits) {
                    HeaderRead::Incomplete => return None,
                    HeaderRead::Complete(len) => {
                        // One allocation for the whole record instead of one per chunk.
                        self.buf.reserve(len.saturating_sub(self.buf.len()));
                        self.state = State::Body { len };
                    }
                    HeaderRead::Invalid(error) => {
                        self.buf = BytesMut::new();
                        self.state = State::Failed(error.clone());
                        return Some(Err(error));
                    }
                },
            }
        }
    }

    /// Iterates over the complete records buffered so far. It stops after a framing error
    /// (which it yields once); [`RecordIoDecoder::next_record`] keeps returning that error.
    pub fn records(&mut self) -> Records<'_> {
        Records {
            decoder: self,
            done: false,
        }
    }

    /// True when the stream stopped inside a frame: a header or record was started and not
    /// finished. A stream that ends this way was cut, not closed cleanly.
    pub fn is_mid_record(&self) -> bool {
        match self.state {
            State::Header { digits, .. } => digits > 0 || !self.buf.is_empty(),
            State::Body { .. } => true,
            State::Failed(_) => false,
        }
    }

    /// Bytes received but not yet returned as records.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Consumes header bytes from the front of the buffer, starting from what earlier chunks
    /// already contributed.
    fn read_header(&mut self, mut value: usize, mut digits: usize) -> HeaderRead {
        let mut used = 0usize;
        let mut outcome = HeaderRead::Incomplete;
        for &byte in self.buf.iter() {
            used += 1;
            match byte {
                b'\n' if digits > 0 => {
                    outcome = HeaderRead::Complete(value);
                    break;
                }
                b'0'..=b'9' if digits < MAX_LENGTH_DIGITS => {
                    digits += 1;
                    let next = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(usize::from(byte - b'0')))
                        .filter(|v| *v <= self.max_record_len);
                    match next {
                        Some(v) => value = v,
                        None => {
                            outcome = HeaderRead::Invalid(RecordIoError::TooLong {
                                length: format!(
                                    "{}{}",
                                    digits_text(value, digits - 1),
                                    char::from(byte)
                                ),
                                offset: self.header_start,
                                max: self.max_record_len,
                            });
                            break;
                        }
                    }
                }
                _ => {
                    let mut header = digits_text(value, digits);
                    header.extend(char::from(byte).escape_default());
                    if header.len() > MAX_QUOTED_HEADER {
                        header.truncate(MAX_QUOTED_HEADER);
                        header.push('…');
                    }
                    outcome = HeaderRead::Invalid(RecordIoError::InvalidLength {
                        header,
                        offset: self.header_start,
                    });
                    break;
                }
            }
        }
        self.buf.advance(used);
        self.consumed += used as u64;
        if let HeaderRead::Incomplete = outcome {
            self.state = State::Header { value, digits };
        }
        outcome
    }
}

/// The header digits read so far, leading zeros included.
fn digits_text(value: usize, digits: usize) -> String {
    if digits == 0 {
        String::new()
    } else {
        format!("{value:0digits$}")
    }
}

enum HeaderRead {
    Incomplete,
    Complete(usize),
    Invalid(RecordIoError),
}

/// Iterator over a decoder's complete records; see [`RecordIoDecoder::records`].
pub struct Records<'a> {
    decoder: &'a mut RecordIoDecoder,
    done: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Bytes, RecordIoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.decoder.next_record();
        if matches!(next, Some(Err(_)) | None) {
            self.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Mesos SUBSCRIBE response sample from the shared fixtures, byte for byte.
    const FIXTURE: &[u8] = b"169\n{\"type\":\"SUBSCRIBED\",\"subscribed\":{\"get_state\":{\"get_tasks\":{\"tasks\":[]},\"get_agents\":{\"agents\":[]},\"get_frameworks\":{\"frameworks\":[]}},\"heartbeat_interval_seconds\":15}}20\n{\"type\":\"HEARTBEAT\"}";

    fn encode(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            out.extend_from_slice(record.len().to_string().as_bytes());
            out.push(b'\n');
            out.extend_from_slice(record);
        }
        out
    }

    /// Feeds `stream` cut at `cuts` (positions, any order, may repeat) and collects everything
    /// the decoder yields, stopping at the first error.
    fn decode_cut(
        stream: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> (Vec<Bytes>, Option<RecordIoError>) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = RecordIoDecoder::with_max_record_len(max);
        let mut records = Vec::new();
        for pair in cuts.windows(2) {
            decoder.push(&stream[pair[0]..pair[1]]);
            for record in decoder.records() {
                match record {
                    Ok(r) => records.push(r),
                    Err(e) => return (records, Some(e)),
                }
            }
        }
        (records, None)
    }

    #[test]
    fn fixture_whole_and_byte_by_byte() {
        let whole = decode_cut(FIXTURE, &[], DEFAULT_MAX_RECORD_LEN);
        assert_eq!(whole.0.len(), 2);
        assert!(whole.1.is_none());
        assert_eq!(&whole.0[1][..], br#"{"type":"HEARTBEAT"}"#);
        assert_eq!(whole.0[0].len(), 169);

        let every_byte: Vec<usize> = (0..FIXTURE.len()).collect();
        assert_eq!(
            decode_cut(FIXTURE, &every_byte, DEFAULT_MAX_RECORD_LEN),
            whole
        );
    }

    #[test]
    fn length_split_from_its_record_and_records_merged() {
        let mut decoder = RecordIoDecoder::new();
        decoder.push(b"1");
        assert!(decoder.next_record().is_none());
        assert!(decoder.is_mid_record());
        decoder.push(b"1");
        assert!(decoder.next_record().is_none());
        decoder.push(b"\n");
        assert!(decoder.next_record().is_none());
        decoder.push(b"hello world3\nabc0\n4\nlast");
        let records: Vec<Bytes> = decoder.records().map(|r| r.unwrap()).collect();
        assert_eq!(
            records,
            vec![
                Bytes::from_static(b"hello world"),
                Bytes::from_static(b"abc"),
                Bytes::new(),
                Bytes::from_static(b"last"),
            ]
        );
        assert!(!decoder.is_mid_record());
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn records_may_contain_newlines_and_digits() {
        let stream = encode(&[b"12\n34\n".to_vec(), b"\n".to_vec()]);
        let (records, error) = decode_cut(&stream, &[], 100);
        assert!(error.is_none());
        assert_eq!(records, vec![&b"12\n34\n"[..], &b"\n"[..]]);
    }

    #[test]
    fn non_numeric_length_is_rejected_with_context() {
        let (records, error) = decode_cut(b"2\nok{\"type\":\"HEARTBEAT\"}", &[], 100);
        assert_eq!(records, vec![&b"ok"[..]]);
        let error = error.unwrap();
        assert_eq!(
            error,
            RecordIoError::InvalidLength {
                header: "{".to_string(),
                offset: 4
            }
        );
        assert!(error.to_string().contains("at byte 4"), "{error}");

        for bad in [
            &b"-5\nabcde"[..],
            b" 5\nabcde",
            b"5 \nabcde",
            b"5\r\nabcde",
            b"\n",
        ] {
            let (_, error) = decode_cut(bad, &[], 100);
            assert!(
                matches!(error, Some(RecordIoError::InvalidLength { .. })),
                "{bad:?} gave {error:?}"
            );
        }
    }

    #[test]
    fn absurd_length_is_rejected_before_the_record_arrives() {
        let mut decoder = RecordIoDecoder::with_max_record_len(1000);
        decoder.push(b"100");
        assert!(decoder.next_record().is_none());
        decoder.push(b"0");
        assert!(decoder.next_record().is_none(), "1000 is exactly the limit");
        decoder.push(b"0");
        let error = decoder.next_record().unwrap().unwrap_err();
        assert_eq!(
            error,
            RecordIoError::TooLong {
                length: "10000".to_string(),
                offset: 0,
                max: 1000
            }
        );
        assert!(error.to_string().contains("limit of 1000 bytes"), "{error}");

        let (_, error) = decode_cut(b"99999999999999999999999999\n", &[], DEFAULT_MAX_RECORD_LEN);
        assert!(matches!(error, Some(RecordIoError::TooLong { .. })));
        // Zeros never exceed the limit, but no honest header is this long.
        let (_, error) = decode_cut(&[b'0'; 64], &[], DEFAULT_MAX_RECORD_LEN);
        assert!(matches!(error, Some(RecordIoError::InvalidLength { .. })));
    }

    #[test]
    fn max_of_usize_max_does_not_overflow() {
        let (_, error) = decode_cut(b"99999999999999999999\n", &[], usize::MAX);
        assert!(matches!(error, Some(RecordIoError::TooLong { .. })));
    }

    #[test]
    fn a_framing_error_is_final() {
        let mut decoder = RecordIoDecoder::new();
        decoder.push(b"x");
        let first = decoder.next_record();
        assert!(matches!(first, Some(Err(_))));
        decoder.push(b"2\nok");
        assert_eq!(decoder.next_record(), first);
        assert_eq!(decoder.buffered_len(), 0, "a failed stream buffers nothing");
        // The iterator yields the error once and stops, so `for` loops end.
        assert_eq!(decoder.records().count(), 1);
    }

    #[test]
    fn leading_zeros_are_a_decimal_length() {
        let (records, error) = decode_cut(b"003\nabc", &[], 100);
        assert!(error.is_none());
        assert_eq!(records, vec![&b"abc"[..]]);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_back_the_same_records(
            records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..12),
            cuts in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let stream = encode(&records);
            let (decoded, error) = decode_cut(&stream, &cuts, DEFAULT_MAX_RECORD_LEN);
            prop_assert!(error.is_none());
            let expected: Vec<Bytes> = records.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_chunking_never_matters(
            stream in prop::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'1'), Just(b'0'), b'0'..=b'9', any::<u8>()],
                0..400,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..40),
            max in 0usize..50,
        ) {
            let whole = decode_cut(&stream, &[], max);
            let chunked = decode_cut(&stream, &cuts, max);
            prop_assert_eq!(whole, chunked);
        }
    }
}
