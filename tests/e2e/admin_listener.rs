//! The admin listener answers operators' tools only: requests with an `Origin` (browsers: cross-site forms and
//! scripts) and requests naming another `Host` (DNS rebinding) are refused with 403, POST bodies must be JSON (415
//! for a form), and with `admin.token_file` every request needs the token as `Authorization: Bearer`.

use crate::common::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn problem(response: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, kind, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_browsers_foreign_hosts_and_form_posts() {
    let server = start_server("").await;
    let admin = format!("http://{}", server.server.admin_addr);
    let port = server.server.admin_addr.port();
    let http = client();

    // An operator's tool: its own address as Host, no Origin.
    let status = http.get(format!("{admin}/archive")).send().await.unwrap();
    assert_eq!(status.status(), 200);
    let metrics = http
        .get(format!("{admin}/metrics"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    // A cross-site request from a browser (any Origin, even a same-site one).
    for origin in ["https://evil.example", "null", admin.as_str()] {
        let (status, kind, body) = problem(
            http.get(format!("{admin}/archive"))
                .header("origin", origin)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{origin}");
        assert_eq!(kind, "application/problem+json");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("Origin"),
            "{body}"
        );
    }
    // DNS rebinding: a page of rebind.example, whose name now resolves to 127.0.0.1, reads the archive same-origin.
    for host in [
        format!("rebind.example:{port}"),
        "127.0.0.1".to_owned(),
        format!("127.0.0.1:{}", port + 1),
    ] {
        let (status, _, body) = problem(
            http.get(format!("{admin}/archive"))
                .header("host", &host)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{host}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("Host"),
            "{body}"
        );
    }

    // The form a hostile page would post, and a POST without a type: 415.
    for (kind, body) in [
        (Some("application/x-www-form-urlencoded"), "a=b"),
        (Some("text/plain"), "{}"),
        (Some("multipart/form-data; boundary=x"), "--x--"),
        (None, ""),
    ] {
        let mut request = http.post(format!("{admin}/archive/retry-dead")).body(body);
        if let Some(kind) = kind {
            request = request.header("content-type", kind);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let (status, problem_type, _) = problem(response).await;
        assert_eq!(status, 415, "{kind:?}");
        assert_eq!(problem_type, "application/problem+json");
    }
    let not_json = http
        .post(format!("{admin}/archive/retry-dead"))
        .header("content-type", "application/json")
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    for body in ["", "{}"] {
        let ok = http
            .post(format!("{admin}/archive/retry-dead"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{body:?}");
        let answer: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(answer["retried"], 0);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_file_makes_the_token_required() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    let token = "s3cret-admin-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let server = start_server(&format!(
        "[admin]\ntoken_file = \"{}\"\nallowed_hosts = [\"prometheus-target.internal\"]\n",
        token_file.display()
    ))
    .await;
    let admin = format!("http://{}", server.server.admin_addr);
    let port = server.server.admin_addr.port();
    let http = client();

    let basic = format!("Basic {token}");
    let longer = format!("Bearer {token}x");
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(basic.as_str()),
        Some(longer.as_str()),
    ] {
        let mut request = http.get(format!("{admin}/metrics"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let (status, kind, _) = problem(response).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert_eq!(kind, "application/problem+json");
    }
    let ok = http
        .get(format!("{admin}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A name the operator allowed (Prometheus scraping by name).
    let named = http
        .get(format!("{admin}/archive"))
        .header("host", format!("prometheus-target.internal:{port}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    // The token does not open the door to browsers.
    let browser = http
        .get(format!("{admin}/archive"))
        .header("origin", "https://evil.example")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 403);
    let post = http
        .post(format!("{admin}/archive/retry-dead"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_admin_token_file_that_is_missing_or_short_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("missing", None),
        ("short", Some("abc\n")),
        ("empty", Some("\n")),
    ] {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let base = dir.path().join(format!("server-{name}"));
        std::fs::create_dir(&base).unwrap();
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
             [media]\nudp_listen = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}\"\n\
             [auth]\njwt_key_file = \"{}\"\n\
             [ipfs]\nrepo_dir = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nannounce = false\n\
             [archive]\nmode = \"off\"\nwallets_dir = \"{}\"\n[streams]\ndefault_stream = \"\"\n",
            path.display(),
            base.join("z.db").display(),
            base.join("jwt").display(),
            base.join("ipfs").display(),
            base.join("wallets").display(),
        );
        let config =
            zipiq::config::Config::from_layers(Some(("t.toml".into(), text)), Vec::new()).unwrap();
        let err = match zipiq::Server::start(config).await {
            Ok((server, _)) => {
                server.shutdown().await;
                panic!("{name}: the server started without its admin token");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("admin token"), "{name}: {err}");
    }
}
