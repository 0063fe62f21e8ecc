//! Decoding compressed response bodies so they can be scanned. A body that
//! cannot be decoded is never passed through unscanned: the caller refuses
//! it (`unredactable_body`) or aborts the stream.

use std::io::Write;

/// Why a body cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A `Content-Encoding` airlock does not decode.
    #[error("content-encoding '{0}' is not supported, so the body cannot be scanned for secrets")]
    Unsupported(String),
    /// The compressed data is corrupt or truncated.
    #[error("the {encoding} body failed to decode: {reason}")]
    Corrupt {
        /// The encoding.
        encoding: &'static str,
        /// Why.
        reason: String,
    },
    /// The decoded body grew past the allowed expansion.
    #[error("the decoded body is more than {limit} times its compressed size (a decompression bomb?)")]
    TooLarge {
        /// The ratio limit.
        limit: u64,
    },
}

enum Layer {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

impl Layer {
    fn name(&self) -> &'static str {
        match self {
            Layer::Gzip(_) => "gzip",
            Layer::Zlib(_) => "deflate",
            Layer::Brotli(_) => "br",
            Layer::Zstd(_) => "zstd",
        }
    }

    fn write(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Layer::Gzip(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Zlib(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Brotli(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Zstd(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Layer::Gzip(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Zlib(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Brotli(d) => {
                d.close()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Layer::Zstd(d) => {
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }
}

/// Decodes a body through every `Content-Encoding` layer, last applied
/// first.
pub struct Decoder {
    /// In decoding order.
    layers: Vec<Layer>,
    compressed: u64,
    decoded: u64,
    max_ratio: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.layers.iter().map(Layer::name).collect();
        f.debug_struct("Decoder").field("layers", &names).finish()
    }
}

/// Decoded bytes allowed per compressed byte, past the first MiB.
pub const DEFAULT_MAX_RATIO: u64 = 200;

impl Decoder {
    /// A decoder for the `Content-Encoding` values, in the order they were
    /// listed (the order they were applied). `None` when there is nothing to
    /// decode (no header, or only `identity`).
    pub fn for_encodings<'a>(values: impl Iterator<Item = &'a str>) -> Result<Option<Decoder>, DecodeError> {
        let mut layers = Vec::new();
        for coding in values.flat_map(|v| v.split(',')).map(|c| c.trim().to_ascii_lowercase()) {
            let layer = match coding.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Layer::Gzip(flate2::write::GzDecoder::new(Vec::new())),
                "deflate" => Layer::Zlib(flate2::write::ZlibDecoder::new(Vec::new())),
                "br" => Layer::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(Vec::new(), 16 * 1024))),
                "zstd" => Layer::Zstd(Box::new(
                    zstd::stream::write::Decoder::new(Vec::new())
                        .map_err(|e| DecodeError::Corrupt { encoding: "zstd", reason: e.to_string() })?,
                )),
                other => return Err(DecodeError::Unsupported(other.to_owned())),
            };
            layers.push(layer);
        }
        if layers.is_empty() {
            return Ok(None);
        }
        layers.reverse();
        Ok(Some(Decoder { layers, compressed: 0, decoded: 0, max_ratio: DEFAULT_MAX_RATIO }))
    }

    /// Feeds compressed bytes; returns what decoded so far.
    pub fn decode(&mut self, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        self.compressed += input.len() as u64;
        let mut data = input.to_vec();
        for layer in &mut self.layers {
            data = layer
                .write(&data)
                .map_err(|e| DecodeError::Corrupt { encoding: layer.name(), reason: e.to_string() })?;
        }
        self.account(data)
    }

    /// Ends the body; fails if the compressed stream was truncated.
    pub fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
        let mut data = Vec::new();
        for i in 0..self.layers.len() {
            let layer = &mut self.layers[i];
            let name = layer.name();
            let corrupt = |e: std::io::Error| DecodeError::Corrupt { encoding: name, reason: e.to_string() };
            if !data.is_empty() {
                let mut more = layer.write(&data).map_err(corrupt)?;
                data = std::mem::take(&mut more);
            }
            let layer = &mut self.layers[i];
            let mut tail =
                layer.finish().map_err(|e| DecodeError::Corrupt { encoding: name, reason: e.to_string() })?;
            data.append(&mut tail);
        }
        self.account(data)
    }

    fn account(&mut self, data: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
        self.decoded += data.len() as u64;
        let allowed = self.compressed.saturating_mul(self.max_ratio).saturating_add(1 << 20);
        if self.decoded > allowed {
            return Err(DecodeError::TooLarge { limit: self.max_ratio });
        }
        Ok(data)
    }
}
