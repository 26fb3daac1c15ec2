//! Account mail (verification and password-reset links) over SMTP with lettre (tokio, rustls with ring). With no
//! `smtp.host` configured the mail is written to the log instead, so a one-person server needs no mail server.
//!
//! Mail goes out on its own task: an answer never waits for the mail server (so its timing says nothing about
//! whether an account exists), and a failing mail server never fails a request; failures are logged and counted.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::secrets::{self, SecretError};

/// Why mail could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp: {0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot build the mail: {0}")]
    Build(String),
    #[error("the mail server refused or failed: {0}")]
    Send(String),
}

/// One plain-text mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// No mail server: mail is logged.
    Log,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp { from, .. } => write!(f, "Mailer::Smtp(from {from})"),
            Mailer::Log => write!(f, "Mailer::Log"),
        }
    }
}

impl Mailer {
    /// Builds the mailer from `[smtp]`; the password comes from the systemd credential `smtp-password` or
    /// `smtp.password_file`.
    pub fn new(config: &SmtpConfig) -> Result<Mailer, MailError> {
        if config.host.trim().is_empty() {
            return Ok(Mailer::Log);
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| MailError::Config(format!("smtp.from {:?}: {e}", config.from)))?;
        let host = config.host.trim();
        let mut builder = match config.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| MailError::Config(format!("smtp.host {host:?}: {e}")))?
        .port(config.port)
        .timeout(Some(Duration::from_millis(config.timeout_ms.max(1))));
        if !config.username.is_empty() {
            let password = match secrets::locate("smtp-password", &config.password_file) {
                Some(source) => secrets::read(source.path())?,
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(config.username.clone(), password));
        }
        Ok(Mailer::Smtp {
            transport: builder.build(),
            from,
        })
    }

    /// Whether mail really leaves (false: it is logged).
    pub fn sends(&self) -> bool {
        matches!(self, Mailer::Smtp { .. })
    }

    /// Sends `mail` and waits for the mail server's answer.
    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        match self {
            Mailer::Log => {
                tracing::warn!(
                    to = %mail.to,
                    subject = %mail.subject,
                    body = %mail.body,
                    "no mail server configured (smtp.host is empty): this mail was not sent, here it is"
                );
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = mail
                    .to
                    .parse()
                    .map_err(|e| MailError::Build(format!("recipient: {e}")))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body.clone())
                    .map_err(|e| MailError::Build(e.to_string()))?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| MailError::Send(e.to_string()))
            }
        }
    }

    /// Sends `mail` on its own task; the outcome is logged and counted (`zipiq_mail_total{outcome}`).
    pub fn send_in_background(&self, mail: Mail) {
        let mailer = self.clone();
        tokio::spawn(async move {
            match mailer.send(&mail).await {
                Ok(()) => {
                    metrics::counter!("zipiq_mail_total", "outcome" => "sent").increment(1);
                    if mailer.sends() {
                        tracing::info!(subject = %mail.subject, "mail sent");
                    }
                }
                Err(e) => {
                    metrics::counter!("zipiq_mail_total", "outcome" => "failed").increment(1);
                    tracing::error!(error = %e, subject = %mail.subject, "mail not sent");
                }
            }
        });
    }
}

/// The verification mail.
pub(crate) fn verification_mail(to: &str, link: &str, valid_for_s: u64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your zipIQ account".into(),
        body: format!(
            "Someone (hopefully you) signed up to zipIQ with this address.\n\n\
             To confirm it, open this link within {}:\n\n{link}\n\n\
             If it was not you, ignore this mail: without the link the account stays unconfirmed.\n",
            human_duration(valid_for_s)
        ),
    }
}

/// The mail sent when someone signs up with an address that already has an account.
pub(crate) fn already_registered_mail(to: &str, login_link: &str, reset_link: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Your zipIQ account".into(),
        body: format!(
            "Someone (hopefully you) tried to sign up to zipIQ with this address, which already has an account.\n\n\
             Log in at {login_link}\nor, if you forgot your password, ask for a new one at {reset_link}\n\n\
             If it was not you, ignore this mail.\n"
        ),
    }
}

/// The password-reset mail.
pub(crate) fn reset_mail(to: &str, link: &str, valid_for_s: u64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Reset your zipIQ password".into(),
        body: format!(
            "Someone (hopefully you) asked to reset the password of the zipIQ account of this address.\n\n\
             To choose a new password, open this link within {} (it works once):\n\n{link}\n\n\
             If it was not you, ignore this mail: your password stays as it is.\n",
            human_duration(valid_for_s)
        ),
    }
}

fn human_duration(s: u64) -> String {
    match s {
        s if s % 86400 == 0 && s >= 86400 => plural(s / 86400, "day"),
        s if s % 3600 == 0 && s >= 3600 => plural(s / 3600, "hour"),
        s if s % 60 == 0 && s >= 60 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mails_carry_the_link_and_its_lifetime() {
        let m = verification_mail(
            "a@example.org",
            "http://x/account/verify#token=zqv_1",
            86400,
        );
        assert!(m.body.contains("http://x/account/verify#token=zqv_1\n"));
        assert!(m.body.contains("within 1 day"));
        let m = reset_mail("a@example.org", "L", 3600);
        assert!(m.body.contains("within 1 hour"));
        assert_eq!(human_duration(90), "90 seconds");
        assert_eq!(human_duration(7200), "2 hours");
    }

    #[test]
    fn no_host_means_mail_is_logged() {
        let c = crate::config::Config::defaults().unwrap().smtp;
        let m = Mailer::new(&c).unwrap();
        assert!(!m.sends());
    }
}
