//! Ogg/Opus for the publisher: reads the Opus packets out of an Ogg file (RFC 3533 pages, RFC 7845 mapping)
//! and tells how many 48 kHz samples each packet holds from its TOC byte (RFC 6716 3.1), so packets are sent at
//! their real pace and stamped with the right RTP timestamps.
//!
//! It reads a file this tool made with ffmpeg, but never panics on a malformed one: bad input is an error.

use super::MediaError;

/// Largest Opus packet accepted (RFC 6716 allows up to 1275 bytes per frame, 120 ms per packet).
const MAX_PACKET: usize = 64 * 1024;

/// The audio packets of an Ogg/Opus file, in order, without the `OpusHead` and `OpusTags` header packets.
pub fn opus_packets(file: &[u8]) -> Result<Vec<Vec<u8>>, MediaError> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut rest = file;
    let mut serial = None;
    while !rest.is_empty() {
        let header = rest
            .get(..27)
            .ok_or_else(|| MediaError::Ogg("truncated page header".into()))?;
        if &header[..4] != b"OggS" {
            return Err(MediaError::Ogg("missing OggS capture pattern".into()));
        }
        if header[4] != 0 {
            return Err(MediaError::Ogg(format!(
                "unknown Ogg version {}",
                header[4]
            )));
        }
        let page_serial = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        if *serial.get_or_insert(page_serial) != page_serial {
            return Err(MediaError::Ogg(
                "more than one logical stream; expected Opus audio only".into(),
            ));
        }
        let segments = usize::from(header[26]);
        let lacing = rest
            .get(27..27 + segments)
            .ok_or_else(|| MediaError::Ogg("truncated segment table".into()))?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_start = 27 + segments;
        let mut body = rest
            .get(body_start..body_start + body_len)
            .ok_or_else(|| MediaError::Ogg("truncated page body".into()))?;
        for &len in lacing {
            let (segment, tail) = body.split_at(usize::from(len));
            body = tail;
            partial.extend_from_slice(segment);
            if partial.len() > MAX_PACKET {
                return Err(MediaError::Ogg("packet larger than 64 KiB".into()));
            }
            if len < 255 {
                let packet = std::mem::take(&mut partial);
                if !(packet.starts_with(b"OpusHead") || packet.starts_with(b"OpusTags")) {
                    packets.push(packet);
                }
            }
        }
        rest = &rest[body_start + body_len..];
    }
    if packets.is_empty() {
        return Err(MediaError::Ogg("no Opus audio packet in the file".into()));
    }
    Ok(packets)
}

/// Samples at 48 kHz in an Opus packet, from its TOC byte and frame count; `None` for a malformed packet.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame duration in units of 2.5 ms (120 samples at 48 kHz).
    let units: u32 = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)], // SILK: 10, 20, 40, 60 ms
        12..=15 => [4, 8][usize::from(config % 2)],        // Hybrid: 10, 20 ms
        _ => [1, 2, 4, 8][usize::from(config % 4)],        // CELT: 2.5, 5, 10, 20 ms
    };
    let frames: u32 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(packet.get(1)? & 0x3f),
    };
    let samples = units * 120 * frames;
    // RFC 6716 3.2.5: at most 120 ms per packet.
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(serial: u32, packets: &[&[u8]]) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255u8);
                n -= 255;
            }
            lacing.push(n as u8);
            body.extend_from_slice(p);
        }
        let mut out = b"OggS".to_vec();
        out.push(0); // version
        out.push(0); // header type
        out.extend_from_slice(&0u64.to_le_bytes()); // granule
        out.extend_from_slice(&serial.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // sequence
        out.extend_from_slice(&0u32.to_le_bytes()); // crc (not checked)
        out.push(lacing.len() as u8);
        out.extend_from_slice(&lacing);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn header_packets_are_skipped_and_long_packets_span_segments() {
        let long = vec![0xfcu8; 600];
        let mut file = page(7, &[b"OpusHead\x01\x02"]);
        file.extend(page(7, &[b"OpusTags...."]));
        file.extend(page(7, &[&[0xfc, 1, 2], &long]));
        let packets = opus_packets(&file).unwrap();
        assert_eq!(packets, vec![vec![0xfc, 1, 2], long]);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(opus_packets(b"NotOgg").is_err());
        let mut file = page(7, &[&[0xfc, 1]]);
        file.truncate(file.len() - 1);
        assert!(opus_packets(&file).is_err());
        let mut two_streams = page(7, &[&[0xfc, 1]]);
        two_streams.extend(page(8, &[&[0xfc, 1]]));
        assert!(opus_packets(&two_streams).is_err());
        assert!(opus_packets(&page(7, &[b"OpusHead"])).is_err());
    }

    #[test]
    fn packet_durations_follow_the_toc_byte() {
        // CELT fullband 20 ms, one frame (config 31, code 0): what ffmpeg's libopus makes with 20 ms frames.
        assert_eq!(opus_packet_samples(&[0xf8, 0]), Some(960));
        // SILK 60 ms (config 3), two frames (code 1).
        assert_eq!(opus_packet_samples(&[(3 << 3) | 1]), Some(5760));
        // Code 3 with 3 frames of 10 ms CELT (config 30).
        assert_eq!(opus_packet_samples(&[(30 << 3) | 3, 3]), Some(1440));
        assert_eq!(opus_packet_samples(&[(30 << 3) | 3, 0]), None);
        assert_eq!(
            opus_packet_samples(&[(3 << 3) | 3, 5]),
            None,
            "300 ms is too long"
        );
        assert_eq!(opus_packet_samples(&[]), None);
    }
}
