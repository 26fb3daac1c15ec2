//! Validation of what people type: email addresses, passwords, stream names, token lifetimes. Each failure names
//! the field it is about, so the API can answer 422 with that name and the pages can point at the input.

use unicode_normalization::UnicodeNormalization;
use unicode_script::Script;
use unicode_security::mixed_script::AugmentedScriptSet;

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
pub(crate) const MAX_EMAIL_CHARS: usize = 254;

/// A character of a word before `@`, as a regular-expression class: anything but separators, spaces, controls and
/// the characters of [`invisible_or_bidi`] (those beyond U+FFFF are written as themselves: Python's `re`, which
/// schemathesis uses, and ECMAScript with the `u` flag read them as one character).
macro_rules! local_char_class {
    () => {
        concat!(
            r#"[^@\s<>",;\\.\x00-\x1f\x7f-\x9f\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"#,
            r#"\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f"#,
            r#"\ufeff\uffa0\ufff0-\ufffb"#,
            "\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0000}-\u{E0FFF}]"
        )
    };
}

/// The syntax of an email address as a regular expression, for the OpenAPI document; [`email`] checks exactly
/// this, then the rules no regular expression can state (the address's NFKC form, one script before `@`).
pub(crate) const EMAIL_PATTERN: &str = concat!(
    "^",
    local_char_class!(),
    r#"+(\."#,
    local_char_class!(),
    r#"+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"#
);

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

/// Whether `c` is invisible or changes the direction of text around it: format characters (zero-width space and
/// joiners, bidirectional embeddings, overrides and isolates, the byte order mark, ...) and the other default
/// ignorable code points (variation selectors, Hangul fillers, tags). Such characters make two addresses that
/// look the same differ, or one address look like another.
pub(crate) fn invisible_or_bidi(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Whether `text` mixes scripts in a way that makes look-alikes: UTS #39's "highly restrictive" level, the one
/// it recommends for identifiers, allows one script (with digits and punctuation, common to all), or Latin with
/// Han and Japanese kana, with Han and Bopomofo, or with Han and Hangul. Latin with Cyrillic or Greek ("pаypal"
/// with a Cyrillic "а") is refused.
fn mixes_scripts(text: &str) -> bool {
    let mut all = AugmentedScriptSet::default();
    let mut without_latin = AugmentedScriptSet::default();
    for c in text.chars() {
        let set = AugmentedScriptSet::for_char(c);
        all.intersect_with(set);
        if !set.base.contains_script(Script::Latin) {
            without_latin.intersect_with(set);
        }
    }
    all.is_empty() && !(without_latin.kore || without_latin.hanb || without_latin.jpan)
}

/// Checks an email address and returns its one stored form: NFKC-normalised and lowercased (addresses are
/// compared without case, as every large provider does; compatibility forms such as fullwidth letters or
/// ligatures are the same address as their plain letters). The address as given must follow [`EMAIL_PATTERN`]:
/// dot-separated words of printable characters before one `@`, without invisible or text-direction characters,
/// then a host name of at least two ASCII labels (internationalised domains in their `xn--` form). Its stored form
/// must too, and its part before `@` must not mix scripts ([`mixes_scripts`]), which no regular expression can
/// state. Nothing is trimmed or dropped: what is checked is what is stored.
pub(crate) fn email(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let invalid = |why: &str| FieldError::new(field, format!("not a valid email address: {why}"));
    if raw.is_empty() {
        return Err(FieldError::new(field, "an email address is required"));
    }
    if let Some(c) = raw.chars().find(|c| invisible_or_bidi(*c)) {
        return Err(invalid(&format!(
            "it contains the invisible or text-direction character U+{:04X}, which makes addresses look alike",
            c as u32
        )));
    }
    check_syntax(raw).map_err(invalid)?;
    // NFKC, then lowercase, then NFKC again (lowercasing can undo a normal form).
    let address: String = raw
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .collect();
    if check_syntax(&address).is_err() || address.chars().any(invisible_or_bidi) {
        return Err(invalid(
            "it contains characters that stand for spaces, dots, @ or other separators (such as fullwidth forms)",
        ));
    }
    if address
        .rsplit_once('@')
        .is_some_and(|(local, _)| mixes_scripts(local))
    {
        return Err(invalid(
            "the part before @ mixes scripts (such as Latin and Cyrillic letters), which makes addresses look alike",
        ));
    }
    Ok(address)
}

/// The rule of [`EMAIL_PATTERN`] (less the invisible characters); why `address` breaks it.
fn check_syntax(address: &str) -> Result<(), &'static str> {
    if address.chars().count() > MAX_EMAIL_CHARS {
        return Err("longer than 254 characters");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("no @");
    };
    if !local
        .split('.')
        .all(|w| !w.is_empty() && w.chars().all(local_char))
    {
        return Err(
            "the part before @ must be dot-separated words without spaces, @ < > \" , ; or \\",
        );
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|l| domain_label(l)) {
        return Err("the part after @ must be a host name such as example.org");
    }
    Ok(())
}

/// Checks a new password's length (in characters) against the configured minimum and the fixed maximum.
pub(crate) fn new_password(
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
pub(crate) fn given_password(field: &'static str, password: &str) -> Result<(), FieldError> {
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
pub(crate) fn stream_name(field: &'static str, name: &str) -> Result<(), FieldError> {
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
    fn look_alike_addresses_are_normalised_or_refused() {
        // Compatibility forms are the plain address: fullwidth letters, ligatures, the Kelvin sign.
        assert_eq!(
            email("email", "ＡＮＮ@example.org").unwrap(),
            "ann@example.org"
        );
        assert_eq!(
            email("email", "\u{FB01}n@example.org").unwrap(),
            "fin@example.org"
        );
        assert_eq!(
            email("email", "\u{212A}im@example.org").unwrap(),
            "kim@example.org"
        );
        // The host name is ASCII as given (the pattern says so); separators in disguise are refused.
        for (bad, why) in [
            ("ann@ｅｘａｍｐｌｅ.org", "host name"),
            ("a\u{FF20}b@example.org", "stand for"),
            ("a\u{FF0E}\u{FF0E}b@example.org", "stand for"),
            ("a\u{B4}b@example.org", "stand for"),
        ] {
            let e = email("email", bad).unwrap_err();
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
        assert_eq!(
            email("email", "a\u{2024}b@example.org").unwrap(),
            "a.b@example.org",
            "a one-dot leader is a dot"
        );
        // Composed and decomposed accents are one address.
        assert_eq!(
            email("email", "jose\u{301}@example.org").unwrap(),
            email("email", "jos\u{E9}@example.org").unwrap()
        );
        // One script, or Latin with Han and kana: allowed.
        for good in [
            "иван@example.org",
            "δοκιμή@example.org",
            "用户@example.org",
            "taro.たなか漢字@example.org",
            "ivan2024@example.org",
        ] {
            assert!(email("email", good).is_ok(), "{good:?}");
        }
        for (bad, why) in [
            ("a\u{200B}nn@example.org", "U+200B"),
            ("ann\u{200D}@example.org", "U+200D"),
            ("\u{202E}gro.elpmaxe@nna", "U+202E"),
            ("ann\u{2066}@example.org", "U+2066"),
            ("\u{FEFF}ann@example.org", "U+FEFF"),
            ("an\u{AD}n@example.org", "U+00AD"),
            ("ann\u{FE0F}@example.org", "U+FE0F"),
            ("ann@exam\u{200C}ple.org", "U+200C"),
            ("p\u{430}ypal@example.org", "mixes scripts"),
            ("\u{3BF}pen@example.org", "mixes scripts"),
            ("иванivan@example.org", "mixes scripts"),
        ] {
            let e = email("email", bad).unwrap_err();
            assert_eq!(e.field, "email", "{bad:?}");
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
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
