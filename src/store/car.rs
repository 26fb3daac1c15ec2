//! CAR v1 (Content Addressable aRchive): the writer behind `?format=car` and `zipiq export`, and the reader behind
//! `zipiq import`.
//!
//! A CAR v1 is a varint-prefixed dag-cbor header `{roots: [CID...], version: 1}` followed by sections
//! `varint(len) | CID | block`. The reader takes untrusted bytes: every length is bounded before anything is
//! allocated, the header must be exactly the v1 shape, and every block must hash to its CID (sha2-256 or identity);
//! anything else is an error, never a panic and never a block passed on unchecked.

use bytes::Bytes;
use cid::Cid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::store::block::{self, BlockError};

/// Largest header accepted (a header lists roots only; thousands fit in far less).
pub const MAX_HEADER_SIZE: u64 = 1024 * 1024;
/// Largest section accepted: a CID plus a block. Bitswap moves blocks of at most 2 MiB; 8 MiB leaves room for
/// CARs written by other tools without letting a hostile length make the reader allocate gigabytes.
pub const MAX_SECTION_SIZE: u64 = 8 * 1024 * 1024;
/// Most roots a header may list.
pub const MAX_ROOTS: usize = 4096;

/// Why a CAR cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// The header is malformed (says where).
    #[error("CAR header: {0}")]
    Header(&'static str),
    /// Not CARv1.
    #[error("CAR version {0} is not supported (only CARv1)")]
    UnsupportedVersion(u64),
    /// The header is larger than zipIQ reads.
    #[error("CAR header of {0} bytes is larger than the {MAX_HEADER_SIZE}-byte limit")]
    HeaderTooLarge(u64),
    /// A section is larger than zipIQ reads.
    #[error("CAR section of {0} bytes is larger than the {MAX_SECTION_SIZE}-byte limit")]
    SectionTooLarge(u64),
    /// A section is malformed (says where).
    #[error("CAR section: {0}")]
    Section(&'static str),
    /// The CAR ends inside the named part.
    #[error("CAR ends in the middle of a {0}")]
    Truncated(&'static str),
    /// A block does not match its CID.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Reading or writing failed.
    #[error("CAR I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_cbor_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => {
            out.push(major | 24);
            out.push(value as u8);
        }
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// The header of a CAR v1 with these roots, length prefix included (canonical dag-cbor: `roots` before
/// `version`).
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(16 + roots.len() * 40);
    put_cbor_head(&mut cbor, 5, 2);
    put_cbor_head(&mut cbor, 3, 5);
    cbor.extend_from_slice(b"roots");
    put_cbor_head(&mut cbor, 4, roots.len() as u64);
    for root in roots {
        let bytes = root.to_bytes();
        put_cbor_head(&mut cbor, 6, 42);
        put_cbor_head(&mut cbor, 2, bytes.len() as u64 + 1);
        cbor.push(0x00);
        cbor.extend_from_slice(&bytes);
    }
    put_cbor_head(&mut cbor, 3, 7);
    cbor.extend_from_slice(b"version");
    put_cbor_head(&mut cbor, 0, 1);
    let mut out = Vec::with_capacity(cbor.len() + 4);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// The bytes that precede a block in its section: `varint(len) | CID`.
pub fn section_prefix(cid: &Cid, block_len: usize) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(cid_bytes.len() + 10);
    put_varint(&mut out, (cid_bytes.len() + block_len) as u64);
    out.extend_from_slice(&cid_bytes);
    out
}

/// Writes a CAR v1 block by block.
pub struct CarWriter<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin> CarWriter<W> {
    /// Writes the header.
    pub async fn new(mut writer: W, roots: &[Cid]) -> Result<Self, CarError> {
        writer.write_all(&encode_header(roots)).await?;
        Ok(CarWriter { writer })
    }

    /// Writes one block's section.
    pub async fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), CarError> {
        self.writer
            .write_all(&section_prefix(cid, data.len()))
            .await?;
        self.writer.write_all(data).await?;
        Ok(())
    }

    /// Flushes and hands the writer back.
    pub async fn finish(mut self) -> Result<W, CarError> {
        self.writer.flush().await?;
        Ok(self.writer)
    }
}

/// A cursor over the CBOR header that never reads past its end.
struct Cbor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CarError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(CarError::Header("truncated dag-cbor"))?;
        let out = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CarError> {
        self.take(N)?
            .try_into()
            .map_err(|_| CarError::Header("truncated dag-cbor"))
    }

    /// A head: (major type, argument). Indefinite lengths are refused (dag-cbor forbids them).
    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let first = *self
            .take(1)?
            .first()
            .ok_or(CarError::Header("truncated dag-cbor"))?;
        let major = first >> 5;
        let info = first & 0x1f;
        let value = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?.first().copied().unwrap_or(0)),
            25 => u64::from(u16::from_be_bytes(self.array()?)),
            26 => u64::from(u32::from_be_bytes(self.array()?)),
            27 => u64::from_be_bytes(self.array()?),
            _ => return Err(CarError::Header("indefinite or reserved dag-cbor length")),
        };
        Ok((major, value))
    }

    fn text(&mut self) -> Result<&'a [u8], CarError> {
        match self.head()? {
            (3, len) => self.take(usize::try_from(len).map_err(|_| CarError::Header("huge key"))?),
            _ => Err(CarError::Header("map key is not a string")),
        }
    }
}

/// Parses the dag-cbor header of a CAR v1: `{roots: [CID...], version: 1}` and nothing else.
pub fn decode_header(cbor: &[u8]) -> Result<Vec<Cid>, CarError> {
    let mut r = Cbor { buf: cbor, pos: 0 };
    let entries = match r.head()? {
        (5, n) if n <= 2 => n,
        (5, _) => return Err(CarError::Header("unexpected header fields")),
        _ => return Err(CarError::Header("header is not a map")),
    };
    let mut roots = None;
    let mut version = None;
    for _ in 0..entries {
        match r.text()? {
            b"version" => match r.head()? {
                (0, v) if version.is_none() => version = Some(v),
                _ => return Err(CarError::Header("version is not an unsigned integer")),
            },
            b"roots" if roots.is_none() => {
                let count = match r.head()? {
                    (4, n) => usize::try_from(n).unwrap_or(usize::MAX),
                    _ => return Err(CarError::Header("roots is not an array")),
                };
                if count > MAX_ROOTS {
                    return Err(CarError::Header("too many roots"));
                }
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    if r.head()? != (6, 42) {
                        return Err(CarError::Header("root is not a CID (tag 42)"));
                    }
                    let bytes = match r.head()? {
                        (2, len) => {
                            r.take(usize::try_from(len).map_err(|_| CarError::Header("huge CID"))?)?
                        }
                        _ => return Err(CarError::Header("root CID is not a byte string")),
                    };
                    let (prefix, cid_bytes) = bytes
                        .split_first()
                        .ok_or(CarError::Header("empty root CID"))?;
                    if *prefix != 0 {
                        return Err(CarError::Header("root CID lacks the 0x00 multibase prefix"));
                    }
                    list.push(
                        Cid::try_from(cid_bytes)
                            .map_err(|_| CarError::Header("root is not a valid CID"))?,
                    );
                }
                roots = Some(list);
            }
            _ => return Err(CarError::Header("unexpected header field")),
        }
    }
    if r.pos != cbor.len() {
        return Err(CarError::Header("trailing bytes after the header"));
    }
    match version {
        Some(1) => {}
        Some(v) => return Err(CarError::UnsupportedVersion(v)),
        None => return Err(CarError::Header("missing version")),
    }
    let roots = roots.ok_or(CarError::Header("missing roots"))?;
    if roots.is_empty() {
        return Err(CarError::Header("no roots"));
    }
    Ok(roots)
}

/// Reads a CAR v1, verifying every block against its CID.
pub struct CarReader<R> {
    reader: BufReader<R>,
    roots: Vec<Cid>,
}

impl<R: AsyncRead + Unpin> CarReader<R> {
    /// Reads and checks the header.
    pub async fn new(reader: R) -> Result<Self, CarError> {
        let mut reader = BufReader::new(reader);
        let len = read_varint(&mut reader)
            .await?
            .ok_or(CarError::Truncated("header length"))?;
        if len > MAX_HEADER_SIZE {
            return Err(CarError::HeaderTooLarge(len));
        }
        // Bounded by MAX_HEADER_SIZE just above, so the cast and the allocation are small.
        let mut header = vec![0u8; len as usize];
        read_exact(&mut reader, &mut header, "header").await?;
        let roots = decode_header(&header)?;
        Ok(CarReader { reader, roots })
    }

    /// The roots the header names.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, verified; `None` at the clean end of the archive.
    pub async fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        let Some(len) = read_varint(&mut self.reader).await? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(CarError::Section("empty section"));
        }
        if len > MAX_SECTION_SIZE {
            return Err(CarError::SectionTooLarge(len));
        }
        // Bounded by MAX_SECTION_SIZE just above.
        let mut section = vec![0u8; len as usize];
        read_exact(&mut self.reader, &mut section, "section").await?;
        let mut cursor = std::io::Cursor::new(section.as_slice());
        let cid = Cid::read_bytes(&mut cursor).map_err(|_| CarError::Section("invalid CID"))?;
        let start = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        let data = Bytes::from(section).slice(start.min(len as usize)..);
        block::verify(&cid, &data)?;
        Ok(Some((cid, data)))
    }
}

async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), CarError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(CarError::Truncated(what)),
        Err(e) => Err(CarError::Io(e)),
    }
}

/// An unsigned LEB128 varint (at most 9 bytes, as multiformats allows); `None` on a clean end of input before its
/// first byte.
async fn read_varint<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<u64>, CarError> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let mut byte = [0u8; 1];
        let n = reader.read(&mut byte).await?;
        if n == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(CarError::Truncated("varint"))
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if i > 0 && byte[0] == 0 {
                return Err(CarError::Section("non-minimal varint"));
            }
            return Ok(Some(value));
        }
    }
    Err(CarError::Section("varint longer than 9 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::block::{DAG_PB, RAW};

    async fn write_car(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let mut writer = CarWriter::new(Vec::new(), roots).await.expect("header");
        for (cid, data) in blocks {
            writer.write_block(cid, data).await.expect("block");
        }
        writer.finish().await.expect("finish")
    }

    async fn read_all(bytes: &[u8]) -> Result<(Vec<Cid>, Vec<(Cid, Bytes)>), CarError> {
        let mut reader = CarReader::new(bytes).await?;
        let roots = reader.roots().to_vec();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block().await? {
            blocks.push(block);
        }
        Ok((roots, blocks))
    }

    #[tokio::test]
    async fn a_written_car_reads_back_block_for_block() {
        let a = b"first".to_vec();
        let b = b"second".to_vec();
        let blocks = vec![
            (block::cid_v1(RAW, &a), a.clone()),
            (block::cid_v1(RAW, &b), b.clone()),
        ];
        let root = blocks[0].0;
        let car = write_car(&[root], &blocks).await;
        let (roots, read) = read_all(&car).await.expect("reads");
        assert_eq!(roots, vec![root]);
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].0, blocks[1].0);
        assert_eq!(read[1].1.as_ref(), b.as_slice());
    }

    #[test]
    fn the_header_is_canonical_dag_cbor() {
        // The well-known header of go-car for one root, checked byte by byte: a2 65 "roots" 81 d8 2a 58 25 00 <cid>
        // 67 "version" 01.
        let root = block::cid_v1(DAG_PB, b"x");
        let header = encode_header(&[root]);
        let cid_bytes = root.to_bytes();
        let mut expected = vec![0xa2, 0x65];
        expected.extend_from_slice(b"roots");
        expected.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, cid_bytes.len() as u8 + 1, 0x00]);
        expected.extend_from_slice(&cid_bytes);
        expected.push(0x67);
        expected.extend_from_slice(b"version");
        expected.push(0x01);
        assert_eq!(header[0] as usize, expected.len());
        assert_eq!(&header[1..], expected.as_slice());
    }

    #[tokio::test]
    async fn a_block_that_does_not_hash_to_its_cid_is_refused() {
        let cid = block::cid_v1(RAW, b"honest");
        let car = write_car(&[cid], &[(cid, b"forged".to_vec())]).await;
        let err = read_all(&car).await.expect_err("must fail");
        assert!(
            matches!(err, CarError::Block(BlockError::HashMismatch(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_and_oversized_archives_are_errors() {
        let cid = block::cid_v1(RAW, b"data");
        let car = write_car(&[cid], &[(cid, b"data".to_vec())]).await;
        let header_len = encode_header(&[cid]).len();
        for cut in 1..car.len() {
            let read = read_all(&car[..cut]).await;
            if cut == header_len {
                // A header and no section is a complete (empty) archive.
                assert!(read.is_ok_and(|(_, blocks)| blocks.is_empty()));
            } else {
                assert!(read.is_err(), "cut at {cut}");
            }
        }
        // A header length of 2^40: refused before allocating.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        assert!(matches!(
            read_all(&huge).await,
            Err(CarError::HeaderTooLarge(_))
        ));
        // A section length of 1 GiB after a valid header.
        let mut big = encode_header(&[cid]);
        big.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
        assert!(matches!(
            read_all(&big).await,
            Err(CarError::SectionTooLarge(_))
        ));
    }

    #[test]
    fn headers_other_than_v1_with_roots_are_refused() {
        // CARv2 pragma: {version: 2}
        let mut v2 = vec![0xa1, 0x67];
        v2.extend_from_slice(b"version");
        v2.push(0x02);
        assert!(matches!(
            decode_header(&v2),
            Err(CarError::UnsupportedVersion(2))
        ));
        // No roots.
        let header = encode_header(&[]);
        assert!(decode_header(&header[1..]).is_err());
        // Indefinite-length map, junk, empty input.
        for junk in [&[0xbf][..], &[0xff, 0x00], &[]] {
            assert!(decode_header(junk).is_err());
        }
    }
}
