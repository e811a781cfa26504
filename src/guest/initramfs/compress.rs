//! The compressions Linux unpacks an initramfs from, recognised by magic, with a decoder and an
//! encoder for each (the encoder writes what the kernel's decompressor accepts: xz with CRC32,
//! lz4 in the legacy frame format).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

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
const LZMA_MEMLIMIT: u64 = 256 << 20;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

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

    /// A streaming decoder of one stream from the start of `data`; [`Decoder::rest`] gives
    /// what follows it (padding, another archive) once it has been read to its end.
    pub fn decoder(self, data: &[u8]) -> io::Result<Decoder<'_>> {
        Ok(match self {
            Compression::None => Decoder::None(data),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::GzDecoder::new(data)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0).map_err(io::Error::other)?;
                Decoder::Xz(liblzma::bufread::XzDecoder::new_stream(data, stream))
            }
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT).map_err(io::Error::other)?;
                Decoder::Xz(liblzma::bufread::XzDecoder::new_stream(data, stream))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(data)?.single_frame()),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::bufread::BzDecoder::new(data)),
            Compression::Lz4 => Decoder::Lz4(Lz4Legacy::new(data)?),
        })
    }

    /// Compresses `data` the way the kernel can unpack it.
    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.compress_at(data, Level::Default)
    }

    /// Compresses `data` at `level`: the default, or the fastest the format has (for a small
    /// appended archive, where speed matters more than a few KiB).
    pub fn compress_at(self, data: &[u8], level: Level) -> io::Result<Vec<u8>> {
        let fast = level == Level::Fast;
        let preset = if fast { 0 } else { 6 };
        Ok(match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(if fast { 1 } else { 6 }));
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_easy_encoder(preset, liblzma::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
                let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Lzma => {
                let opts = liblzma::stream::LzmaOptions::new_preset(preset).map_err(io::Error::other)?;
                let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).map_err(io::Error::other)?;
                let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Zstd => zstd::stream::encode_all(data, if fast { 1 } else { 9 })?,
            Compression::Bzip2 => {
                let level = if fast { bzip2::Compression::fast() } else { bzip2::Compression::best() };
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), level);
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Lz4 => lz4_legacy_encode(data),
        })
    }
}

/// The legacy lz4 format (`lz4 -l`): a magic, then blocks of `u32 LE size` + an lz4 block of
/// at most 8 MiB of input. A repeated magic starts another stream; anything else ends it.
/// A decoder over a borrowed stream: read it, then take [`rest`](Decoder::rest).
pub enum Decoder<'a> {
    None(&'a [u8]),
    Gzip(flate2::bufread::GzDecoder<&'a [u8]>),
    Xz(liblzma::bufread::XzDecoder<&'a [u8]>),
    Zstd(zstd::stream::read::Decoder<'static, &'a [u8]>),
    Bzip2(bzip2::bufread::BzDecoder<&'a [u8]>),
    Lz4(Lz4Legacy<'a>),
}

impl Read for Decoder<'_> {
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

impl<'a> Decoder<'a> {
    /// The input after the stream (all of it read so far, for an unfinished stream).
    pub fn rest(self) -> &'a [u8] {
        match self {
            Decoder::None(d) => d,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Xz(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
            Decoder::Bzip2(d) => d.into_inner(),
            Decoder::Lz4(d) => &d.data[d.pos.min(d.data.len())..],
        }
    }
}

/// The lz4 legacy frame, decoded one block (at most 8 MiB) at a time.
pub struct Lz4Legacy<'a> {
    data: &'a [u8],
    pos: usize,
    block: Vec<u8>,
    at: usize,
}

impl<'a> Lz4Legacy<'a> {
    fn new(data: &'a [u8]) -> io::Result<Self> {
        if data.get(..4) != Some(&LZ4_LEGACY_MAGIC.to_le_bytes()[..]) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "lz4 legacy: bad magic"));
        }
        Ok(Lz4Legacy { data, pos: 4, block: Vec::new(), at: 0 })
    }

    /// Decodes the next block; `false` at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        let word = |p: usize| self.data.get(p..p + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        while let Some(size) = word(self.pos) {
            if size == LZ4_LEGACY_MAGIC {
                self.pos += 4;
                continue;
            }
            let start = self.pos + 4;
            // Anything that is not a whole block (zero padding, the next archive) ends the stream.
            let Some(end) = start.checked_add(size as usize).filter(|&e| size > 0 && e <= self.data.len()) else {
                return Ok(false);
            };
            self.block = lz4_flex::block::decompress(&self.data[start..end], LZ4_LEGACY_BLOCK)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("lz4 legacy: {e}")))?;
            self.at = 0;
            self.pos = end;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Read for Lz4Legacy<'_> {
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
fn lz4_legacy_decode(data: &[u8]) -> io::Result<(Vec<u8>, usize)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("lz4 legacy: {m}"));
    let word = |p: usize| data.get(p..p + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    if word(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(bad("bad magic"));
    }
    let mut out = Vec::new();
    let mut pos = 4;
    while let Some(size) = word(pos) {
        if size == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let start = pos + 4;
        // Anything that is not a whole block (zero padding, the next archive) ends the stream.
        let Some(end) = start.checked_add(size as usize).filter(|&e| size > 0 && e <= data.len()) else { break };
        let block =
            lz4_flex::block::decompress(&data[start..end], LZ4_LEGACY_BLOCK).map_err(|e| bad(&e.to_string()))?;
        out.extend_from_slice(&block);
        pos = end;
    }
    Ok((out, pos.min(data.len())))
}

fn lz4_legacy_encode(data: &[u8]) -> Vec<u8> {
    let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
    for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
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
            let mut d = self.decoder(data)?;
            let mut out = Vec::new();
            d.read_to_end(&mut out)?;
            Ok((out, data.len() - d.rest().len()))
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
        let packed = lz4_legacy_encode(&data);
        assert_eq!(lz4_legacy_decode(&packed).unwrap(), (data.clone(), packed.len()));
        assert_eq!(Compression::Lz4.decompress_stream(&packed).unwrap(), (data, packed.len()));
        assert!(lz4_legacy_decode(b"nope").is_err());
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
