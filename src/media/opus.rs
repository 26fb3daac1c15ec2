//! Opus over RTP (RFC 7587): one Opus packet per RTP packet. This reads the packet's duration from its TOC byte
//! (RFC 6716 3.1), so the last packet of a segment gets its real length. Panic free on any input.

/// Samples at 48 kHz in one Opus packet, from its TOC byte (and frame count byte for code 3). None if malformed.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in 48 kHz samples by configuration (SILK 0-11, hybrid 12-15, CELT 16-31).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    // RFC 6716: at most 120 ms per packet.
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_packet_sizes() {
        // CELT FB 20 ms, one frame (config 31, code 0): what browsers and OBS send.
        assert_eq!(packet_samples(&[0xf8, 0xff]), Some(960));
        // SILK WB 20 ms (config 9), two frames (code 1).
        assert_eq!(packet_samples(&[(9 << 3) | 1]), Some(1920));
        // CELT 10 ms, code 3 with 3 frames.
        assert_eq!(packet_samples(&[(30 << 3) | 3, 3]), Some(1440));
        // Hybrid 10 ms.
        assert_eq!(packet_samples(&[12 << 3]), Some(480));
    }

    #[test]
    fn malformed_packets() {
        assert_eq!(packet_samples(&[]), None);
        assert_eq!(packet_samples(&[0x03]), None, "code 3 without a count byte");
        assert_eq!(packet_samples(&[0x03, 0]), None, "zero frames");
        assert_eq!(packet_samples(&[(3 << 3) | 3, 48]), None, "over 120 ms");
        for b in 0..=255u8 {
            let _ = packet_samples(&[b]);
            let _ = packet_samples(&[b, b]);
        }
    }
}
