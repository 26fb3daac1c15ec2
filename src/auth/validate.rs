//! Validation of what people type: email addresses, passwords, stream names, token lifetimes. Each failure names
//! the field it is about, so the API can answer 422 with that name and the pages can point at the input.

use super::passwords::MAX_PASSWORD_CHARS;

/// A field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// The email rule as a regular expression, for the OpenAPI document; [`email`] implements exactly this.
pub const EMAIL_PATTERN: &str = r#"^[^@\s<>",;\\.\x00-\x1f\x7f-\x9f]+(\.[^@\s<>",;\\.\x00-\x1f\x7f-\x9f]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"#;

fn local_char(c: char) -> bool {
    !(c.is_whitespace()
        || c.is_control()
        || matches!(c, '@' | '<' | '>' | '"' | ',' | ';' | '\\' | '.'))
}

fn domain_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Checks an email address and returns it lowercased (addresses are compared without case, as every large
/// provider does): dot-separated words of printable characters before one `@`, then a host name of at least two
/// ASCII labels (internationalised domains in their `xn--` form). Nothing is trimmed: what is checked is what is
/// stored.
pub fn email(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let invalid = |why: &str| FieldError::new(field, format!("not a valid email address: {why}"));
    if raw.is_empty() {
        return Err(FieldError::new(field, "an email address is required"));
    }
    if raw.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid("longer than 254 characters"));
    }
    let Some((local, domain)) = raw.rsplit_once('@') else {
        return Err(invalid("no @"));
    };
    if !local
        .split('.')
        .all(|w| !w.is_empty() && w.chars().all(local_char))
    {
        return Err(invalid(
            "the part before @ must be dot-separated words without spaces, @ < > \" , ; or \\",
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|l| domain_label(l)) {
        return Err(invalid(
            "the part after @ must be a host name such as example.org",
        ));
    }
    Ok(raw.to_lowercase())
}

/// Checks a new password's length (in characters) against the configured minimum and the fixed maximum.
pub fn new_password(
    field: &'static str,
    password: &str,
    min_chars: usize,
) -> Result<(), FieldError> {
    let n = password.chars().count();
    if n < min_chars {
        return Err(FieldError::new(
            field,
            format!("the password needs at least {min_chars} characters"),
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            format!("the password may have at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a password given to log in or to confirm (any non-empty text up to the maximum).
pub fn given_password(field: &'static str, password: &str) -> Result<(), FieldError> {
    if password.is_empty() {
        return Err(FieldError::new(field, "a password is required"));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            format!("the password may have at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a stream name (the slug in /whip/{stream} and /watch/{stream}).
pub fn stream_name(field: &'static str, name: &str) -> Result<(), FieldError> {
    if crate::db::streams::valid_name(name) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "use 1-{} characters a-z, 0-9, - and _, starting with a letter or digit",
                crate::db::streams::MAX_NAME_LEN
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            email("email", "Ann@Example.ORG").unwrap(),
            "ann@example.org"
        );
        assert_eq!(
            email("email", "a.b+tag@sub.example.co").unwrap(),
            "a.b+tag@sub.example.co"
        );
        assert_eq!(
            email("email", "ü@xn--bcher-kva.example").unwrap(),
            "ü@xn--bcher-kva.example"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.org",
            "ann@localhost",
            "ann@@example.org",
            "a b@example.org",
            "ann@exa mple.org",
            "ann@-x.org",
            "ann@x..org",
            ".ann@example.org",
            "a..b@example.org",
            "ann@example.org\n",
            " ann@example.org",
            "<ann@example.org>",
            "ann@bücher.example",
            "a\u{85}@x.org",
        ] {
            assert_eq!(email("email", bad).unwrap_err().field, "email", "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(email("email", &long).is_err());
    }

    #[test]
    fn password_lengths_are_counted_in_characters() {
        assert!(new_password("password", "ααααααααα", 10).is_err());
        assert!(new_password("password", "αααααααααα", 10).is_ok());
        assert!(new_password("password", &"x".repeat(1025), 10).is_err());
        assert_eq!(
            given_password("password", "").unwrap_err().field,
            "password"
        );
    }

    #[test]
    fn stream_names_name_the_field() {
        assert!(stream_name("name", "my-show").is_ok());
        assert_eq!(stream_name("name", "My Show").unwrap_err().field, "name");
    }
}
