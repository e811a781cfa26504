//! The compressions Linux unpacks an initramfs from, recognised by magic, with a decoder and an
//! encoder for each (the encoder writes what the kernel's decompressor accepts: xz with CRC32,
//! lz4 in the legacy frame format).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::input::Input;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Lzma,
    Zstd,
    Bzip2,
    Lz4,
}

/// How hard to compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Default,
    Fast,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Memory an xz/lzma decoder may use: a header can ask for a 4 GiB dictionary, which no
/// initramfs needs (found by fuzzing).
/// 128 MiB is twice what `xz -9` needs; with an encoder beside it (a rebuild) the process
/// stays well under 512 MiB.
pub const LZMA_MEMLIMIT: u64 = 128 << 20;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// The most an lz4 block of 8 MiB can take compressed (`LZ4_compressBound`).
const LZ4_LEGACY_BOUND: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;

impl Compression {
    /// Recognises a compressed stream by its first bytes.
    pub fn detect(head: &[u8]) -> Option<Compression> {
        let starts = |m: &[u8]| head.len() >= m.len() && &head[..m.len()] == m;
        if starts(b"070701") || starts(b"070702") {
            Some(Compression::None)
        } else if starts(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if starts(&[0x5d, 0, 0]) {
            Some(Compression::Lzma)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if starts(b"BZh") {
            Some(Compression::Bzip2)
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Some(Compression::Lz4)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
        }
    }

    /// A streaming decoder of one stream at the start of `input`, which it consumes exactly:
    /// once it has been read to its end, `input` stands at what follows (padding, another
    /// archive).
    pub fn decoder<R: Read>(self, input: &mut Input<R>) -> io::Result<Decoder<'_, R>> {
        Ok(match self {
            Compression::None => Decoder::None(input),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::GzDecoder::new(input)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0).map_err(io::Error::other)?;
                Decoder::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT).map_err(io::Error::other)?;
                Decoder::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(input)?.single_frame()),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::bufread::BzDecoder::new(input)),
            Compression::Lz4 => Decoder::Lz4(Lz4Legacy::new(input)?),
        })
    }

    /// A streaming encoder into `out`, the way the kernel can unpack it, at `level`: the
    /// default, or the fastest the format has (for a small appended archive, where speed
    /// matters more than a few KiB).
    pub fn encoder<W: Write>(self, mut out: W, level: Level) -> io::Result<Encoder<W>> {
        let fast = level == Level::Fast;
        let preset = if fast { 0 } else { 6 };
        Ok(match self {
            Compression::None => Encoder::None(out),
            Compression::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::new(if fast { 1 } else { 6 })))
            }
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_easy_encoder(preset, liblzma::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Lzma => {
                let opts = liblzma::stream::LzmaOptions::new_preset(preset).map_err(io::Error::other)?;
                let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, if fast { 1 } else { 9 })?),
            Compression::Bzip2 => {
                let level = if fast { bzip2::Compression::fast() } else { bzip2::Compression::best() };
                Encoder::Bzip2(bzip2::write::BzEncoder::new(out, level))
            }
            Compression::Lz4 => {
                out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
                Encoder::Lz4(Lz4Writer { out, block: Vec::new() })
            }
        })
    }

    /// Compresses `data` the way the kernel can unpack it.
    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.compress_at(data, Level::Default)
    }

    /// Compresses `data` at `level` (see [`encoder`](Self::encoder)).
    pub fn compress_at(self, data: &[u8], level: Level) -> io::Result<Vec<u8>> {
        let mut e = self.encoder(Vec::new(), level)?;
        e.write_all(data)?;
        e.finish()
    }
}

/// A decoder over the initramfs input; see [`Compression::decoder`].
pub enum Decoder<'a, R: Read> {
    None(&'a mut Input<R>),
    Gzip(flate2::bufread::GzDecoder<&'a mut Input<R>>),
    Xz(liblzma::bufread::XzDecoder<&'a mut Input<R>>),
    Zstd(zstd::stream::read::Decoder<'static, &'a mut Input<R>>),
    Bzip2(bzip2::bufread::BzDecoder<&'a mut Input<R>>),
    Lz4(Lz4Legacy<'a, R>),
}

impl<R: Read> Read for Decoder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(d) => d.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Xz(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Bzip2(d) => d.read(buf),
            Decoder::Lz4(d) => d.read(buf),
        }
    }
}

/// An encoder; see [`Compression::encoder`]. [`finish`](Encoder::finish) ends the stream.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Lz4(Lz4Writer<W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
        }
    }
    /// Does nothing: a flush would end a deflate or xz block early (cpio's writer flushes
    /// after every member) or, for lzma, fail. [`finish`](Encoder::finish) ends the stream.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Encoder<W> {
    /// Ends the stream; returns the writer underneath.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
            Encoder::Lz4(mut e) => {
                e.emit()?;
                Ok(e.out)
            }
        }
    }
}

/// The legacy lz4 format (`lz4 -l`): a magic, then blocks of `u32 LE size` + an lz4 block of
/// at most 8 MiB of input. A repeated magic starts another stream; anything else ends it.
pub struct Lz4Writer<W> {
    out: W,
    block: Vec<u8>,
}

impl<W: Write> Lz4Writer<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let packed = lz4_flex::block::compress(&self.block);
        self.out.write_all(&(packed.len() as u32).to_le_bytes())?;
        self.out.write_all(&packed)?;
        self.block.clear();
        Ok(())
    }
}

impl<W: Write> Write for Lz4Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(LZ4_LEGACY_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == LZ4_LEGACY_BLOCK {
            self.emit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The lz4 legacy frame, decoded one block (at most 8 MiB) at a time.
pub struct Lz4Legacy<'a, R> {
    input: &'a mut Input<R>,
    block: Vec<u8>,
    at: usize,
}

impl<'a, R: Read> Lz4Legacy<'a, R> {
    fn new(input: &'a mut Input<R>) -> io::Result<Self> {
        if input.peek(4)? != LZ4_LEGACY_MAGIC.to_le_bytes() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "lz4 legacy: bad magic"));
        }
        input.consume(4);
        Ok(Lz4Legacy { input, block: Vec::new(), at: 0 })
    }

    /// Decodes the next block; `false` at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            let word = self.input.peek(4)?;
            let Ok(word) = <[u8; 4]>::try_from(word) else { return Ok(false) };
            let size = u32::from_le_bytes(word);
            if size == LZ4_LEGACY_MAGIC {
                self.input.consume(4);
                continue;
            }
            // Anything that is not a whole block (zero padding, the next archive) ends the stream.
            if size == 0 || size as usize > LZ4_LEGACY_BOUND {
                return Ok(false);
            }
            let whole = 4 + size as usize;
            let b = self.input.peek(whole)?;
            if b.len() < whole {
                return Ok(false);
            }
            self.block = lz4_flex::block::decompress(&b[4..], LZ4_LEGACY_BLOCK)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("lz4 legacy: {e}")))?;
            self.input.consume(whole);
            self.at = 0;
            return Ok(true);
        }
    }
}

impl<R: Read> Read for Lz4Legacy<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 7] = [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Lzma,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Lz4,
    ];

    impl Compression {
        fn decompress_stream(self, data: &[u8]) -> io::Result<(Vec<u8>, usize)> {
            let mut input = Input::new(data);
            let mut out = Vec::new();
            self.decoder(&mut input)?.read_to_end(&mut out)?;
            Ok((out, input.position() as usize))
        }
    }

    fn sample() -> Vec<u8> {
        let mut v = b"070701".to_vec();
        for i in 0..300_000u32 {
            v.extend_from_slice(&(i % 251).to_le_bytes()[..1 + (i % 3) as usize]);
        }
        v
    }

    #[test]
    fn round_trips_and_detects_every_compression() {
        let data = sample();
        for c in ALL {
            let mut packed = c.compress(&data).unwrap();
            let len = packed.len();
            assert_eq!(Compression::detect(&packed), Some(c), "{c:?}");
            packed.extend(b"\0\0\0\0");
            packed.extend(b"070701");
            if c == Compression::None {
                continue;
            }
            let (out, used) = c.decompress_stream(&packed).unwrap();
            assert!(out == data, "{c:?}");
            assert_eq!(used, len, "{c:?} must stop at its own end");
        }
    }

    #[test]
    fn lz4_legacy_blocks_are_at_most_8mib() {
        let data = vec![7u8; LZ4_LEGACY_BLOCK + 10];
        let packed = Compression::Lz4.compress(&data).unwrap();
        // The magic, then a whole block and the 10 bytes left over.
        let first = u32::from_le_bytes(packed[4..8].try_into().unwrap()) as usize;
        assert!(first <= LZ4_LEGACY_BOUND);
        let second = u32::from_le_bytes(packed[8 + first..12 + first].try_into().unwrap()) as usize;
        assert_eq!(12 + first + second, packed.len());
        assert_eq!(
            lz4_flex::block::decompress(&packed[8..8 + first], LZ4_LEGACY_BLOCK).unwrap().len(),
            LZ4_LEGACY_BLOCK
        );
        assert_eq!(Compression::Lz4.decompress_stream(&packed).unwrap(), (data, packed.len()));
        assert!(Compression::Lz4.decompress_stream(b"nope").is_err());
    }

    #[test]
    fn a_huge_lzma_dictionary_is_refused_not_allocated() {
        // A legacy .lzma header asking for a 4 GiB dictionary.
        let mut bomb = vec![0x5d, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        bomb.extend([0u8; 32]);
        assert!(Compression::Lzma.decompress_stream(&bomb).is_err());
    }

    #[test]
    fn xz_uses_crc32_for_the_kernel() {
        let packed = Compression::Xz.compress(b"hello").unwrap();
        // Stream flags byte 7: check type 1 = CRC32.
        assert_eq!(packed[7], 1);
    }
}
