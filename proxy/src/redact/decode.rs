//! Decoding compressed response bodies so they can be scanned. A body that
//! cannot be decoded is never passed through unscanned: the caller refuses
//! it (`unredactable_body`) or aborts the stream.

use std::io::Write;

/// Why a body cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A content or transfer coding airlock does not decode. The message
    /// never quotes the upstream's coding: it is upstream text, and the
    /// case-folding it went through would hide a secret from the scrubber.
    #[error(
        "the body has a content or transfer coding airlock does not decode (it decodes gzip, deflate, br and zstd), \
         so it cannot be scanned for secrets"
    )]
    Unsupported,
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

/// Where a layer writes its output: a buffer that refuses to grow past
/// `cap`, so a decompression bomb fails while it expands, before it can
/// take the memory. (No `Debug`: it holds body bytes.)
#[derive(Default)]
struct Sink {
    buf: Vec<u8>,
    cap: u64,
    exceeded: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if (self.buf.len() + data.len()) as u64 > self.cap {
            self.exceeded = true;
            return Err(std::io::Error::other("decoded size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Layer {
    /// Every member of a multi-member gzip stream (RFC 1952 §2.2), as zlib,
    /// Go, Python and browsers decode it.
    Gzip(Box<flate2::write::MultiGzDecoder<Sink>>),
    Deflate(Box<Deflate>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sink>>),
}

/// `deflate` is the zlib format (RFC 9110 §8.4.1.2, RFC 1950), but some
/// servers send raw deflate (RFC 1951) under that name, and browsers and
/// curl accept both. The first two bytes tell them apart: a zlib header
/// names compression method 8 with a window of at most 32 KiB, and the
/// pair is a multiple of 31 (RFC 1950 §2.2); a raw stream's first block
/// header almost never looks like that.
enum Deflate {
    /// Fewer than two bytes seen.
    Undecided {
        head: Vec<u8>,
        sink: Sink,
    },
    Zlib(flate2::write::ZlibDecoder<Sink>),
    Raw(flate2::write::DeflateDecoder<Sink>),
}

impl Deflate {
    fn is_zlib_header(cmf: u8, flg: u8) -> bool {
        cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Deflate::Undecided { sink, .. } => sink,
            Deflate::Zlib(d) => d.get_mut(),
            Deflate::Raw(d) => d.get_mut(),
        }
    }

    /// Picks the format from what has been seen (`end`: nothing more will
    /// come), and feeds it what it held back.
    fn decide(&mut self, end: bool) -> std::io::Result<()> {
        let Deflate::Undecided { head, sink } = self else { return Ok(()) };
        if head.len() < 2 && !end {
            return Ok(());
        }
        let (head, sink) = (std::mem::take(head), std::mem::take(sink));
        let zlib = head.len() >= 2 && Deflate::is_zlib_header(head[0], head[1]);
        *self = if zlib {
            Deflate::Zlib(flate2::write::ZlibDecoder::new(sink))
        } else {
            Deflate::Raw(flate2::write::DeflateDecoder::new(sink))
        };
        self.write_all(&head)
    }

    fn write_all(&mut self, input: &[u8]) -> std::io::Result<()> {
        match self {
            Deflate::Undecided { head, .. } => {
                head.extend_from_slice(input);
                self.decide(false)
            }
            Deflate::Zlib(d) => d.write_all(input).and_then(|()| d.flush()),
            Deflate::Raw(d) => d.write_all(input).and_then(|()| d.flush()),
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        self.decide(true)?;
        match self {
            Deflate::Undecided { .. } => Ok(()),
            Deflate::Zlib(d) => d.try_finish(),
            Deflate::Raw(d) => d.try_finish(),
        }
    }
}

impl Layer {
    fn name(&self) -> &'static str {
        match self {
            Layer::Gzip(_) => "gzip",
            Layer::Deflate(_) => "deflate",
            Layer::Brotli(_) => "br",
            Layer::Zstd(_) => "zstd",
        }
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Layer::Gzip(d) => d.get_mut(),
            Layer::Deflate(d) => d.sink(),
            Layer::Brotli(d) => d.get_mut(),
            Layer::Zstd(d) => d.get_mut(),
        }
    }

    fn write_all(&mut self, input: &[u8]) -> std::io::Result<()> {
        match self {
            Layer::Gzip(d) => d.write_all(input).and_then(|()| d.flush()),
            Layer::Deflate(d) => d.write_all(input),
            Layer::Brotli(d) => d.write_all(input).and_then(|()| d.flush()),
            Layer::Zstd(d) => d.write_all(input).and_then(|()| d.flush()),
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        match self {
            Layer::Gzip(d) => d.try_finish(),
            Layer::Deflate(d) => d.close(),
            Layer::Brotli(d) => d.close(),
            Layer::Zstd(d) => d.flush(),
        }
    }

    /// Feeds `input` (or, with `None`, ends the stream) and takes what came
    /// out, which may be at most `cap` bytes.
    fn step(&mut self, input: Option<&[u8]>, cap: u64, ratio: u64) -> Result<Vec<u8>, DecodeError> {
        let name = self.name();
        self.sink().cap = cap;
        let result = match input {
            Some(data) => self.write_all(data),
            None => self.close(),
        };
        let sink = self.sink();
        if sink.exceeded {
            return Err(DecodeError::TooLarge { limit: ratio });
        }
        result.map_err(|e| DecodeError::Corrupt { encoding: name, reason: e.to_string() })?;
        Ok(std::mem::take(&mut sink.buf))
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
    /// At most this many bytes decoded in all (see [`Decoder::limited`]).
    max_decoded: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.layers.iter().map(Layer::name).collect();
        f.debug_struct("Decoder").field("layers", &names).finish()
    }
}

impl Decoder {
    /// A decoder for the `Content-Encoding` values, in the order they were
    /// listed (the order they were applied). `None` when there is nothing to
    /// decode (no header, or only `identity`). The body may decode to at
    /// most `max_ratio` times its compressed size, past the first MiB
    /// (`[limits] max_decoded_ratio`).
    pub fn for_encodings<'a>(
        values: impl Iterator<Item = &'a str>,
        max_ratio: u64,
    ) -> Result<Option<Decoder>, DecodeError> {
        let mut layers = Vec::new();
        for coding in values.flat_map(|v| v.split(',')).map(|c| c.trim().to_ascii_lowercase()) {
            let layer = match coding.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Layer::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Sink::default()))),
                "deflate" => Layer::Deflate(Box::new(Deflate::Undecided { head: Vec::new(), sink: Sink::default() })),
                "br" => {
                    Layer::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(Sink::default(), 16 * 1024)))
                }
                "zstd" => Layer::Zstd(Box::new(
                    zstd::stream::write::Decoder::new(Sink::default())
                        .map_err(|e| DecodeError::Corrupt { encoding: "zstd", reason: e.to_string() })?,
                )),
                _ => return Err(DecodeError::Unsupported),
            };
            layers.push(layer);
        }
        if layers.is_empty() {
            return Ok(None);
        }
        layers.reverse();
        Ok(Some(Decoder { layers, compressed: 0, decoded: 0, max_ratio, max_decoded: u64::MAX }))
    }

    /// The same decoder, failing with [`DecodeError::TooLarge`] once it
    /// has decoded more than `max` bytes in all, whatever the ratio.
    pub fn limited(self, max: u64) -> Decoder {
        Decoder { max_decoded: max, ..self }
    }

    /// Decodes one frame's worth of compressed bytes.
    pub fn decode(&mut self, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        self.compressed += input.len() as u64;
        self.run(Some(input))
    }

    /// Ends the body; fails if the compressed stream was truncated. A body
    /// with no bytes at all is empty, whatever its coding says (as curl
    /// takes it: there was nothing to decode).
    pub fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
        if self.compressed == 0 {
            return Ok(Vec::new());
        }
        self.run(None)
    }

    /// Passes `input` through every layer, outermost first; `None` ends
    /// each layer in turn. No layer may produce more than the budget left.
    fn run(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>, DecodeError> {
        let ratio = self.max_ratio;
        let allowed = self.compressed.saturating_mul(ratio).saturating_add(1 << 20);
        let budget = allowed.min(self.max_decoded).saturating_sub(self.decoded);
        let mut data = input.map(<[u8]>::to_vec);
        for layer in &mut self.layers {
            let mut out = match &data {
                Some(d) if input.is_some() || !d.is_empty() => layer.step(Some(d), budget, ratio)?,
                _ => Vec::new(),
            };
            if input.is_none() {
                // Ending: what the outer layer flushed has passed through
                // this one; now this one ends too.
                let tail = layer.step(None, budget.saturating_sub(out.len() as u64), ratio)?;
                out.extend_from_slice(&tail);
            }
            data = Some(out);
        }
        let data = data.unwrap_or_default();
        self.decoded += data.len() as u64;
        Ok(data)
    }
}
