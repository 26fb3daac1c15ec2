//! Ranged file reads: a byte range of a resolved UnixFS file, streamed leaf by leaf as zero-copy slices, reading
//! only the blocks that overlap the range.

use std::ops::Range;

use bytes::Bytes;
use cid::Cid;
use futures::stream::{self, BoxStream, StreamExt};

use super::IpfsNode;
use super::blocks::{BlockSource, EntryKind, MAX_DEPTH, decode_pb, decode_unixfs, file_size};
use super::resolve::Resolved;
use crate::store::block::{DAG_PB, RAW};
use crate::store::dagpb::DataType;
use crate::store::{Result, StoreError};

/// A part of a file still to read: the node `cid` holds `len` bytes starting at file offset `offset`.
struct Pending {
    cid: Cid,
    offset: u64,
    len: u64,
    depth: usize,
    block: Option<Bytes>,
}

struct FileRead {
    source: BlockSource,
    range: Range<u64>,
    stack: Vec<Pending>,
}

impl FileRead {
    /// The next non-empty slice of the range, in file order.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        while let Some(part) = self.stack.pop() {
            let data = match part.block {
                Some(data) => data,
                None => self.source.get(&part.cid).await?,
            };
            let cid = part.cid;
            let (inline, children) = match cid.codec() {
                RAW => (data, None),
                DAG_PB => {
                    let node = decode_pb(&cid, &data)?;
                    let unixfs = decode_unixfs(&cid, &node)?;
                    if !matches!(unixfs.kind, DataType::File | DataType::Raw) {
                        return Err(StoreError::Malformed {
                            cid,
                            reason: "file DAG contains a non-file node".into(),
                        });
                    }
                    file_size(&cid, &node, &unixfs)?;
                    let inline = unixfs.data.clone().unwrap_or_default();
                    (inline, Some((node, unixfs)))
                }
                codec => {
                    return Err(StoreError::Unsupported(format!(
                        "file leaf with codec 0x{codec:x}"
                    )));
                }
            };
            let total = inline.len() as u64
                + children
                    .as_ref()
                    .map_or(0, |(_, u)| u.blocksizes.iter().sum::<u64>());
            if total != part.len {
                return Err(StoreError::Malformed {
                    cid,
                    reason: format!("holds {total} bytes where its parent says {}", part.len),
                });
            }
            if let Some((node, unixfs)) = children {
                if part.depth >= MAX_DEPTH {
                    return Err(StoreError::Malformed {
                        cid,
                        reason: format!("file DAG deeper than {MAX_DEPTH}"),
                    });
                }
                let mut start = part.offset + inline.len() as u64;
                let mut overlapping = Vec::new();
                for (link, size) in node.links.iter().zip(unixfs.blocksizes.iter()) {
                    let end = start + size;
                    if end > self.range.start && start < self.range.end {
                        overlapping.push(Pending {
                            cid: link.cid,
                            offset: start,
                            len: *size,
                            depth: part.depth + 1,
                            block: None,
                        });
                    }
                    start = end;
                }
                self.stack.extend(overlapping.into_iter().rev());
            }
            let start = part.offset;
            let end = start + inline.len() as u64;
            let from = self.range.start.max(start);
            let to = self.range.end.min(end);
            if from < to {
                // Both bounds lie within `inline` (from >= start, to <= end), so the slice cannot panic.
                return Ok(Some(
                    inline.slice((from - start) as usize..(to - start) as usize),
                ));
            }
        }
        Ok(None)
    }
}

impl IpfsNode {
    /// The bytes `range` (end exclusive, clamped to the file) of a resolved file, streamed leaf by leaf as
    /// zero-copy slices of the blocks. Only the blocks overlapping the range are read or fetched.
    pub fn read_file(
        &self,
        file: &Resolved,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes>> {
        let EntryKind::File { size } = file.kind else {
            let cid = file.cid;
            return stream::once(async move {
                Err(StoreError::Unsupported(format!("{cid} is not a file")))
            })
            .boxed();
        };
        let range = range.start.min(size)..range.end.min(size);
        if range.is_empty() {
            return stream::empty().boxed();
        }
        let state = FileRead {
            source: self.source.clone(),
            range,
            stack: vec![Pending {
                cid: file.cid,
                offset: 0,
                len: size,
                depth: 0,
                block: Some(file.block.clone()),
            }],
        };
        stream::try_unfold(state, |mut state| async move {
            let next = state.next_chunk().await?;
            Ok(next.map(|chunk| (chunk, state)))
        })
        .boxed()
    }
}
