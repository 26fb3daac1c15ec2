//! What the account tests share: a server on SQLite or on a fresh PostgreSQL database, with an SMTP sink, and a
//! small JSON client.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestServer, start_server};
use crate::databases::{self, TestDb};
use crate::smtp_sink::SmtpSink;

/// The engines every database test runs on.
pub const ENGINES: [&str; 2] = ["sqlite", "postgres"];

/// A running server with its mail sink.
pub struct Env {
    pub engine: &'static str,
    pub server: TestServer,
    pub smtp: SmtpSink,
    pub http: reqwest::Client,
    pg: Option<TestDb>,
}

/// An answer: status, headers, JSON body (Null when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A string member of the body.
    pub fn str(&self, key: &str) -> String {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key:?} in {}", self.body))
            .to_owned()
    }
}

impl Env {
    /// Starts a server on `engine` ("sqlite" or "postgres") with `extra` TOML overrides and an SMTP sink.
    pub async fn start(engine: &'static str, extra: &str) -> Env {
        let smtp = SmtpSink::start().await;
        let (pg, database) = if engine == "postgres" {
            let t = databases::postgres().await;
            let url = t.url.clone();
            (Some(t), format!("[database]\nurl = \"{url}\"\n"))
        } else {
            (None, String::new())
        };
        let overrides = format!("{database}{}{extra}", smtp.config());
        let server = start_server(&overrides).await;
        Env {
            engine,
            server,
            smtp,
            http: reqwest::Client::new(),
            pg,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// POSTs `body` as JSON (with `token` as bearer).
    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Answer {
        let mut r = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    /// A request without a body.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> Answer {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(reqwest::Method::GET, path, token).await
    }

    /// PATCHes `body` as JSON.
    pub async fn patch(&self, path: &str, body: Value, token: &str) -> Answer {
        self.send(
            self.http
                .patch(self.url(path))
                .json(&body)
                .bearer_auth(token),
        )
        .await
    }

    /// Signs `email` up, follows the verification link of the mail, logs in; returns the token pair.
    pub async fn verified_login(&mut self, email: &str, password: &str) -> Answer {
        let a = self
            .post(
                "/api/v1/auth/signup",
                json!({"email": email, "password": password}),
                None,
            )
            .await;
        assert_eq!(a.status, 202, "{}: signup {}", self.engine, a.body);
        let mail = self.smtp.mail_to(email).await;
        let token = link_token(
            &mail
                .link(&self.url("/account/verify#token="))
                .expect("verify link"),
        );
        let v = self.verify(&token).await;
        assert_eq!(v.status, 204, "{}: verify {}", self.engine, v.body);
        self.login(email, password).await
    }

    /// Logs in and expects 200.
    pub async fn login(&self, email: &str, password: &str) -> Answer {
        let a = self.try_login(email, password).await;
        assert_eq!(a.status, 200, "{}: login {}", self.engine, a.body);
        a
    }

    /// POSTs a login, whatever it answers.
    pub async fn try_login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// POSTs a new stream `name` with `visibility` ("public" or "private") as the holder of `token`, whatever it
    /// answers.
    pub async fn create_stream(&self, token: &str, name: &str, visibility: &str) -> Answer {
        self.post(
            "/api/v1/streams",
            json!({"name": name, "visibility": visibility}),
            Some(token),
        )
        .await
    }

    /// POSTs an email-verification token, whatever it answers.
    pub async fn verify(&self, token: &str) -> Answer {
        self.post("/api/v1/auth/verify", json!({"token": token}), None)
            .await
    }

    /// Audit entries with `action`, newest first.
    pub async fn audit(&self, action: &str) -> Vec<zipiq::db::audit::AuditRow> {
        self.server
            .server
            .db
            .audit_log(&zipiq::db::audit::AuditQuery {
                action: Some(action.to_owned()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("audit log")
    }

    pub async fn stop(self) {
        self.server.stop().await;
        if let Some(pg) = self.pg {
            pg.drop_db().await;
        }
        // Give sessions' background tasks a moment to wind down between engines.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The token in a link's `#token=` fragment.
pub fn link_token(link: &str) -> String {
    link.split_once("#token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("no #token= in {link}"))
}
