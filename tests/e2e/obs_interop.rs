//! OBS Studio interop, from the offers OBS sends (libdatachannel): audio on mid 0 (Opus 111), video on mid 1
//! (H.264 96), a bearer token, exactly 201 with a non-empty body and a Location; OBS 32.1+ simulcast (rids 0..N-1)
//! aborts unless the answer's `a=simulcast` accepts every layer.

use crate::common::*;

const FINGERPRINT: &str = "sha-256 8B:12:9E:39:2B:0C:6B:2E:3E:4B:0A:8E:0B:5C:9C:41:AA:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09";

fn obs_offer(simulcast: bool) -> String {
    let video_extra = if simulcast {
        "a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;2\r\n"
    } else {
        "a=ssrc:3443432535 cname:UD8DwaeRrAtPpNjU\r\na=ssrc:3443432535 msid:obs-video obs-video\r\na=msid:obs-video obs-video\r\n"
    };
    format!(
        "v=0\r\no=rtc 2376378447 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=group:LS 0 1\r\n\
a=msid-semantic:WMS *\r\na=setup:actpass\r\na=ice-ufrag:4Fvx\r\na=ice-pwd:qIFLWVVh0Dz0hRXBxtF2tM\r\n\
a=ice-options:ice2,trickle\r\na=fingerprint:{FINGERPRINT}\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=ssrc:3443432534 cname:UD8DwaeRrAtPpNjU\r\na=ssrc:3443432534 msid:obs-audio obs-audio\r\na=msid:obs-audio obs-audio\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
{video_extra}a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n"
    )
}

async fn post_offer(
    server: &TestServer,
    offer: String,
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = reqwest::Client::new()
        .post(server.whip("live"))
        .header("Content-Type", "application/sdp")
        .bearer_auth(&server.key)
        .body(offer)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

/// The media section of `answer` whose `a=mid` is `mid`.
fn section<'a>(answer: &'a str, mid: &str) -> &'a str {
    let start = answer
        .find(&format!("a=mid:{mid}\r\n"))
        .expect("mid in answer");
    let section_start = answer[..start].rfind("m=").expect("m= line");
    let end = answer[start..]
        .find("\r\nm=")
        .map(|e| start + e)
        .unwrap_or(answer.len());
    &answer[section_start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_offer_gets_the_answer_obs_needs() {
    let server = start_server("").await;
    let (status, headers, answer) = post_offer(&server, obs_offer(false)).await;
    assert_eq!(status, 201, "{answer}");
    assert!(!answer.is_empty());
    assert!(headers.get("location").is_some());
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/sdp")
    );
    let audio = section(&answer, "0");
    let video = section(&answer, "1");
    assert!(audio.starts_with("m=audio"), "{audio}");
    assert!(audio.contains("a=rtpmap:111 opus/48000/2"), "{audio}");
    assert!(audio.contains("a=recvonly"));
    assert!(video.starts_with("m=video"), "{video}");
    assert!(video.contains("a=rtpmap:96 H264/90000"), "{video}");
    assert!(video.contains("a=recvonly"));
    assert!(answer.contains("a=group:BUNDLE 0 1"));
    assert!(answer.contains("a=candidate:"));
    assert!(answer.contains("a=setup:passive"), "passive DTLS: {answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_simulcast_offer_gets_every_layer_accepted() {
    let server = start_server("").await;
    let (status, _, answer) = post_offer(&server, obs_simulcast_offer()).await;
    assert_eq!(status, 201, "{answer}");
    let video = section(&answer, "1");
    assert!(
        video.contains("a=simulcast:recv 0;1;2"),
        "all three layers accepted: {video}"
    );
    for rid in ["0", "1", "2"] {
        assert!(video.contains(&format!("a=rid:{rid} recv")), "{video}");
    }
    server.stop().await;
}

fn obs_simulcast_offer() -> String {
    obs_offer(true)
}
