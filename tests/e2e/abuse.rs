//! What outside attack broke (issue "Hardening I"), each bounded in count and time on loopback: trickle-ICE floods
//! stop at `media.max_remote_candidates` and `rate_limits.patch_per_session`, an offer full of candidates is
//! refused, made-up HTTP methods share one metric label, strangers cannot spend a stream owner's WHIP budget,
//! viewers leave room for publishers and each address has a bounded number of sessions still connecting.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use zipiq_client::{PublishOptions, WhipClient};

use crate::common::*;
use crate::fanout::live_publisher;
use crate::whip_whep_status::zipiq_offer_only;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

fn candidates(first: usize, n: usize) -> String {
    let mut frag = String::from("a=mid:0\r\n");
    for i in first..first + n {
        frag.push_str(&format!(
            "a=candidate:{i} 1 udp 2130706431 127.0.0.{} {} typ host\r\n",
            1 + i % 4,
            10_000 + i
        ));
    }
    frag
}

async fn patch(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    etag: &str,
    body: String,
) -> reqwest::Response {
    client
        .patch(url)
        .bearer_auth(token)
        .header("Content-Type", SDPFRAG)
        .header("If-Match", etag)
        .body(body)
        .send()
        .await
        .expect("PATCH")
}

async fn publisher(server: &TestServer) -> WhipClient {
    WhipClient::connect(
        &server.whip("live"),
        Some(&server.key),
        PublishOptions::default(),
    )
    .await
    .expect("publisher connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_flood_stops_at_the_candidate_cap() {
    // The client's offer carries a few host candidates of its own: they count too, so the cap leaves room for
    // them and the 20 trickled below.
    let server = start_server("[media]\nmax_remote_candidates = 40\n").await;
    let p = publisher(&server).await;
    let url = p.negotiated.resource_url.clone();
    let etag = p.negotiated.etag.clone().expect("ETag");
    let client = reqwest::Client::new();
    // Within the cap: taken.
    for round in 0..2 {
        let r = patch(
            &client,
            &url,
            &server.key,
            &etag,
            candidates(round * 10, 10),
        )
        .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "round {round}");
    }
    // Past it: refused with a reason, however it is split.
    let mut refused = 0;
    for round in 2..27 {
        let r = patch(
            &client,
            &url,
            &server.key,
            &etag,
            candidates(round * 64, 64),
        )
        .await;
        if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
            let body = r.text().await.unwrap_or_default();
            assert!(body.contains("candidates"), "{body}");
            refused += 1;
        } else {
            assert_eq!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit or cap"
            );
        }
    }
    assert_eq!(refused, 25, "every PATCH past the cap is refused");
    let r = patch(&client, &url, &server.key, &etag, candidates(9000, 21)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.is_connected(), "the session itself goes on");
    p.close().await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_and_trickled_candidates_share_the_cap() {
    let server = start_server("[media]\nmax_remote_candidates = 20\n").await;
    let offer = zipiq_offer_only(true, true).await;
    let mut with_candidates = String::new();
    for line in offer.split_inclusive('\n') {
        with_candidates.push_str(line);
        if line.starts_with("a=mid:0") {
            for i in 0..15 {
                with_candidates.push_str(&format!(
                    "a=candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host\r\n",
                    20_000 + i
                ));
            }
        }
    }
    let offered = with_candidates
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .count();
    assert!((15..20).contains(&offered), "{offered} candidates offered");
    let client = reqwest::Client::new();
    let r = client
        .post(server.whip("live"))
        .bearer_auth(&server.key)
        .header("Content-Type", "application/sdp")
        .body(with_candidates)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let url = reqwest::Url::parse(&server.whip("live"))
        .and_then(|base| base.join(&location))
        .expect("session URL")
        .to_string();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag")
        .to_owned();
    // What the offer left of the cap is taken by trickle; one more is refused.
    let r = patch(
        &client,
        &url,
        &server.key,
        &etag,
        candidates(0, 20 - offered),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = patch(&client, &url, &server.key, &etag, candidates(100, 1)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let _ = client.delete(&url).bearer_auth(&server.key).send().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_count_per_session() {
    let server = start_server(
        "[media]\nmax_remote_candidates = 1000\n[rate_limits]\npatch_per_session = { requests = 3, per_seconds = 60 }\n",
    )
    .await;
    let p = publisher(&server).await;
    let url = p.negotiated.resource_url.clone();
    let etag = p.negotiated.etag.clone().expect("ETag");
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = patch(&client, &url, &server.key, &etag, candidates(i, 1)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let r = patch(&client, &url, &server.key, &etag, candidates(3, 1)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    p.close().await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_full_of_candidates_is_refused() {
    let server = start_server("[media]\nmax_remote_candidates = 20\n").await;
    let offer = zipiq_offer_only(true, true).await;
    let mut flooded = String::new();
    for line in offer.split_inclusive('\n') {
        flooded.push_str(line);
        if line.starts_with("a=mid:") {
            for i in 0..30 {
                flooded.push_str(&format!(
                    "a=candidate:{i} 1 udp 2130706431 host-{i}.local {} typ host\r\n",
                    20_000 + i
                ));
            }
        }
    }
    let r = reqwest::Client::new()
        .post(server.whip("live"))
        .bearer_auth(&server.key)
        .header("Content-Type", "application/sdp")
        .body(flooded)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap_or_default().contains("candidates"));
    assert_eq!(server.server.sfu.counts().publishers, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_share_one_metric_label() {
    let server = start_server("").await;
    let client = reqwest::Client::new();
    for i in 0..200 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).expect("method");
        let _ = client
            .request(method, format!("{}/healthz", server.base))
            .send()
            .await
            .expect("request");
    }
    let metrics = client
        .get(format!("http://{}/metrics", server.server.admin_addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(!metrics.contains("MADEUP"), "client input is not a label");
    assert!(metrics.contains("method=\"other\""), "counted as other");
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("zipiq_http_requests_total"))
        .count();
    assert!(series < 20, "{series} series");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_spend_the_owners_whip_budget() {
    let server = start_server(
        "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [rate_limits]\nwhip_per_ip = { requests = 5, per_seconds = 60 }\nwhip_per_account = { requests = 5, per_seconds = 60 }\n",
    )
    .await;
    let client = reqwest::Client::new();
    let offer = zipiq_offer_only(true, true).await;
    // Three addresses, each to its own limit: wrong keys, and PATCH/DELETE of made-up sessions.
    for a in 1..=3 {
        let from = format!("192.0.2.{a}");
        for i in 0..6 {
            let r = match i % 3 {
                0 => client
                    .post(server.whip("live"))
                    .bearer_auth("zq_wrong")
                    .header("Content-Type", "application/sdp")
                    .body(offer.clone()),
                1 => client
                    .patch(format!("{}/{:032x}", server.whip("live"), i))
                    .bearer_auth("zq_wrong")
                    .header("Content-Type", SDPFRAG)
                    .header("If-Match", "*")
                    .body(candidates(0, 1)),
                _ => client
                    .delete(format!("{}/{:032x}", server.whip("live"), i))
                    .bearer_auth("zq_wrong"),
            }
            .header("X-Forwarded-For", &from)
            .send()
            .await
            .expect("request");
            assert!(
                [401, 404, 429].contains(&r.status().as_u16()),
                "{}",
                r.status()
            );
        }
    }
    // The owner (from another address) still publishes and can end its own session.
    let p = publisher(&server).await;
    let r = client
        .delete(&p.negotiated.resource_url)
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_leave_the_reserve_and_connecting_sessions_are_capped_per_address() {
    let server = start_server(
        "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [media]\nmax_sessions = 5\nreserved_publisher_sessions = 1\nmax_pending_sessions_per_ip = 2\n",
    )
    .await;
    let live = live_publisher(&server).await;
    let client = reqwest::Client::new();
    let watch = |from: &'static str, offer: String| {
        client
            .post(server.whep("live"))
            .header("Content-Type", "application/sdp")
            .header("X-Forwarded-For", from)
            .body(offer)
            .send()
    };
    // Offers that never connect: two per address pass, the third waits.
    let mut locations = Vec::new();
    for _ in 0..2 {
        let r = watch("192.0.2.1", zipiq_offer_only(false, true).await)
            .await
            .expect("WHEP");
        assert_eq!(r.status(), StatusCode::CREATED);
        locations.push(
            r.headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("Location")
                .to_owned(),
        );
    }
    let r = watch("192.0.2.1", zipiq_offer_only(false, true).await)
        .await
        .expect("WHEP");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    // Another address has its own count; viewers stop at max_sessions - reserved = 4 sessions open.
    let r = watch("192.0.2.2", zipiq_offer_only(false, true).await)
        .await
        .expect("WHEP");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = watch("192.0.2.3", zipiq_offer_only(false, true).await)
        .await
        .expect("WHEP");
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last session is kept for publishers"
    );
    // A publisher of another stream still gets in.
    let (_, second_key) = server
        .server
        .db
        .create_stream("second")
        .await
        .expect("stream");
    let second = WhipClient::connect(
        &server.whip("second"),
        Some(&second_key),
        PublishOptions::default(),
    )
    .await
    .expect("a publisher gets the reserved session");
    // Ending a connecting session gives its address's slot back.
    let r = client
        .delete(format!("{}{}", server.base, locations[0]))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::OK);
    second.close().await.expect("close");
    let r = watch("192.0.2.1", zipiq_offer_only(false, true).await)
        .await
        .expect("WHEP");
    assert_eq!(r.status(), StatusCode::CREATED);
    live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = live.pump.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_gives_pending_slots_back() {
    let server =
        start_server("[media]\nmax_pending_sessions_per_ip = 1\nconnect_timeout_ms = 800\n").await;
    let live = live_publisher(&server).await;
    let client = reqwest::Client::new();
    let post = || async {
        client
            .post(server.whep("live"))
            .header("Content-Type", "application/sdp")
            .body(zipiq_offer_only(false, true).await)
            .send()
            .await
            .expect("WHEP")
            .status()
    };
    assert_eq!(post().await, StatusCode::CREATED);
    assert_eq!(post().await, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post().await, StatusCode::CREATED);
    live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = live.pump.await;
    server.stop().await;
}
