//! Decoding a chunked request body (RFC 9112 §7.1): a byte-driven state
//! machine fed whatever the socket had, writing data into the caller's
//! buffer. Extensions are checked against their grammar (§7.1.1) and
//! skipped; trailer lines are checked as field lines (§7.1.2, §5) and
//! skipped.
//! Line ends must be CRLF: a bare LF or CR is refused (smuggling guard).

use rgun_gateway::grammar::{is_field_value_byte, is_token_byte};

/// The longest chunk-size line with its extensions, and the most bytes of
/// trailer fields, a client may send.
pub const MAX_CHUNK_LINE: usize = 4096;
pub const MAX_TRAILER_BYTES: usize = 8190;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    SizeSpace,
    /// After `;`: BWS, then an extension name.
    ExtBeforeName,
    ExtName,
    /// BWS after a name: `=` or another `;` must follow.
    ExtAfterName,
    /// After `=`: BWS, then a token or a quoted string.
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// After a closing quote: `;` or the line's end.
    ExtAfterQuoted,
    /// BWS after a value: only another `;` may follow.
    ExtAfterValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    digits: usize,
    line_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `input` into `out`: returns (bytes of input consumed,
    /// bytes of data written). Stops when `out` is full, `input` is used up,
    /// or the body ends.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let (mut i, mut o) = (0, 0);
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                if o == out.len() {
                    break;
                }
                let n = (input.len() - i).min(out.len() - o);
                let n = n.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                out[o..o + n].copy_from_slice(&input[i..i + n]);
                (i, o) = (i + n, o + n);
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok((i, o))
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        self.state = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                // chunk-size = 1*HEXDIG; refuse what would overflow.
                if self.remaining >> 58 != 0 {
                    return Err(ChunkError);
                }
                self.remaining = self.remaining << 4 | u64::from(crate::parse::hex(b).unwrap_or(0));
                self.digits += 1;
                self.line(Size)?
            }
            (Size, b' ' | b'\t') if self.digits > 0 => self.line(SizeSpace)?,
            // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ),
            // ext-val = token / quoted-string. BWS is allowed where the
            // grammar puts it only: `5 \r\n` or `5;a \r\n` is refused, as a
            // proxy in front may read it otherwise.
            (Size | SizeSpace, b';') if self.digits > 0 => self.line(ExtBeforeName)?,
            (Size | ExtName | ExtToken | ExtAfterQuoted, b'\r') if self.digits > 0 => SizeLf,
            (SizeSpace, b' ' | b'\t') => self.line(SizeSpace)?,
            (ExtBeforeName, b' ' | b'\t') => self.line(ExtBeforeName)?,
            (ExtBeforeName | ExtName, _) if is_token_byte(b) => self.line(ExtName)?,
            (ExtName | ExtAfterName, b' ' | b'\t') => self.line(ExtAfterName)?,
            (ExtName | ExtAfterName, b'=') => self.line(ExtBeforeValue)?,
            (ExtBeforeValue, b' ' | b'\t') => self.line(ExtBeforeValue)?,
            (ExtBeforeValue, b'"') => self.line(ExtQuoted)?,
            (ExtBeforeValue | ExtToken, _) if is_token_byte(b) => self.line(ExtToken)?,
            (ExtQuoted, b'"') => self.line(ExtAfterQuoted)?,
            (ExtQuoted, b'\\') => self.line(ExtQuotedPair)?,
            // qdtext: HTAB, SP, VCHAR but `"` and `\`, obs-text.
            (ExtQuoted, _) if is_field_value_byte(b) => self.line(ExtQuoted)?,
            (ExtQuotedPair, _) if is_field_value_byte(b) => self.line(ExtQuoted)?,
            (ExtToken | ExtAfterQuoted | ExtAfterValue, b' ' | b'\t') => {
                self.line(ExtAfterValue)?
            }
            (ExtName | ExtAfterName | ExtToken | ExtAfterQuoted | ExtAfterValue, b';') => {
                self.line(ExtBeforeName)?
            }
            (SizeLf, b'\n') => {
                self.digits = 0;
                self.line_bytes = 0;
                if self.remaining == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            // field-line = field-name ":" OWS field-value OWS; a line
            // starting with whitespace (obs-fold) is refused.
            (TrailerStart | TrailerName, _) if is_token_byte(b) => self.trailer(TrailerName)?,
            (TrailerName, b':') => self.trailer(TrailerValue)?,
            (TrailerValue, _) if is_field_value_byte(b) => self.trailer(TrailerValue)?,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkError),
        };
        Ok(())
    }

    fn trailer(&mut self, next: State) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError);
        }
        Ok(next)
    }

    fn line(&mut self, next: State) -> Result<State, ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_CHUNK_LINE {
            return Err(ChunkError);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `piece` bytes into an output buffer of
    /// `out_size`, as the worker does.
    fn decode_all(
        input: &[u8],
        piece: usize,
        out_size: usize,
    ) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut out = vec![0; out_size];
        let mut fed = 0;
        while !decoder.is_done() {
            if fed == input.len() {
                return Err(ChunkError);
            }
            let end = (fed + piece).min(input.len());
            let mut chunk = &input[fed..end];
            while !chunk.is_empty() && !decoder.is_done() {
                let (used, made) = decoder.decode(chunk, &mut out)?;
                data.extend_from_slice(&out[..made]);
                chunk = &chunk[used..];
                fed += used;
            }
        }
        Ok((data, fed))
    }

    const BODY: &[u8] = b"5;name=value\r\nhello\r\n6 ; x ; q = \"a \\\"b\\\" ;c\"\r\n world\r\n\
        0;last\r\nX-Trailer: yes\r\nX-Empty:\r\n\r\nNEXT";

    #[test]
    fn decodes_whatever_the_split() {
        for piece in 1..BODY.len() {
            for out_size in [1, 3, 64] {
                let (data, used) = decode_all(BODY, piece, out_size).unwrap();
                assert_eq!(data, b"hello world");
                assert_eq!(&BODY[used..], b"NEXT", "piece {piece} out {out_size}");
            }
        }
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"\r\n",
            b"fffffffffffffffffff\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            // Extensions out of grammar.
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a \r\nhello\r\n0\r\n\r\n",
            b"5;bad[=x\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"open\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5;a\0\r\nhello\r\n0\r\n\r\n",
            b"5;a\rX\nhello\r\n0\r\n\r\n",
            // Trailer lines that are no field lines.
            b"0\r\nno colon here\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nX-A: a\x01b\r\n\r\n",
            b"0\r\nX A: b\r\n\r\n",
            b"0\r\n: b\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(bad, 64, 64).map(|r| r.0),
                Err(ChunkError),
                "{bad:?}"
            );
        }
    }
}
