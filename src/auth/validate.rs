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

/// Normalises and checks an email address: trimmed, lowercased (addresses are compared without case, as every
/// large provider does), one `@`, a local part of 1-64 printable characters, a domain of dot-separated labels.
pub fn email(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let address = raw.trim().to_lowercase();
    let invalid = |why: &str| FieldError::new(field, format!("not a valid email address: {why}"));
    if address.is_empty() {
        return Err(FieldError::new(field, "an email address is required"));
    }
    if address.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid("longer than 254 characters"));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(invalid("no @"));
    };
    if local.is_empty() || local.len() > 64 {
        return Err(invalid("the part before @ must have 1-64 characters"));
    }
    if local.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '@' | '<' | '>' | '"' | ',' | ';' | '\\')
    }) {
        return Err(invalid(
            "the part before @ has a character mail addresses cannot have",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(invalid("misplaced dot before @"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("the domain needs a dot"));
    }
    for label in labels {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
        {
            return Err(invalid("the domain is not a host name"));
        }
    }
    Ok(address)
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
            email("email", "  Ann@Example.ORG ").unwrap(),
            "ann@example.org"
        );
        assert_eq!(
            email("email", "a.b+tag@sub.example.co").unwrap(),
            "a.b+tag@sub.example.co"
        );
        assert_eq!(
            email("email", "ü@bücher.example").unwrap(),
            "ü@bücher.example"
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
            "<ann@example.org>",
        ] {
            let e = email("email", bad);
            if bad == "ann@example.org\n" {
                // Surrounding whitespace is trimmed.
                assert!(e.is_ok());
                continue;
            }
            let e = e.unwrap_err();
            assert_eq!(e.field, "email", "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(65));
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
