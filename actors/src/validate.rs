//! Input rules shared by the REST handlers and the WebSocket session. Each
//! check returns `ChatError::Invalid` with a detail that starts with the field
//! name, so a client can point at the offending input.

use crate::error::{ChatError, ChatResult};

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
/// Longest accepted password: argon2 hashes whatever it gets, so bound the work.
pub const PASSWORD_MAX: usize = 1024;
pub const EMAIL_MAX: usize = 254;
/// `message_type`, `content_type`, `device_type`: short labels.
pub const LABEL_MAX: usize = 64;
pub const GROUP_NAME_MAX: usize = 100;
pub const DESCRIPTION_MAX: usize = 1000;
pub const DEVICE_ID_MAX: usize = 128;
pub const DEVICE_NAME_MAX: usize = 100;
/// `client_id` on WebSocket sends: an opaque idempotency key chosen by the client.
pub const CLIENT_ID_MAX: usize = 64;
/// Longest search query (`q`), in characters after trimming.
pub const SEARCH_QUERY_MAX: usize = 200;

fn invalid(field: &str, rule: &str) -> ChatError {
    ChatError::Invalid(format!("{field}: {rule}"))
}

pub fn username(value: &str) -> ChatResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if (USERNAME_MIN..=USERNAME_MAX).contains(&value.len()) && value.chars().all(allowed) {
        Ok(())
    } else {
        Err(invalid(
            "username",
            "must be 3-32 characters of letters, digits, '_', '.' or '-'",
        ))
    }
}

pub fn email(value: &str) -> ChatResult<()> {
    let well_formed = value.len() <= EMAIL_MAX
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if well_formed {
        Ok(())
    } else {
        Err(invalid("email", "must look like local@domain.tld"))
    }
}

pub fn password(value: &str) -> ChatResult<()> {
    let length = value.chars().count();
    if length < PASSWORD_MIN {
        Err(invalid("password", "must be at least 8 characters"))
    } else if length > PASSWORD_MAX {
        Err(invalid("password", "must be at most 1024 characters"))
    } else {
        Ok(())
    }
}

/// Stored free text may hold any character but U+0000: Postgres cannot keep
/// it in a text column, and both backends take the same input.
fn without_nul(field: &str, value: &str) -> ChatResult<()> {
    if value.contains('\0') {
        Err(invalid(
            field,
            "must not contain the NUL character (U+0000)",
        ))
    } else {
        Ok(())
    }
}

/// Message text: 1 to `max_chars` characters (characters, not bytes).
pub fn content(value: &str, max_chars: usize) -> ChatResult<()> {
    if value.is_empty() {
        return Err(invalid("content", "must not be empty"));
    }
    without_nul("content", value)?;
    // Counting stops early so a huge body costs no more than the limit.
    if value.chars().nth(max_chars).is_some() {
        return Err(invalid(
            "content",
            &format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// Most characters a reaction may have: one emoji, even a composed one
/// (a family, a flag with a skin tone), fits.
pub const MAX_EMOJI_CHARS: usize = 16;

/// A reaction: a short string with no spaces or control characters (an
/// emoji as clients send it; which ones is left to clients).
pub fn emoji(value: &str) -> ChatResult<()> {
    if value.is_empty() {
        return Err(invalid("emoji", "must not be empty"));
    }
    if value.chars().nth(MAX_EMOJI_CHARS).is_some() {
        return Err(invalid(
            "emoji",
            &format!("must be at most {MAX_EMOJI_CHARS} characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "emoji",
            "must not hold spaces or control characters",
        ));
    }
    Ok(())
}

/// A short, non-empty, single-line label such as `message_type`.
pub fn label(field: &str, value: &str) -> ChatResult<()> {
    if value.is_empty() || value.chars().count() > LABEL_MAX || value.chars().any(char::is_control)
    {
        Err(invalid(
            field,
            "must be 1-64 characters without control characters",
        ))
    } else {
        Ok(())
    }
}

/// Free text of bounded length that may be empty (descriptions, device names).
pub fn text(field: &str, value: &str, max_chars: usize) -> ChatResult<()> {
    without_nul(field, value)?;
    if value.chars().nth(max_chars).is_some() {
        Err(invalid(
            field,
            &format!("must be at most {max_chars} characters"),
        ))
    } else {
        Ok(())
    }
}

pub fn group_name(value: &str) -> ChatResult<()> {
    without_nul("name", value)?;
    if value.trim().is_empty() || value.chars().nth(GROUP_NAME_MAX).is_some() {
        Err(invalid("name", "must be 1-100 characters and not blank"))
    } else {
        Ok(())
    }
}

pub fn device_id(value: &str) -> ChatResult<()> {
    if value.is_empty()
        || value.chars().count() > DEVICE_ID_MAX
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(invalid(
            "device_id",
            "must be 1-128 characters without spaces or control characters",
        ))
    } else {
        Ok(())
    }
}

pub fn client_id(value: &str) -> ChatResult<()> {
    without_nul("client_id", value)?;
    if value.is_empty() || value.len() > CLIENT_ID_MAX {
        Err(invalid("client_id", "must be 1-64 bytes"))
    } else {
        Ok(())
    }
}

/// Whether a name or id read from a request could be stored at all: one
/// holding NUL (U+0000) cannot (Postgres refuses it in text), so it names
/// nothing and is not looked up.
pub fn storable(value: &str) -> bool {
    !value.contains('\0')
}

const UUID_LEN: usize = 36;

fn is_uuid(candidate: &[u8]) -> bool {
    candidate.len() == UUID_LEN
        && candidate.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether `value` has the form of the file ids the server hands out (a
/// UUID): anything else names no file, and never reaches the database or
/// the files directory.
pub fn is_file_id(value: &str) -> bool {
    is_uuid(value.as_bytes())
}

/// The file ids (UUIDs, alone or in a `/files/{id}` url) a message's text
/// mentions; such a message lets everyone who sees it download the file.
pub fn mentioned_file_ids(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + UUID_LEN <= bytes.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let ends_word = bytes
            .get(i + UUID_LEN)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        if starts_word && ends_word && is_uuid(&bytes[i..i + UUID_LEN]) {
            found.push(&text[i..i + UUID_LEN]);
            i += UUID_LEN;
        } else {
            i += 1;
        }
    }
    found
}

/// The words of a search query: its runs of letters and digits, which is
/// how both backends' indexes cut message text into words. Everything else
/// only separates words, so no input is ever read as the search engine's
/// own syntax (quotes, `*`, `OR`, `NEAR(`, `-`).
pub fn search_words(q: &str) -> ChatResult<Vec<String>> {
    let q = q.trim();
    if q.is_empty() {
        return Err(invalid("q", "must not be empty"));
    }
    if q.chars().count() > SEARCH_QUERY_MAX {
        return Err(invalid("q", "must be at most 200 characters"));
    }
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return Err(invalid("q", "must contain a word (letters or digits)"));
    }
    Ok(words)
}

/// Case-folded form under which usernames and emails are unique and looked up.
pub fn lookup_key(value: &str) -> String {
    value.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        assert!(username("bob").is_ok());
        assert!(username("a.b-c_9").is_ok());
        assert!(username(&"x".repeat(32)).is_ok());
        assert!(username("ab").is_err());
        assert!(username(&"x".repeat(33)).is_err());
        assert!(username("bob smith").is_err());
        assert!(username("böb").is_err());
    }

    #[test]
    fn emails_need_local_part_and_dotted_domain() {
        assert!(email("a@b.co").is_ok());
        assert!(email("a@b").is_err());
        assert!(email("@b.co").is_err());
        assert!(email("a@@b.co").is_err());
        assert!(email("a b@c.de").is_err());
        assert!(email("a@.co").is_err());
    }

    #[test]
    fn content_counts_characters_not_bytes() {
        assert!(content(&"é".repeat(8192), 8192).is_ok());
        assert!(content(&"é".repeat(8193), 8192).is_err());
        assert!(content("", 8192).is_err());
    }

    #[test]
    fn file_mentions_are_found_in_urls_and_json() {
        let id = "0f8e6a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(mentioned_file_ids(&format!("see /files/{id}")), vec![id]);
        assert_eq!(
            mentioned_file_ids(&format!(r#"{{"url":"/files/{id}","filename":"a.png"}}"#)),
            vec![id]
        );
        assert!(mentioned_file_ids("no files here").is_empty());
        assert!(mentioned_file_ids(&format!("x{id}")).is_empty());
    }

    #[test]
    fn details_name_the_field() {
        let err = label("message_type", "").unwrap_err();
        assert!(err.to_string().starts_with("message_type:"));
        let err = device_id("has space").unwrap_err();
        assert!(err.to_string().starts_with("device_id:"));
    }

    #[test]
    fn search_words_are_the_runs_of_letters_and_digits() {
        let words = |q: &str| search_words(q).unwrap();
        assert_eq!(words("  hello   World "), ["hello", "World"]);
        assert_eq!(
            words(r#""quoted" NEAR(a b) -x y* OR z"#),
            ["quoted", "NEAR", "a", "b", "x", "y", "OR", "z"]
        );
        assert_eq!(
            words("bob@example.com 3.14"),
            ["bob", "example", "com", "3", "14"]
        );
        assert_eq!(words("你好，世界 café"), ["你好", "世界", "café"]);
        for (q, rule) in [
            ("", "empty"),
            (" \t\n", "empty"),
            ("\"*\" - ()", "word"),
            (&"x".repeat(201), "200"),
        ] {
            let err = search_words(q).unwrap_err().to_string();
            assert!(err.starts_with("q:") && err.contains(rule), "{q:?}: {err}");
        }
        let longest = format!("  {}  ", "x".repeat(200));
        assert_eq!(
            words(&longest).len(),
            1,
            "200 characters after trimming are allowed"
        );
    }
}
