//! Every status code of the WHIP/WHEP endpoints and session resources (RFC 9725 sections 4.2-4.5, 4.6;
//! draft-ietf-wish-whep), answered with a short reason and without disturbing a live stream.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use zipiq_client::{PublishOptions, WatchOptions, WhepClient, WhipClient};

use crate::common::*;

/// A publish offer as OBS sends it, made by a real webrtc-rs peer so that it can also be completed.
async fn real_offer(video: bool) -> String {
    zipiq_offer_only(true, video).await
}

/// Builds a sendonly (or recvonly) offer with webrtc-rs without sending it.
pub(crate) async fn zipiq_offer_only(send: bool, video: bool) -> String {
    use webrtc::api::APIBuilder;
    use webrtc::api::media_engine::MediaEngine;
    use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
    use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
    use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let api = APIBuilder::new().with_media_engine(media).build();
    let pc = api.new_peer_connection(Default::default()).await.unwrap();
    let direction = if send {
        RTCRtpTransceiverDirection::Sendonly
    } else {
        RTCRtpTransceiverDirection::Recvonly
    };
    let init = || {
        Some(RTCRtpTransceiverInit {
            direction,
            send_encodings: vec![],
        })
    };
    pc.add_transceiver_from_kind(RTPCodecType::Audio, init())
        .await
        .unwrap();
    if video {
        pc.add_transceiver_from_kind(RTPCodecType::Video, init())
            .await
            .unwrap();
    }
    let offer = pc.create_offer(None).await.unwrap();
    let sdp = offer.sdp.clone();
    pc.close().await.unwrap();
    sdp
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: String,
) -> Answer {
    let client = reqwest::Client::new();
    let mut r = client.request(method, url).body(body);
    if let Some(ct) = content_type {
        r = r.header("Content-Type", ct);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let response = r.send().await.expect("request");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

/// DELETEs the session `resource` with the bearer `token`.
async fn delete_session(resource: &str, token: &str) -> Answer {
    send(
        reqwest::Method::DELETE,
        resource,
        None,
        Some(token),
        &[],
        String::new(),
    )
    .await
}

/// POSTs `sdp` as an offer (`application/sdp`) to `url`, with the bearer `token` if any.
async fn post_sdp(url: &str, token: Option<&str>, sdp: String) -> Answer {
    send(
        reqwest::Method::POST,
        url,
        Some("application/sdp"),
        token,
        &[],
        sdp,
    )
    .await
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_endpoint_statuses() {
    let server = start_server(
        "[media]\nice_servers = [{ urls = [\"stun:stun.example.net:3478\"] }, { urls = [\"turn:turn.example.net:3478\"], username = \"u\", credential = \"p\" }]\n\
         [http]\nmax_body_bytes = 20000\n",
    )
    .await;
    let url = server.whip("live");
    let key = server.key.clone();
    let offer = real_offer(true).await;
    use reqwest::Method;

    // 415 with Accept when the body is not SDP.
    let a = send(
        Method::POST,
        &url,
        Some("text/plain"),
        Some(&key),
        &[],
        offer.clone(),
    )
    .await;
    assert_eq!(a.status, 415);
    assert_eq!(header(&a, "accept"), "application/sdp");
    assert!(a.body.contains("application/sdp"));
    // 401 with WWW-Authenticate without, or with a wrong, key.
    let a = post_sdp(&url, None, offer.clone()).await;
    assert_eq!(a.status, 401);
    assert_eq!(header(&a, "www-authenticate"), "Bearer");
    let a = post_sdp(&url, Some("zq_wrong"), offer.clone()).await;
    assert_eq!(a.status, 401);
    let a = post_sdp(&server.whip("nosuch"), Some(&key), offer.clone()).await;
    assert_eq!(a.status, 401, "unknown stream answers like a wrong key");
    // 400 for malformed SDP.
    let a = post_sdp(&url, Some(&key), "v=0\r\nthis is not sdp".into()).await;
    assert_eq!(a.status, 400, "{}", a.body);
    // 422 for no bundle, no rtcp-mux, two video tracks, wrong direction.
    let no_bundle: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=group:BUNDLE"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let a = post_sdp(&url, Some(&key), no_bundle).await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body.contains("BUNDLE"));
    let no_mux: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=rtcp-mux"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let a = post_sdp(&url, Some(&key), no_mux).await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body.contains("rtcp-mux"));
    let recv = zipiq_offer_only(false, true).await;
    let a = post_sdp(&url, Some(&key), recv).await;
    assert_eq!(a.status, 422, "a recvonly offer cannot publish: {}", a.body);
    // 413 for an oversized body.
    let a = post_sdp(&url, Some(&key), "v=0\r\n".repeat(10_000)).await;
    assert_eq!(a.status, 413);
    assert_eq!(
        header(&a, "content-type"),
        "application/problem+json",
        "a 413 is a problem answer like every other refusal: {}",
        a.body
    );
    assert!(a.body.contains("\"status\":413"), "{}", a.body);
    // OPTIONS and GET on the endpoint.
    let a = send(Method::OPTIONS, &url, None, None, &[], String::new()).await;
    assert!(a.status == 204 || a.status == 200, "{}", a.status);
    assert_eq!(header(&a, "accept-post"), "application/sdp");
    let a = send(
        Method::OPTIONS,
        &url,
        None,
        None,
        &[
            ("Origin", "https://example.org"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        String::new(),
    )
    .await;
    assert!(a.status.is_success());
    assert_eq!(header(&a, "access-control-allow-origin"), "*");
    assert_eq!(header(&a, "accept-post"), "application/sdp");
    let a = send(Method::GET, &url, None, None, &[], String::new()).await;
    assert_eq!(a.status, 204);

    // A real publisher: 201, answer recvonly with candidates, Location, ETag, Link headers.
    let publisher = WhipClient::connect(&url, Some(&key), PublishOptions::default())
        .await
        .expect("publisher connects");
    let n = &publisher.negotiated;
    assert!(n.resource_url.starts_with(&format!("{url}/")));
    let etag = n.etag.clone().expect("ETag");
    assert!(
        etag.starts_with('"') && etag.len() >= 34,
        "strong, unguessable ETag {etag}"
    );
    assert!(n.answer.contains("a=recvonly"));
    assert!(
        n.answer.contains("a=candidate:"),
        "every server candidate is in the answer"
    );
    assert!(n.answer.contains("a=ice-lite"));
    assert_eq!(n.links.len(), 2);
    assert!(n.links[0].contains("<stun:stun.example.net:3478>; rel=\"ice-server\""));
    assert!(n.links[1].contains("username=\"u\"; credential=\"p\"; credential-type=\"password\""));
    assert!(n.answer.contains("AES_GCM") || !n.answer.is_empty());

    // A second publisher on a live stream: 409.
    let a = post_sdp(&url, Some(&key), offer.clone()).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(
        header(&a, "retry-after"),
        "5",
        "a publisher reconnecting is told when to try again"
    );
    // An oversized PATCH is a problem answer too.
    let a = send(
        Method::PATCH,
        &n.resource_url,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", &etag)],
        "a=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n".repeat(1000),
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(header(&a, "content-type"), "application/problem+json");

    let resource = n.resource_url.clone();
    let frag = "a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n";
    // PATCH: token, content type, If-Match.
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        None,
        &[("If-Match", &etag)],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 401, "only the creator's token may patch");
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/sdp"),
        Some(&key),
        &[("If-Match", &etag)],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 415);
    assert_eq!(
        header(&a, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 428);
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", "\"stale\"")],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 412);
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", &etag)],
        "a=candidate:broken".into(),
    )
    .await;
    assert_eq!(a.status, 400);
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", &etag)],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 204, "trickle: {}", a.body);
    // ICE restart: new ufrag/pwd with If-Match *, 200 with our new credentials and a new ETag.
    let restart = "a=ice-ufrag:Rst1\r\na=ice-pwd:restartpasswordrestartpw\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", "*")],
        restart.into(),
    )
    .await;
    assert_eq!(a.status, 200, "restart: {}", a.body);
    assert_eq!(
        header(&a, "content-type"),
        "application/trickle-ice-sdpfrag"
    );
    let new_etag = header(&a, "etag").to_owned();
    assert!(
        !new_etag.is_empty() && new_etag != etag,
        "a new ETag after restart"
    );
    assert!(
        a.body.contains("a=ice-ufrag:")
            && a.body.contains("a=ice-pwd:")
            && a.body.contains("a=candidate:")
    );
    let a = send(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        Some(&key),
        &[("If-Match", &etag)],
        frag.into(),
    )
    .await;
    assert_eq!(a.status, 412, "the old ETag is stale after a restart");
    // The session survived the restart.
    assert!(
        server
            .server
            .sfu
            .session(resource.rsplit('/').next().unwrap())
            .is_some()
    );

    // DELETE: token needed, unknown session 404, then 200.
    let a = send(
        Method::DELETE,
        &resource,
        None,
        Some("zq_wrong"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(a.status, 401);
    let a = delete_session(&format!("{url}/00000000000000000000000000000000"), &key).await;
    assert_eq!(a.status, 404);
    let a = delete_session(&resource, &key).await;
    assert_eq!(a.status, 200);
    let a = delete_session(&resource, &key).await;
    assert_eq!(a.status, 404, "a deleted session is gone");
    publisher.drop_connection().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_endpoint_statuses() {
    let server = start_server("[media]\nmax_viewers_per_stream = 1\n").await;
    let url = server.whep("live");
    use reqwest::Method;
    let watch_offer = zipiq_offer_only(false, true).await;

    let a = send(Method::HEAD, &url, None, None, &[], String::new()).await;
    assert_eq!(a.status, 200);
    let a = send(Method::GET, &url, None, None, &[], String::new()).await;
    assert_eq!(a.status, 204);
    let a = send(Method::OPTIONS, &url, None, None, &[], String::new()).await;
    assert_eq!(header(&a, "accept-post"), "application/sdp");
    // Unknown stream 404; nobody publishing 409 with Retry-After.
    let a = post_sdp(&server.whep("nosuch"), None, watch_offer.clone()).await;
    assert_eq!(a.status, 404);
    let a = post_sdp(&url, None, watch_offer.clone()).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(!header(&a, "retry-after").is_empty());
    let a = send(
        Method::POST,
        &url,
        Some("text/plain"),
        None,
        &[],
        watch_offer.clone(),
    )
    .await;
    assert_eq!(a.status, 415);
    // A publishing offer cannot watch.
    let a = post_sdp(&url, None, zipiq_offer_only(true, true).await).await;
    assert_eq!(a.status, 422);

    let publisher = Arc::new(server.publish_live().await);
    let p2 = publisher.clone();
    let pump = tokio::spawn(async move {
        for i in 0u32..2000 {
            let _ = p2
                .send_video(
                    0,
                    &packet(i as u16, i * 3000, true, video_payload(0, i, 30)),
                )
                .await;
            let _ = p2
                .send_audio(&packet(
                    i as u16,
                    i * 960,
                    false,
                    bytes::Bytes::from_static(&[0xfc, 1, 2]),
                ))
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(eventually(Duration::from_secs(5), || server.server.sfu.is_live("live")).await);

    // A viewer that only takes VP9 cannot watch H.264: 422 naming the codec.
    let vp9 = webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability {
        mime_type: "video/VP9".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "profile-id=0".into(),
        rtcp_feedback: vec![],
    };
    let err = WhepClient::connect(
        &url,
        None,
        WatchOptions {
            audio: false,
            video: vec![vp9],
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("refused");
    match err {
        zipiq_client::ClientError::Refused { status, body } => {
            assert_eq!(status, 422);
            assert!(body.contains("H264"), "{body}");
        }
        other => panic!("unexpected {other}"),
    }
    // An unknown layer is refused.
    let a = post_sdp(&format!("{url}?layer=7"), None, watch_offer.clone()).await;
    assert_eq!(a.status, 422);

    let viewer = WhepClient::connect(&url, None, WatchOptions::default())
        .await
        .expect("viewer");
    assert!(viewer.negotiated.answer.contains("a=sendonly"));
    // The per-stream viewer limit: 503 with Retry-After.
    let a = post_sdp(&url, None, watch_offer.clone()).await;
    assert_eq!(a.status, 503);
    assert!(!header(&a, "retry-after").is_empty());
    // A tokenless viewer's URL is its capability: DELETE works without a token.
    let resource = viewer.negotiated.resource_url.clone();
    let a = send(Method::DELETE, &resource, None, None, &[], String::new()).await;
    assert_eq!(a.status, 200);
    let a = send(Method::DELETE, &resource, None, None, &[], String::new()).await;
    assert_eq!(a.status, 404);
    // The publisher never noticed.
    assert!(publisher.is_connected());
    pump.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_answers_503_and_private_streams_need_a_token() {
    let server = start_server("[media]\nmax_sessions = 1\nreserved_publisher_sessions = 0\n").await;
    let publisher = server.publish_live().await;
    let offer = zipiq_offer_only(false, true).await;
    let a = send(
        reqwest::Method::POST,
        &server.whep("live"),
        Some("application/sdp"),
        None,
        &[],
        offer.clone(),
    )
    .await;
    // Not live yet (no media sent) or over the limit: both refuse without a session.
    assert!(a.status == 503 || a.status == 409, "{}", a.status);
    let (_, key2) = server
        .server
        .db
        .create_stream("second")
        .await
        .expect("stream");
    let a = send(
        reqwest::Method::POST,
        &server.whip("second"),
        Some("application/sdp"),
        Some(&key2),
        &[],
        real_offer(true).await,
    )
    .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(header(&a, "retry-after"), "10");

    server
        .server
        .db
        .set_stream_visibility("second", zipiq::db::streams::Visibility::Private)
        .await
        .expect("private");
    let a = send(
        reqwest::Method::POST,
        &server.whep("second"),
        Some("application/sdp"),
        None,
        &[],
        offer,
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(header(&a, "www-authenticate"), "Bearer");
    let _ = publisher.close().await;
    server.stop().await;
}
