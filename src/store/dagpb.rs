//! The dag-pb and UnixFS codec, written by hand: the protobuf encoding of dag-pb nodes (`PBNode`, `PBLink`) and of
//! UnixFS `Data`, and the plain types of a directory being built. Pure functions, no I/O, used by the importer
//! (`unixfs.rs`), the HAMT (`hamt.rs`) and the node's reads (`ipfs/`).
//!
//! Decoders take bytes from the network or disk: they check every length and never panic; a malformed node is an
//! error. The encoders produce the canonical dag-pb form (links before data), so CIDs match the JavaScript and Go
//! importers byte for byte.

use bytes::Bytes;
use cid::Cid;

/// Largest dag-pb node this module decodes (bitswap refuses bigger blocks anyway).
pub const MAX_NODE_SIZE: usize = 2 * 1024 * 1024;

/// A UnixFS node type (`Data.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Raw bytes (type 0).
    Raw,
    /// A flat directory (type 1).
    Directory,
    /// A file (type 2).
    File,
    /// Metadata (type 3).
    Metadata,
    /// A symbolic link (type 4).
    Symlink,
    /// A HAMT-sharded directory (type 5).
    HamtShard,
}

impl DataType {
    fn from_code(code: u64) -> Option<DataType> {
        Some(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }

    fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }
}

/// Why bytes are not a valid dag-pb node or UnixFS `Data`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixfsError {
    /// The dag-pb encoding is malformed (says where).
    #[error("dag-pb: {0}")]
    DagPb(&'static str),
    /// The UnixFS `Data` message is malformed (says where).
    #[error("unixfs data: {0}")]
    Data(&'static str),
    /// A directory is malformed or cannot be built (says why).
    #[error("directory: {0}")]
    Directory(String),
}

/// A link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The linked node.
    pub cid: Cid,
    /// `None` when the field is absent (it is present and empty in file nodes).
    pub name: Option<String>,
    /// Cumulative size of the linked DAG (`Tsize`).
    pub tsize: Option<u64>,
}

/// A dag-pb node: links, then opaque data (UnixFS `Data` for UnixFS nodes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// The links, in the node's order.
    pub links: Vec<PbLink>,
    /// The data, if present.
    pub data: Option<Bytes>,
}

/// The UnixFS `Data` message (mode and mtime are skipped: zipIQ does not serve them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData {
    /// The node type.
    pub kind: DataType,
    /// The bytes this node holds itself, if any.
    pub data: Option<Bytes>,
    /// File size in bytes, for files.
    pub filesize: Option<u64>,
    /// Size of each linked child's file data in bytes, in link order, for files.
    pub blocksizes: Vec<u64>,
    /// The hash function (multihash code) of a HAMT shard.
    pub hash_type: Option<u64>,
    /// The fan-out of a HAMT shard.
    pub fanout: Option<u64>,
}

// ---------------------------------------------------------------------------------------------------------------
// protobuf primitives

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3);
    put_varint(out, value);
}

/// A cursor over protobuf bytes that never reads past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Wire types this module accepts.
const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            // The tenth byte may only carry the 64th bit.
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The next length-delimited field's bounds in `buf`.
    fn len_delimited(&mut self) -> Option<(usize, usize)> {
        let len = usize::try_from(self.varint()?).ok()?;
        let start = self.pos;
        let end = start.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some((start, end))
    }

    fn skip(&mut self, wire: u64) -> Option<()> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            I64 => self.advance(8),
            LEN => self.len_delimited().map(|_| ()),
            I32 => self.advance(4),
            _ => None,
        }
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// dag-pb

impl PbNode {
    /// Canonical dag-pb bytes: every link (Hash, Name, Tsize), then Data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.links.len() * 48 + self.data.as_ref().map_or(0, |d| d.len() + 4),
        );
        let mut link_buf = Vec::with_capacity(64);
        for link in &self.links {
            link_buf.clear();
            put_bytes_field(&mut link_buf, 1, &link.cid.to_bytes());
            if let Some(name) = &link.name {
                put_bytes_field(&mut link_buf, 2, name.as_bytes());
            }
            if let Some(tsize) = link.tsize {
                put_varint_field(&mut link_buf, 3, tsize);
            }
            put_bytes_field(&mut out, 2, &link_buf);
        }
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 1, data);
        }
        out
    }

    /// Decodes a dag-pb block strictly: only the fields of the dag-pb spec, links before data, at most one data
    /// field, every link with a hash. `Data` is a zero-copy slice of `block`.
    pub fn decode(block: &Bytes) -> Result<PbNode, UnixfsError> {
        if block.len() > MAX_NODE_SIZE {
            return Err(UnixfsError::DagPb("node larger than 2 MiB"));
        }
        let mut reader = Reader::new(block);
        let mut node = PbNode::default();
        while !reader.done() {
            let key = reader
                .varint()
                .ok_or(UnixfsError::DagPb("truncated field key"))?;
            match (key >> 3, key & 7) {
                (2, LEN) => {
                    if node.data.is_some() {
                        return Err(UnixfsError::DagPb("link after data"));
                    }
                    let (start, end) = reader
                        .len_delimited()
                        .ok_or(UnixfsError::DagPb("truncated link"))?;
                    let link = decode_link(block.get(start..end).unwrap_or_default())?;
                    node.links.push(link);
                }
                (1, LEN) => {
                    if node.data.is_some() {
                        return Err(UnixfsError::DagPb("duplicate data field"));
                    }
                    let (start, end) = reader
                        .len_delimited()
                        .ok_or(UnixfsError::DagPb("truncated data"))?;
                    node.data = Some(block.slice(start..end));
                }
                _ => return Err(UnixfsError::DagPb("unexpected field")),
            }
        }
        Ok(node)
    }
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, UnixfsError> {
    let mut reader = Reader::new(bytes);
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    let mut last_field = 0;
    while !reader.done() {
        let key = reader
            .varint()
            .ok_or(UnixfsError::DagPb("truncated link field key"))?;
        let field = key >> 3;
        if field <= last_field {
            return Err(UnixfsError::DagPb("link fields out of order or repeated"));
        }
        last_field = field;
        match (field, key & 7) {
            (1, LEN) => {
                let (start, end) = reader
                    .len_delimited()
                    .ok_or(UnixfsError::DagPb("truncated link hash"))?;
                let raw = bytes.get(start..end).unwrap_or_default();
                cid = Some(
                    Cid::try_from(raw).map_err(|_| UnixfsError::DagPb("link hash is not a CID"))?,
                );
            }
            (2, LEN) => {
                let (start, end) = reader
                    .len_delimited()
                    .ok_or(UnixfsError::DagPb("truncated link name"))?;
                let raw = bytes.get(start..end).unwrap_or_default();
                name = Some(
                    std::str::from_utf8(raw)
                        .map_err(|_| UnixfsError::DagPb("link name is not UTF-8"))?
                        .to_owned(),
                );
            }
            (3, VARINT) => {
                tsize = Some(
                    reader
                        .varint()
                        .ok_or(UnixfsError::DagPb("truncated link size"))?,
                );
            }
            _ => return Err(UnixfsError::DagPb("unexpected link field")),
        }
    }
    let cid = cid.ok_or(UnixfsError::DagPb("link without hash"))?;
    Ok(PbLink { cid, name, tsize })
}

// ---------------------------------------------------------------------------------------------------------------
// UnixFS Data

impl UnixfsData {
    /// The `Data` of a file node with children of these sizes (no inline data).
    pub fn file(blocksizes: Vec<u64>) -> Self {
        UnixfsData {
            kind: DataType::File,
            data: None,
            filesize: Some(blocksizes.iter().sum()),
            blocksizes,
            hash_type: None,
            fanout: None,
        }
    }

    /// The `Data` of a plain directory (no mode, no mtime).
    pub fn directory() -> Self {
        UnixfsData {
            kind: DataType::Directory,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
        }
    }

    /// Protobuf bytes in field order, blocksizes unpacked (as the JS and Go importers write them).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.blocksizes.len() * 5);
        put_varint_field(&mut out, 1, self.kind.code());
        if let Some(data) = self.data.as_ref().filter(|d| !d.is_empty()) {
            put_bytes_field(&mut out, 2, data);
        }
        if let Some(size) = self.filesize {
            put_varint_field(&mut out, 3, size);
        }
        for size in &self.blocksizes {
            put_varint_field(&mut out, 4, *size);
        }
        if let Some(hash_type) = self.hash_type {
            put_varint_field(&mut out, 5, hash_type);
        }
        if let Some(fanout) = self.fanout {
            put_varint_field(&mut out, 6, fanout);
        }
        out
    }

    /// Decodes UnixFS `Data`; `data` is a zero-copy slice. Unknown fields are skipped (the spec allows new ones),
    /// blocksizes are accepted packed or unpacked.
    pub fn decode(bytes: &Bytes) -> Result<UnixfsData, UnixfsError> {
        let mut reader = Reader::new(bytes);
        let mut kind = None;
        let mut data = None;
        let mut filesize = None;
        let mut blocksizes = Vec::new();
        let mut hash_type = None;
        let mut fanout = None;
        while !reader.done() {
            let key = reader
                .varint()
                .ok_or(UnixfsError::Data("truncated field key"))?;
            let truncated = UnixfsError::Data("truncated field");
            match (key >> 3, key & 7) {
                (1, VARINT) => {
                    let code = reader.varint().ok_or(truncated)?;
                    kind =
                        Some(DataType::from_code(code).ok_or(UnixfsError::Data("unknown type"))?);
                }
                (2, LEN) => {
                    let (start, end) = reader.len_delimited().ok_or(truncated)?;
                    data = Some(bytes.slice(start..end));
                }
                (3, VARINT) => filesize = Some(reader.varint().ok_or(truncated)?),
                (4, VARINT) => {
                    // Every blocksize costs at least one byte of input, so this cannot grow without bound.
                    blocksizes.push(reader.varint().ok_or(truncated)?);
                }
                (4, LEN) => {
                    let (start, end) = reader.len_delimited().ok_or(truncated)?;
                    let mut packed = Reader::new(bytes.get(start..end).unwrap_or_default());
                    while !packed.done() {
                        blocksizes.push(
                            packed
                                .varint()
                                .ok_or(UnixfsError::Data("truncated packed blocksizes"))?,
                        );
                    }
                }
                (5, VARINT) => hash_type = Some(reader.varint().ok_or(truncated)?),
                (6, VARINT) => fanout = Some(reader.varint().ok_or(truncated)?),
                (_, wire) => reader
                    .skip(wire)
                    .ok_or(UnixfsError::Data("malformed unknown field"))?,
            }
        }
        Ok(UnixfsData {
            kind: kind.ok_or(UnixfsError::Data("missing type"))?,
            data,
            filesize,
            blocksizes,
            hash_type,
            fanout,
        })
    }

    /// Bytes of file content this node stands for: its inline data plus its children's.
    pub fn content_size(&self) -> Option<u64> {
        let inline = self.data.as_ref().map_or(0, |d| d.len() as u64);
        self.blocksizes
            .iter()
            .try_fold(inline, |acc, size| acc.checked_add(*size))
    }
}

/// A link of a directory being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryLink {
    /// The entry's name.
    pub name: String,
    /// The entry's content.
    pub cid: Cid,
    /// Cumulative size of the linked DAG.
    pub tsize: u64,
}

/// Checks a directory entry name: non-empty UTF-8 without `/` or NUL, not `.` or `..`.
pub fn check_entry_name(name: &str) -> Result<(), UnixfsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(UnixfsError::Directory(format!(
            "invalid entry name {name:?}"
        )));
    }
    Ok(())
}

/// A directory ready to store: its root, every block (root last) and the root's cumulative size.
#[derive(Debug, Clone)]
pub struct DirectoryDag {
    /// The directory's root node.
    pub root: Cid,
    /// Every block, root last.
    pub blocks: Vec<(Cid, Bytes)>,
    /// Cumulative size of the DAG (what a parent directory records as `Tsize`).
    pub tsize: u64,
}

/// Serialized size of a dag-pb link (used by tests and size estimates).
pub fn link_size(name_len: usize, cid_len: usize, tsize: u64) -> usize {
    let inner = 1
        + varint_len(cid_len as u64)
        + cid_len
        + 1
        + varint_len(name_len as u64)
        + name_len
        + 1
        + varint_len(tsize);
    1 + varint_len(inner as u64) + inner
}
