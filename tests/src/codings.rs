//! Bodies in every content coding the test servers send, spelled as
//! servers spell them: the raw upstream's `/coding/NAME` and the reference
//! API's, so both send the same codings.

use std::io::Write;

/// `data` gzip-compressed (one member).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
    out
}

/// `text` in the coding `name`, as `(Content-Encoding value, body)`:
/// `gzip`, `x-gzip`, `GZIP` and `Gzip` (the spelling varies, the coding
/// does not), `gzip-members` (two gzip members, each half the text, RFC
/// 1952 §2.2), `deflate` (zlib-wrapped, RFC 9110 §8.4.1.2), `deflate-raw`
/// (labelled `deflate`, no zlib wrapper, as some servers send), `br`,
/// `zstd`, `gzip-br` (`gzip, br`: gzip applied first), `gzip-identity`
/// and `identity`. None for another name.
pub fn encode(name: &str, text: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    Some(match name {
        "gzip" => ("gzip", gzip(text)),
        "x-gzip" => ("x-gzip", gzip(text)),
        "GZIP" => ("GZIP", gzip(text)),
        "Gzip" => ("Gzip", gzip(text)),
        "gzip-members" => {
            let (a, b) = text.split_at(text.len() / 2);
            ("gzip", [gzip(a), gzip(b)].concat())
        }
        "deflate" => ("deflate", zlib(text)),
        "deflate-raw" => ("deflate", raw_deflate(text)),
        "br" => ("br", br(text)),
        "zstd" => ("zstd", zstd::encode_all(text, 3).unwrap()),
        "gzip-br" => ("gzip, br", br(&gzip(text))),
        "gzip-identity" => ("gzip, identity", gzip(text)),
        "identity" => ("identity", text.to_vec()),
        _ => return None,
    })
}
