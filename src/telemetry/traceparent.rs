//! The W3C Trace Context `traceparent` header (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `{version}-{trace-id}-{parent-id}-{trace-flags}` in lowercase hex, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. Parsed from requests (a malformed value is no
//! value: the request starts a trace of its own), written on the requests we make.

use std::fmt;

/// Length of a version-00 value, and of the part every later version starts with.
const LEN: usize = 55;

/// A valid `traceparent`: the caller's trace, the caller's span in it (our span's parent), and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span id; never all zeros.
    pub parent_id: [u8; 8],
    /// Trace flags: bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a header value per the specification: version 00 is exactly 55 characters; a later version (not
    /// `ff`) may go on after a `-`, and its first 55 characters are read as version 00's. Uppercase hex, all-zero
    /// ids, and anything else out of form give None.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let value = value.trim_ascii();
        if value.len() < LEN {
            return None;
        }
        let version = hex_byte(value.get(0..2)?)?;
        match version {
            0xff => return None,
            0 if value.len() != LEN => return None,
            _ if value.len() > LEN && value[LEN] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_into(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the caller sampled (records) this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Written as version 00.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// One lowercase hex digit's value.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Two lowercase hex digits' value.
fn hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
        _ => None,
    }
}

/// Fills `out` from exactly twice as many lowercase hex digits.
fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_prints_back() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(hex::encode(tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(tp.parent_id), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), EXAMPLE);
        let unsampled =
            TraceParent::parse(EXAMPLE.replace("-01", "-00").as_bytes()).expect("valid");
        assert!(!unsampled.sampled());
        // Surrounding blanks are the header's, not the value's.
        assert_eq!(
            TraceParent::parse(format!(" {EXAMPLE}\t").as_bytes()),
            Some(tp)
        );
    }

    #[test]
    fn later_versions_are_read_as_version_00_and_may_go_on() {
        let v1 = EXAMPLE.replacen("00", "01", 1);
        let tp = TraceParent::parse(format!("{v1}-what-comes-later").as_bytes()).expect("valid");
        assert_eq!(tp.to_string(), EXAMPLE);
        assert!(TraceParent::parse(v1.as_bytes()).is_some());
        // ...but only after a dash.
        assert!(TraceParent::parse(format!("{v1}x").as_bytes()).is_none());
    }

    #[test]
    fn malformed_values_are_no_value() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        for bad in [
            "",
            "00",
            zero_trace,
            zero_parent,
            &EXAMPLE.to_uppercase(),
            &EXAMPLE.replacen("00", "ff", 1),
            &format!("{EXAMPLE}-"), // version 00 has nothing after its flags
            &EXAMPLE.replace('-', "_"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
