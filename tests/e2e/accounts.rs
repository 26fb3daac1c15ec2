//! Accounts end to end over HTTP, on SQLite and on PostgreSQL, with real mail through a local SMTP sink whose
//! links the tests follow: sign up, verify, login, refresh with rotation, reuse detection, reset, password change,
//! logout; brute force meets 429; admin endpoints and the audit log; JWT key rotation; browser safety headers.

use reqwest::Method;
use serde_json::json;

use crate::account_env::{ENGINES, Env, link_token};

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_verify_login_refresh_reuse_reset_and_change_password_by_mail() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let e = engine;

        // Sign up; the mail's link opens the verification page.
        let a = env
            .post(
                "/api/v1/auth/signup",
                json!({"email": "Ann@Example.org", "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(a.status, 202, "{e}: {}", a.body);
        let mail = env.smtp.mail_to("ann@example.org").await;
        assert!(mail.subject.contains("Confirm"), "{e}: {}", mail.subject);
        assert_eq!(mail.from, "noreply@zipiq.test");
        let first_link = mail
            .link(&env.url("/account/verify#token="))
            .expect("verification link");
        let page = env.http.get(&first_link).send().await.expect("GET link");
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/html"))
        );

        // Logging in before verifying is refused, and mails a fresh link that replaces the first.
        let a = env.try_login("ann@example.org", PASSWORD).await;
        assert_eq!(a.status, 403, "{e}: {}", a.body);
        let second = env.smtp.mail_to("ann@example.org").await;
        let second_link = second
            .link(&env.url("/account/verify#token="))
            .expect("second link");
        let a = env.verify(&link_token(&first_link)).await;
        assert_eq!(a.status, 404, "{e}: a replaced link is dead: {}", a.body);
        let a = env.verify(&link_token(&second_link)).await;
        assert_eq!(a.status, 204, "{e}: {}", a.body);
        let a = env.verify(&link_token(&second_link)).await;
        assert_eq!(a.status, 404, "{e}: single use");

        // Login, /me, then two rotations.
        let p1 = env.login("ann@example.org", PASSWORD).await;
        assert_eq!(p1.header("cache-control"), Some("no-store"));
        let me = env.get("/api/v1/me", Some(&p1.str("access_token"))).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.body["email"], "ann@example.org");
        assert_eq!(me.body["role"], "streamer");
        assert_eq!(me.body["email_verified"], true);
        let refresh = |t: String| json!({ "refresh_token": t });
        let p2 = env
            .post(
                "/api/v1/auth/refresh",
                refresh(p1.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(p2.status, 200, "{e}: {}", p2.body);
        assert_ne!(p2.str("refresh_token"), p1.str("refresh_token"));
        let p3 = env
            .post(
                "/api/v1/auth/refresh",
                refresh(p2.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(p3.status, 200);

        // Reuse of the first refresh token revokes the whole family, access tokens included.
        let reuse = env
            .post(
                "/api/v1/auth/refresh",
                refresh(p1.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(reuse.status, 401, "{e}: {}", reuse.body);
        let after = env
            .post(
                "/api/v1/auth/refresh",
                refresh(p3.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(
            after.status, 401,
            "{e}: the newest token of the family is dead too"
        );
        let me = env.get("/api/v1/me", Some(&p3.str("access_token"))).await;
        assert_eq!(me.status, 401, "{e}: and so is its access token");
        assert_eq!(
            me.header("www-authenticate"),
            Some("Bearer"),
            "{e}: 401 says how to authenticate"
        );
        let reuses = env.audit("refresh_token.reuse").await;
        assert_eq!(reuses.len(), 1, "{e}: reuse is audit-logged");
        assert_eq!(reuses[0].ip.as_deref(), Some("127.0.0.1"));

        // Signing up again with the address answers the same and mails its owner instead.
        let a = env
            .post(
                "/api/v1/auth/signup",
                json!({"email": "ann@example.org", "password": "another password"}),
                None,
            )
            .await;
        assert_eq!(a.status, 202);
        let mail = env.smtp.mail_to("ann@example.org").await;
        assert!(
            mail.body.contains("already has an account"),
            "{}",
            mail.body
        );

        // Reset by mail ends every session.
        let session_a = env.login("ann@example.org", PASSWORD).await;
        let a = env
            .post(
                "/api/v1/auth/password-reset",
                json!({"email": "ann@example.org"}),
                None,
            )
            .await;
        assert_eq!(a.status, 202);
        let unknown = env
            .post(
                "/api/v1/auth/password-reset",
                json!({"email": "nobody@example.org"}),
                None,
            )
            .await;
        assert_eq!(unknown.status, 202, "{e}: no account enumeration");
        assert_eq!(unknown.body, a.body, "{e}: the same answer either way");
        let mail = env.smtp.mail_to("ann@example.org").await;
        let reset_link = mail
            .link(&env.url("/account/reset#token="))
            .expect("reset link");
        assert!(
            env.smtp
                .quiet_for(std::time::Duration::from_millis(500))
                .await,
            "{e}: no mail for an unknown address"
        );
        let page = env.http.get(&reset_link).send().await.expect("GET link");
        assert_eq!(page.status(), 200);
        let new_password = "a brand new password";
        let confirm = json!({"token": link_token(&reset_link), "password": new_password});
        let a = env
            .post("/api/v1/auth/password-reset/confirm", confirm.clone(), None)
            .await;
        assert_eq!(a.status, 204, "{e}: {}", a.body);
        let a = env
            .post("/api/v1/auth/password-reset/confirm", confirm, None)
            .await;
        assert_eq!(a.status, 404, "{e}: the reset link works once");
        let a = env
            .post(
                "/api/v1/auth/refresh",
                refresh(session_a.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(a.status, 401, "{e}: sessions end at a reset");
        let old = env.try_login("ann@example.org", PASSWORD).await;
        assert_eq!(old.status, 401);
        let session_b = env.login("ann@example.org", new_password).await;
        let session_c = env.login("ann@example.org", new_password).await;

        // A password change checks the current password and revokes every refresh token.
        let wrong = env
            .post(
                "/api/v1/me/password",
                json!({"current_password": "not it at all", "new_password": "the newest password"}),
                Some(&session_b.str("access_token")),
            )
            .await;
        assert_eq!(wrong.status, 403);
        assert_eq!(wrong.body["field"], "current_password");
        let short = env
            .post(
                "/api/v1/me/password",
                json!({"current_password": new_password, "new_password": "short"}),
                Some(&session_b.str("access_token")),
            )
            .await;
        assert_eq!(short.status, 422);
        assert_eq!(short.body["field"], "new_password");
        let changed = env
            .post(
                "/api/v1/me/password",
                json!({"current_password": new_password, "new_password": "the newest password"}),
                Some(&session_b.str("access_token")),
            )
            .await;
        assert_eq!(changed.status, 200, "{e}: {}", changed.body);
        for old in [&session_b, &session_c] {
            let a = env
                .post(
                    "/api/v1/auth/refresh",
                    refresh(old.str("refresh_token")),
                    None,
                )
                .await;
            assert_eq!(a.status, 401, "{e}: every refresh token is revoked");
        }
        let me = env
            .get("/api/v1/me", Some(&changed.str("access_token")))
            .await;
        assert_eq!(me.status, 200, "{e}: the answer's pair works");

        // Logout ends the session at once.
        let a = env
            .call(
                Method::POST,
                "/api/v1/auth/logout",
                Some(&changed.str("access_token")),
            )
            .await;
        assert_eq!(a.status, 204);
        let me = env
            .get("/api/v1/me", Some(&changed.str("access_token")))
            .await;
        assert_eq!(me.status, 401);
        let a = env
            .post(
                "/api/v1/auth/refresh",
                refresh(changed.str("refresh_token")),
                None,
            )
            .await;
        assert_eq!(a.status, 401);
        env.login("ann@example.org", "the newest password").await;

        for action in [
            "user.signup",
            "user.email_verified",
            "login",
            "password.reset_requested",
            "password.reset",
            "password.changed",
            "logout",
        ] {
            assert!(
                !env.audit(action).await.is_empty(),
                "{e}: {action} is audit-logged"
            );
        }
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_brute_force_answers_429_with_retry_after() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        env.verified_login("bob@example.org", PASSWORD).await;
        // The default limit per account is 10 attempts per 5 minutes; the one above was the first.
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let a = env.try_login("bob@example.org", "guess guess guess").await;
            statuses.push(a.status);
            if a.status == 429 {
                let retry: u64 = a
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("Retry-After in seconds");
                assert!((1..=300).contains(&retry), "{retry}");
                assert_eq!(a.header("content-type"), Some("application/problem+json"));
            }
        }
        assert_eq!(&statuses[..9], &[401; 9], "{engine}: {statuses:?}");
        assert!(
            statuses[9..].iter().all(|s| *s == 429),
            "{engine}: {statuses:?}"
        );
        // The right password does not get through the limit either.
        let a = env.try_login("bob@example.org", PASSWORD).await;
        assert_eq!(a.status, 429);
        // Spreading guesses over many emails meets the per-address limit (30 per 5 minutes).
        let mut limited_at = None;
        for i in 0..40 {
            let a = env
                .try_login(&format!("u{i}@example.org"), "guess guess guess")
                .await;
            if a.status == 429 {
                limited_at = Some(i);
                break;
            }
            assert_eq!(a.status, 401);
        }
        let limited_at = limited_at.expect("the per-address limit answers 429");
        assert!(limited_at <= 30, "{limited_at}");
        let refused = env.audit("login").await;
        assert!(
            refused
                .iter()
                .any(|r| r.details["reason"] == "rate limited"),
            "{engine}: refusals are audit-logged"
        );
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_do_not_reveal_whether_an_account_exists() {
    let mut env = Env::start("sqlite", "").await;
    env.verified_login("cid@example.org", PASSWORD).await;
    let known = env.try_login("cid@example.org", "wrong wrong wrong").await;
    let unknown = env
        .try_login("nobody@example.org", "wrong wrong wrong")
        .await;
    assert_eq!(known.status, 401);
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.body, unknown.body);
    let known = env
        .post(
            "/api/v1/auth/signup",
            json!({"email": "cid@example.org", "password": PASSWORD}),
            None,
        )
        .await;
    let fresh = env
        .post(
            "/api/v1/auth/signup",
            json!({"email": "dan@example.org", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(known.status, fresh.status);
    assert_eq!(known.body, fresh.body);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_is_validated_and_named() {
    let env = Env::start("sqlite", "").await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "a@example.org", "password": "short"}),
            "password",
        ),
        (json!({"email": "a@example.org"}), "password"),
        (json!({"email": 5, "password": PASSWORD}), "email"),
        (
            json!({"email": "a@example.org", "password": PASSWORD, "admin": true}),
            "admin",
        ),
    ];
    for (body, field) in cases {
        let a = env.post("/api/v1/auth/signup", body.clone(), None).await;
        assert_eq!(a.status, 422, "{body}: {}", a.body);
        assert_eq!(a.body["field"], field, "{body}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    let raw = env
        .http
        .post(env.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status(), 400);
    let raw = env
        .http
        .post(env.url("/api/v1/auth/login"))
        .body("email=a")
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status(), 415);
    let big = "x".repeat(70_000);
    let raw = env
        .http
        .post(env.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{big}\"}}"))
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status(), 413);
    env.stop().await;
}

/// Look-alike addresses: an address with an invisible or text-direction character, or mixing Latin with Cyrillic
/// or Greek letters, is refused with a reason (422, field `email`); compatibility forms (fullwidth letters) are the
/// plain address, so they cannot make a second account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_email_addresses_are_refused_or_folded_to_one_account() {
    let mut env = Env::start("sqlite", "").await;
    env.verified_login("ann@example.org", PASSWORD).await;
    for (email, why) in [
        ("a\u{200B}nn@example.org", "invisible"),
        ("ann\u{202E}@example.org", "text-direction"),
        ("\u{430}nn@example.org", "mixes scripts"),
        ("\u{3B1}nn@example.org", "mixes scripts"),
    ] {
        for path in ["/api/v1/auth/signup", "/api/v1/auth/login"] {
            let a = env
                .post(path, json!({"email": email, "password": PASSWORD}), None)
                .await;
            assert_eq!(a.status, 422, "{path} {email:?}: {}", a.body);
            assert_eq!(a.body["field"], "email", "{email:?}");
            assert!(
                a.body["detail"].as_str().is_some_and(|d| d.contains(why)),
                "{email:?}: {}",
                a.body
            );
        }
    }
    // The fullwidth form of an address with an account is that account: sign-up mails its owner, login works.
    let a = env
        .post(
            "/api/v1/auth/signup",
            json!({"email": "\u{FF41}nn@example.org", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let mail = env.smtp.mail_to("ann@example.org").await;
    assert!(
        mail.body.contains("already has an account"),
        "{}",
        mail.body
    );
    env.login("\u{FF21}NN@example.org", PASSWORD).await;
    let users = env.server.server.db.list_users(0, 10).await.unwrap();
    assert_eq!(users.len(), 1, "one account");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_read_the_audit_log() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let config = env.server.server.config.clone();
        let printed = zipiq::cli::users::create_user(
            &env.server.server.db,
            &config,
            "root@example.org",
            true,
            false,
        )
        .await
        .expect("zipiq users create --admin");
        let password = printed
            .lines()
            .find_map(|l| l.split_once("): ").map(|(_, p)| p.to_owned()))
            .expect("generated password printed");
        let admin = env.login("root@example.org", &password).await;
        let admin_token = admin.str("access_token");
        let streamer = env.verified_login("eve@example.org", PASSWORD).await;
        let streamer_token = streamer.str("access_token");

        let a = env.get("/api/v1/admin/users", Some(&streamer_token)).await;
        assert_eq!(a.status, 403, "{engine}");
        let a = env.get("/api/v1/admin/audit", None).await;
        assert_eq!(a.status, 401, "{engine}");
        let users = env.get("/api/v1/admin/users", Some(&admin_token)).await;
        assert_eq!(users.status, 200);
        let eve = users.body["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["email"] == "eve@example.org"))
            .expect("eve listed")["id"]
            .as_i64()
            .expect("id");
        let me = env.get("/api/v1/me", Some(&admin_token)).await;
        let root = me.body["id"].as_i64().expect("id");

        let a = env
            .patch(
                &format!("/api/v1/admin/users/{root}"),
                json!({"disabled": true}),
                &admin_token,
            )
            .await;
        assert_eq!(a.status, 409, "{engine}: no self-lockout");
        let a = env
            .patch(
                &format!("/api/v1/admin/users/{eve}"),
                json!({"disabled": true}),
                &admin_token,
            )
            .await;
        assert_eq!(a.status, 200, "{engine}: {}", a.body);
        assert_eq!(a.body["disabled"], true);
        let a = env.get("/api/v1/me", Some(&streamer_token)).await;
        assert_eq!(a.status, 401, "{engine}: a disabled account's sessions end");
        let a = env.try_login("eve@example.org", PASSWORD).await;
        assert_eq!(a.status, 403);

        let audit = env
            .get(
                "/api/v1/admin/audit?action=admin.user_disabled",
                Some(&admin_token),
            )
            .await;
        assert_eq!(audit.status, 200);
        let entries = audit.body["entries"].as_array().expect("entries");
        assert_eq!(entries.len(), 1, "{engine}: {}", audit.body);
        assert_eq!(entries[0]["actor"], "root@example.org");
        assert_eq!(entries[0]["ip"], "127.0.0.1");
        assert_eq!(entries[0]["target"], format!("user:{eve}"));
        let a = env
            .get("/api/v1/admin/audit?limit=0", Some(&admin_token))
            .await;
        assert_eq!(a.status, 422);
        assert_eq!(a.body["field"], "limit");
        let all = env
            .get("/api/v1/streams?all=true", Some(&admin_token))
            .await;
        assert!(
            all.body["streams"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "live")),
            "{engine}: admins see every stream"
        );
        let text = zipiq::cli::audit::audit(&env.server.server.db, 20, None, None, false)
            .await
            .expect("zipiq audit");
        assert!(text.contains("admin.user_disabled"), "{text}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_jwt_keys_keep_earlier_tokens_valid() {
    for engine in ENGINES {
        let mut env = Env::start(engine, "").await;
        let before = env.verified_login("fay@example.org", PASSWORD).await;
        let kid = |token: &str| {
            jsonwebtoken::decode_header(token)
                .expect("header")
                .kid
                .expect("kid")
        };
        let old_kid = kid(&before.str("access_token"));
        let server = &env.server.server;
        let printed = zipiq::cli::secrets::rotate_jwt(&server.db, &server.config, None)
            .await
            .expect("rotate-jwt");
        assert!(printed.contains("new signing key"), "{printed}");
        server.auth.reload_jwt_keys().expect("reload keys");
        let after = env.login("fay@example.org", PASSWORD).await;
        assert_ne!(kid(&after.str("access_token")), old_kid);
        for token in [before.str("access_token"), after.str("access_token")] {
            assert_eq!(
                env.get("/api/v1/me", Some(&token)).await.status,
                200,
                "{engine}"
            );
        }
        assert_eq!(env.audit("jwt_key.rotated").await.len(), 1);
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_answers_carry_browser_safety_headers_and_no_cookies() {
    let env = Env::start("sqlite", "").await;
    for path in [
        "/",
        "/login",
        "/signup",
        "/account",
        "/account/verify",
        "/account/reset",
        "/watch/live",
        "/publish/live",
    ] {
        let a = env.get(path, None).await;
        assert_eq!(a.status, 200, "{path}");
        let csp = a.header("content-security-policy").expect("CSP");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        assert!(a.header("set-cookie").is_none());
    }
    for path in ["/api/v1/live", "/api/v1/openapi.json", "/api/v1/me"] {
        let a = env.get(path, None).await;
        let csp = a.header("content-security-policy").expect("CSP");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert!(a.header("set-cookie").is_none());
    }
    let doc = env.get("/api/v1/openapi.json", None).await;
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert!(doc.body["paths"]["/api/v1/auth/login"]["post"].is_object());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_requests_meet_their_rate_limits() {
    let env = Env::start(
        "sqlite",
        "[rate_limits]\nwhip_per_ip = { requests = 3, per_seconds = 60 }\n\
         whep_per_ip = { requests = 2, per_seconds = 60 }\n",
    )
    .await;
    let send = |method: Method, path: &str| {
        env.http
            .request(method, env.url(path))
            .header("content-type", "text/plain")
            .body("not sdp")
            .send()
    };
    for _ in 0..3 {
        let r = send(Method::POST, "/whip/live").await.expect("post");
        assert_eq!(r.status(), 415);
    }
    let r = send(Method::POST, "/whip/live").await.expect("post");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let r = send(Method::PATCH, "/whip/live/0123").await.expect("patch");
    assert_eq!(r.status(), 429, "PATCH shares the WHIP limit");
    let r = send(Method::DELETE, "/whip/live/0123")
        .await
        .expect("delete");
    assert_eq!(r.status(), 429, "DELETE too");
    for _ in 0..2 {
        let r = send(Method::POST, "/whep/live").await.expect("post");
        assert_eq!(r.status(), 415, "WHEP has its own budget");
    }
    let r = send(Method::POST, "/whep/live").await.expect("post");
    assert_eq!(r.status(), 429);
    env.stop().await;
}
