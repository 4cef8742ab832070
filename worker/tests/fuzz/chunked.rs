//! The chunked body decoder, `chunked::ChunkedDecoder`: no panic on any
//! input; fed in any pieces into output buffers of any size it decodes
//! what it decodes fed whole; a prefix is incomplete or refused as the
//! whole is; a body it accepts, chunked again another way, decodes to the
//! same data.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use rgun_worker::chunked::ChunkedDecoder;

use crate::head::apply;
use crate::keep::{self, Raw, Saved, seeds_file};

/// What decoding some input came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The body ended after `consumed` bytes of input.
    Done {
        data: Raw,
        consumed: usize,
    },
    /// All the input was taken and the body goes on.
    Incomplete {
        data: Raw,
    },
    Refused,
}

/// Decode `input`, handing it over in pieces that end at `cuts` (positions
/// in the input, in any order), into an output buffer of `out_size` bytes,
/// as a connection does with whatever the socket gave.
fn decode(input: &[u8], cuts: &[usize], out_size: usize) -> Outcome {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.push(input.len());
    ends.sort_unstable();
    let mut decoder = ChunkedDecoder::default();
    let mut out = vec![0; out_size.max(1)];
    let (mut data, mut fed) = (Vec::new(), 0);
    for end in ends {
        // Each piece is offered until it is used up or the body ended;
        // each turn takes input or gives data, or the body is done.
        while fed < end && !decoder.is_done() {
            match decoder.decode(&input[fed..end], &mut out) {
                Ok((used, made)) => {
                    assert!(used > 0 || made > 0, "no progress at {fed}");
                    assert!(used <= end - fed && made <= out.len());
                    data.extend_from_slice(&out[..made]);
                    fed += used;
                }
                Err(_) => return Outcome::Refused,
            }
        }
    }
    if decoder.is_done() {
        Outcome::Done {
            data: Raw(data),
            consumed: fed,
        }
    } else {
        Outcome::Incomplete { data: Raw(data) }
    }
}

fn whole(input: &[u8]) -> Outcome {
    decode(input, &[], input.len())
}

/// A chunked body as a request a corpus case can hold.
fn saved(body: &[u8]) -> impl FnOnce() -> Saved {
    move || {
        let mut bytes =
            b"POST /echo HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        Saved {
            bytes,
            extension: "http",
        }
    }
}

/// `data` chunked in pieces of `sizes` (cycled; 0 ends the sizes list's
/// turn), sizes in hex of either case, with the given extensions and
/// trailer lines.
fn encode(data: &[u8], sizes: &[usize], upper: bool, ext: &str, trailers: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut turn = 0;
    while !rest.is_empty() {
        let n = sizes.get(turn % sizes.len().max(1)).copied().unwrap_or(1);
        let n = n.clamp(1, rest.len());
        turn += 1;
        let size = if upper {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(format!("0{ext}\r\n").as_bytes());
    for trailer in trailers {
        out.extend_from_slice(trailer.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn extension() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => select(&["", "", ";a", ";a=b", "; a = b", ";a=\"q \\\" d\"", ";a;b=c", "\t;a", " ;a"][..]),
        // Out of the grammar.
        1 => select(&[";", ";a ", ";a=", ";a=\"open", ";a=b c", ";[", ";a\0", " "][..]),
    ]
}

fn trailer() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => select(&["X-T: v", "X-Empty:", "X-T:\tv\t", "a:b", "X-T: caf\u{e9}"][..]),
        // No field lines.
        1 => select(&[" folded: v", "no colon", ": v", "X T: v", "X-T: a\x01b", "X-T: a\rb"][..]),
    ]
}

/// Chunked bodies built by the grammar, one part of them now and then out
/// of it, a few bytes changed now and then, with bytes after them.
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<u8>(), 0..40),
        vec(0usize..12, 1..4),
        any::<bool>(),
        extension(),
        vec(trailer(), 0..3),
        select(vec![&b""[..], b"NEXT", b"\r\n", b"0\r\n\r\n"]),
        prop_oneof![4 => Just(Vec::new()), 1 => vec(crate::head::edit(), 1..4)],
    )
        .prop_map(|(data, sizes, upper, ext, trailers, after, edits)| {
            let mut body = encode(&data, &sizes, upper, ext, &trailers);
            body.extend_from_slice(after);
            apply(&mut body, &edits);
            body
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => body(),
        1 => vec(any::<u8>(), 0..64),
        1 => vec(select(&b"0123456789abcdefABCDEF;= \t\"\\\r\nxX:"[..]), 0..64),
    ]
}

proptest! {
    #![proptest_config(keep::config(seeds_file!("chunked"), "chunked"))]

    /// The pieces the socket gives and the room the caller has do not
    /// change what is decoded.
    #[test]
    fn decoded_in_pieces_is_decoded_whole(
        Raw(body) in input().prop_map(Raw),
        cuts in vec(any::<Index>(), 0..8),
        out_size in 1usize..48,
    ) {
        keep::check(saved(&body), || {
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            let whole = whole(&body);
            prop_assert_eq!(
                decode(&body, &cuts, out_size),
                whole,
                "{:?} cut at {:?}, out {}",
                Raw(body.clone()),
                cuts,
                out_size
            );
            Ok(())
        })?;
    }

    /// A prefix is still going on, or refused as the whole is, or (when it
    /// holds the whole body) the same body.
    #[test]
    fn a_prefix_is_incomplete_or_the_same_answer(Raw(body) in input().prop_map(Raw)) {
        keep::check(saved(&body), || {
            let whole = whole(&body);
            for end in 0..body.len() {
                let part = decode(&body[..end], &[], end);
                let agrees = match (&whole, &part) {
                    (Outcome::Refused, Outcome::Refused) => true,
                    (Outcome::Done { consumed, .. }, Outcome::Done { .. }) => {
                        end >= *consumed && part == whole
                    }
                    (_, Outcome::Incomplete { data }) => match &whole {
                        Outcome::Done { data: all, consumed } => {
                            end < *consumed && all.0.starts_with(&data.0)
                        }
                        Outcome::Incomplete { data: all } => all.0.starts_with(&data.0),
                        Outcome::Refused => true,
                    },
                    _ => false,
                };
                prop_assert!(
                    agrees,
                    "cut at {end} of {:?}: {part:?}, but the whole: {whole:?}",
                    Raw(body.clone())
                );
            }
            Ok(())
        })?;
    }

    /// A body the decoder accepts, chunked again in other sizes, decodes to
    /// the same data, to the last byte of the new encoding.
    #[test]
    fn accepted_data_chunked_again_decodes_the_same(
        Raw(body) in input().prop_map(Raw),
        sizes in vec(1usize..20, 1..4),
        upper in any::<bool>(),
    ) {
        keep::check(saved(&body), || {
            let Outcome::Done { data, .. } = whole(&body) else {
                return Ok(());
            };
            let again = encode(&data.0, &sizes, upper, ";x=y", &["X-T: v"]);
            prop_assert_eq!(
                whole(&again),
                Outcome::Done { data, consumed: again.len() },
                "{:?} chunked again as {:?}",
                Raw(body.clone()),
                Raw(again.clone())
            );
            Ok(())
        })?;
    }
}
