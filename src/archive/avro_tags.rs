//! The tags of an ANS-104 data item in their signed form: Avro binary encoding of an array of
//! `{name: string, value: string}` records, written as arbundles writes it (one block with a positive item count,
//! then the zero count that ends the array; zigzag varint longs; no bytes at all for an empty list).
//!
//! The parser takes bytes from the network: it is bounded by ANS-104's limits (at most 128 tags, names of
//! 1..=1024 bytes, values of 1..=3072 bytes, at most 4096 encoded bytes as arbundles checks), accepts Avro's other
//! block form (negative count followed by the block's byte size) and several blocks, rejects anything left over,
//! and never panics.

use std::fmt;

/// Most tags a data item may carry (ANS-104 §2.1).
pub const MAX_TAGS: usize = 128;
/// Longest tag name in bytes (ANS-104 §2.1).
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest tag value in bytes (ANS-104 §2.1).
pub const MAX_VALUE_BYTES: usize = 3072;
/// Most bytes of encoded tags in one data item (arbundles `MAX_TAG_BYTES`; bundlers refuse more).
pub const MAX_ENCODED_BYTES: usize = 4096;
/// A zigzag varint of a 64-bit long takes at most this many bytes.
const MAX_VARINT_BYTES: usize = 10;

/// One tag: a name and a value, both non-empty UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    /// The tag's name.
    pub name: String,
    /// The tag's value.
    pub value: String,
}

impl Tag {
    /// A tag (checked when encoded).
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.name, self.value)
    }
}

/// Why tags cannot be encoded, or why encoded tags are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// More tags than ANS-104 allows.
    #[error("{count} tags, at most {MAX_TAGS} allowed")]
    TooManyTags {
        /// How many.
        count: usize,
    },
    /// A tag's name is longer than allowed.
    #[error("tag {index}: name of {len} bytes, at most {MAX_NAME_BYTES} allowed")]
    NameTooLong {
        /// The tag's position.
        index: usize,
        /// The name's length in bytes.
        len: usize,
    },
    /// A tag's value is longer than allowed.
    #[error("tag {index}: value of {len} bytes, at most {MAX_VALUE_BYTES} allowed")]
    ValueTooLong {
        /// The tag's position.
        index: usize,
        /// The value's length in bytes.
        len: usize,
    },
    /// A tag's name is empty.
    #[error("tag {index}: empty name")]
    EmptyName {
        /// The tag's position.
        index: usize,
    },
    /// A tag's value is empty.
    #[error("tag {index}: empty value")]
    EmptyValue {
        /// The tag's position.
        index: usize,
    },
    /// A tag's name or value is not UTF-8.
    #[error("tag {index}: name or value is not UTF-8")]
    NotUtf8 {
        /// The tag's position.
        index: usize,
    },
    /// The encoded tags are larger than allowed.
    #[error("{len} bytes of encoded tags, at most {MAX_ENCODED_BYTES} allowed")]
    TooManyBytes {
        /// Their size in bytes.
        len: usize,
    },
    /// The encoded tags end early.
    #[error("encoded tags end early")]
    Truncated,
    /// A varint is too long or overflows 64 bits.
    #[error("a varint is longer than {MAX_VARINT_BYTES} bytes or overflows 64 bits")]
    BadVarint,
    /// A length is negative.
    #[error("negative length {0}")]
    NegativeLength(i64),
    /// An Avro block's byte size does not match its contents.
    #[error("a block announces {announced} bytes but holds {actual}")]
    BlockSizeMismatch {
        /// The byte size the block announces.
        announced: i64,
        /// The bytes it holds.
        actual: usize,
    },
    /// Bytes follow the end of the tag array.
    #[error("{0} bytes after the end of the tag array")]
    TrailingBytes(usize),
}

/// Checks `tags` against ANS-104's limits.
pub fn validate(tags: &[Tag]) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooManyTags { count: tags.len() });
    }
    for (index, tag) in tags.iter().enumerate() {
        check_tag(index, tag.name.as_bytes(), tag.value.as_bytes())?;
    }
    Ok(())
}

fn check_tag(index: usize, name: &[u8], value: &[u8]) -> Result<(), TagError> {
    if name.is_empty() {
        return Err(TagError::EmptyName { index });
    }
    if value.is_empty() {
        return Err(TagError::EmptyValue { index });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(TagError::NameTooLong {
            index,
            len: name.len(),
        });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(TagError::ValueTooLong {
            index,
            len: value.len(),
        });
    }
    Ok(())
}

/// Encodes `tags` as arbundles does (no bytes for no tags), after checking ANS-104's limits.
pub fn encode(tags: &[Tag]) -> Result<Vec<u8>, TagError> {
    validate(tags)?;
    let mut out = Vec::new();
    if tags.is_empty() {
        return Ok(out);
    }
    write_long(&mut out, tags.len() as i64);
    for tag in tags {
        write_bytes(&mut out, tag.name.as_bytes());
        write_bytes(&mut out, tag.value.as_bytes());
    }
    write_long(&mut out, 0);
    if out.len() > MAX_ENCODED_BYTES {
        return Err(TagError::TooManyBytes { len: out.len() });
    }
    Ok(out)
}

fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Decodes encoded tags, enforcing every limit. No bytes decode to no tags.
pub fn decode(bytes: &[u8]) -> Result<Vec<Tag>, TagError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(TagError::TooManyBytes { len: bytes.len() });
    }
    let mut reader = Reader { bytes, pos: 0 };
    let mut tags = Vec::new();
    if bytes.is_empty() {
        return Ok(tags);
    }
    loop {
        let count = reader.long()?;
        if count == 0 {
            break;
        }
        let (count, block_end) = if count < 0 {
            let size = reader.long()?;
            let Some(end) = usize::try_from(size)
                .ok()
                .and_then(|size| reader.pos.checked_add(size))
            else {
                return Err(TagError::NegativeLength(size));
            };
            (count.unsigned_abs(), Some((size, end)))
        } else {
            (count.unsigned_abs(), None)
        };
        if count > (MAX_TAGS - tags.len()) as u64 {
            return Err(TagError::TooManyTags {
                count: usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .saturating_add(tags.len()),
            });
        }
        let block_start = reader.pos;
        for _ in 0..count {
            let index = tags.len();
            let name = reader.bytes()?;
            let value = reader.bytes()?;
            check_tag(index, name, value)?;
            let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value))
            else {
                return Err(TagError::NotUtf8 { index });
            };
            tags.push(Tag::new(name, value));
        }
        if let Some((announced, end)) = block_end
            && end != reader.pos
        {
            return Err(TagError::BlockSizeMismatch {
                announced,
                actual: reader.pos - block_start,
            });
        }
    }
    let rest = bytes.len() - reader.pos;
    if rest != 0 {
        return Err(TagError::TrailingBytes(rest));
    }
    Ok(tags)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, TagError> {
        let mut z: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let byte = *self.bytes.get(self.pos).ok_or(TagError::Truncated)?;
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the 64th bit.
            if i == MAX_VARINT_BYTES - 1 && bits > 1 {
                return Err(TagError::BadVarint);
            }
            z |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(TagError::BadVarint)
    }

    fn bytes(&mut self) -> Result<&'a [u8], TagError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| TagError::NegativeLength(len))?;
        let end = self.pos.checked_add(len).ok_or(TagError::Truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(TagError::Truncated)?;
        self.pos = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Tag> {
        vec![
            Tag::new("App-Name", "zipIQ"),
            Tag::new("Content-Type", "video/mp4"),
            Tag::new("Chunk-Index", "00000042"),
        ]
    }

    #[test]
    fn encodes_one_positive_block_then_the_end_marker() {
        let bytes = encode(&[Tag::new("a", "bc")]).unwrap();
        // count 1 -> zigzag 2; len 1 -> 2; "a"; len 2 -> 4; "bc"; end 0.
        assert_eq!(bytes, [2, 2, b'a', 4, b'b', b'c', 0]);
    }

    #[test]
    fn no_tags_encode_to_no_bytes_and_back() {
        assert!(encode(&[]).unwrap().is_empty());
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn round_trips() {
        let tags = sample();
        assert_eq!(decode(&encode(&tags).unwrap()).unwrap(), tags);
    }

    #[test]
    fn long_lengths_use_multi_byte_varints() {
        let tags = vec![Tag::new("n".repeat(1024), "v".repeat(3000))];
        let bytes = encode(&tags).unwrap();
        // zigzag(1024) = 2048 = 0x80 0x10
        assert_eq!(&bytes[1..3], &[0x80, 0x10]);
        assert_eq!(decode(&bytes).unwrap(), tags);
    }

    #[test]
    fn accepts_the_negative_count_block_form_and_several_blocks() {
        // Block 1: count -1 (zigzag 1), then its size, 4 bytes (zigzag 8), then tag "a"="b".
        let mut bytes = vec![1, 8, 2, b'a', 2, b'b'];
        // Block 2: count 1, tag "c"="d"; end.
        bytes.extend_from_slice(&[2, 2, b'c', 2, b'd', 0]);
        assert_eq!(
            decode(&bytes).unwrap(),
            vec![Tag::new("a", "b"), Tag::new("c", "d")]
        );
    }

    #[test]
    fn rejects_a_block_whose_size_is_wrong() {
        let bytes = [1, 6, 2, b'a', 2, b'b', 0];
        assert!(matches!(
            decode(&bytes),
            Err(TagError::BlockSizeMismatch { .. })
        ));
    }

    #[test]
    fn rejects_limits_when_encoding() {
        let too_many: Vec<Tag> = (0..129).map(|i| Tag::new(format!("n{i}"), "v")).collect();
        assert_eq!(encode(&too_many), Err(TagError::TooManyTags { count: 129 }));
        assert!(matches!(
            encode(&[Tag::new("n".repeat(1025), "v")]),
            Err(TagError::NameTooLong {
                index: 0,
                len: 1025
            })
        ));
        assert!(matches!(
            encode(&[Tag::new("n", "v".repeat(3073))]),
            Err(TagError::ValueTooLong {
                index: 0,
                len: 3073
            })
        ));
        assert!(matches!(
            encode(&[Tag::new("", "v")]),
            Err(TagError::EmptyName { index: 0 })
        ));
        assert!(matches!(
            encode(&[Tag::new("n", "")]),
            Err(TagError::EmptyValue { index: 0 })
        ));
        let two_big = vec![
            Tag::new("a", "v".repeat(3000)),
            Tag::new("b", "v".repeat(3000)),
        ];
        assert!(matches!(
            encode(&two_big),
            Err(TagError::TooManyBytes { .. })
        ));
    }

    #[test]
    fn rejects_limits_when_decoding() {
        // 129 tags claimed in one block.
        let mut bytes = Vec::new();
        write_long(&mut bytes, 129);
        assert!(matches!(decode(&bytes), Err(TagError::TooManyTags { .. })));
        // Empty name.
        assert_eq!(
            decode(&[2, 0, 2, b'v', 0]),
            Err(TagError::EmptyName { index: 0 })
        );
        // Name of 1025 bytes.
        let mut bytes = Vec::new();
        write_long(&mut bytes, 1);
        write_bytes(&mut bytes, &[b'n'; 1025]);
        write_bytes(&mut bytes, b"v");
        write_long(&mut bytes, 0);
        assert!(matches!(
            decode(&bytes),
            Err(TagError::NameTooLong { len: 1025, .. })
        ));
        // Too many bytes overall.
        assert!(matches!(
            decode(&[0; 4097]),
            Err(TagError::TooManyBytes { len: 4097 })
        ));
        // Not UTF-8.
        assert_eq!(
            decode(&[2, 2, 0xff, 2, b'v', 0]),
            Err(TagError::NotUtf8 { index: 0 })
        );
    }

    #[test]
    fn rejects_negative_lengths_bad_varints_and_trailing_bytes() {
        // name length -1 (zigzag 1)
        assert_eq!(decode(&[2, 1, 0]), Err(TagError::NegativeLength(-1)));
        assert_eq!(decode(&[0xff; 11]), Err(TagError::BadVarint));
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(TagError::TrailingBytes(1)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample()).unwrap();
        for len in 1..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn zigzag_matches_avro_for_edge_values() {
        for (n, expected) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, n);
            assert_eq!(out, expected, "{n}");
            let mut reader = Reader {
                bytes: &out,
                pos: 0,
            };
            assert_eq!(reader.long().unwrap(), n);
        }
    }
}
